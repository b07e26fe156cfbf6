// A container's smolvm state file, read as the shim reads it (parsed and checked, any version
// it reads migrated): tests look at what the runtime recorded through the product's own reader.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseState, type ContainerState } from '../../shim/src/state/store';
import type { PrivateContainerd } from './containerd';

export function stateFileOf(containerd: PrivateContainerd, id: string): string {
  return path.join(containerd.smolvmRoot, 'run', 'tasks', containerd.namespace, `${id}.json`);
}

export function stateOf(containerd: PrivateContainerd, id: string): ContainerState {
  const file = stateFileOf(containerd, id);
  return parseState(JSON.parse(fs.readFileSync(file, 'utf8')) as unknown, file);
}
