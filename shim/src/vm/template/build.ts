// Building one template: boot the generic guest with placeholder files behind its slots, wait
// for "agent ready" (handshake), hang up, save the stopped VM's state, publish it atomically.
// Runs under the key's build lock (one builder per key across processes); on any failure the
// VM is killed and the build directory removed, so nothing half-made is ever visible.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentClient } from '../../agent/client';
import type { Paths } from '../../config/paths';
import type { Logger } from '../../log';
import { removeQuietly } from '../../util/fsutil';
import type { Backend, GuestBoot, VmConfig, Vmm } from '../backend';
import type { VmShape } from '../shape';
import { hashFile } from '../../util/file-identity';
import { familyOf, TEMPLATE_FORMAT, TEMPLATE_SLOT_BYTES } from './key';
import { templateInputs } from './inputs';
import { recordBuildVm, STATE_FILE, TemplateStore, type TemplateManifest } from './store';
import { markVmDirOwner } from '../vmm-exec';

/** Time for the template guest to boot and answer the handshake. */
const BUILD_BOOT_TIMEOUT_MS = 120_000;
/** After hanging up, the agent notices and goes idle before the snapshot. */
const SETTLE_MS = 100;
/** What smolvm-init prints on the console when the host closes the agent channel. */
const AGENT_HUNG_UP = 'host disconnected';
const HANGUP_TIMEOUT_MS = 20_000;
/** In the build dir: the template VM's logs while it runs. */
const BUILD_VM_DATA_DIR = '.vm';

export type BuildOutcome =
  | { kind: 'built'; key: string; ms: number; stateBytes: number; removed: string[] }
  | { kind: 'exists'; key: string }
  | { kind: 'busy'; key: string };

export interface BuildRequest {
  backend: Backend;
  paths: Paths;
  shape: VmShape;
  guest: GuestBoot;
  /** The key the requester computed: the build refuses when the inputs changed meanwhile. */
  expectedKey?: string;
  log: Logger;
  /** Called when the template VM exists (the builder kills it if it is itself signalled). */
  onVmStarted?: (vm: Vmm) => void;
}

export async function buildTemplate(req: BuildRequest): Promise<BuildOutcome> {
  const store = new TemplateStore(req.paths.cacheDir);
  const { key, inputs } = await templateInputs(req.backend, req.shape, req.guest, store.memoDir);
  if (req.expectedKey && req.expectedKey !== key) {
    throw new Error(`template inputs changed since the build was requested (key ${req.expectedKey}, now ${key})`);
  }
  const lock = await store.tryLock(key);
  if (!lock) return { kind: 'busy', key };
  let buildDir = '';
  try {
    if (store.lookup(key).kind === 'found') return { kind: 'exists', key };
    const started = Date.now();
    buildDir = store.makeBuildDir(key);
    const statePath = path.join(buildDir, STATE_FILE);
    await bootAndSave(req, buildDir, statePath);
    const stateBytes = fs.statSync(statePath).size;
    // Files the backend wrote next to the state (kvm: memory.bin), checked by every lookup.
    const extraFiles: Record<string, number> = {};
    for (const name of fs.readdirSync(buildDir)) {
      if (name !== STATE_FILE && !name.startsWith('.') && name !== 'vmm') extraFiles[name] = fs.statSync(path.join(buildDir, name)).size;
    }
    const manifest: TemplateManifest = {
      format: TEMPLATE_FORMAT, key, family: familyOf(inputs), inputs,
      stateBytes, stateSha256: await hashFile(statePath), extraFiles,
      createdAt: new Date().toISOString(), buildMs: Date.now() - started,
    };
    store.publish(buildDir, manifest);
    buildDir = '';
    const removed = await store.collectGarbage(manifest);
    return { kind: 'built', key, ms: manifest.buildMs, stateBytes, removed };
  } catch (err) {
    store.markFailed(key, err instanceof Error ? err.message : String(err));
    throw err;
  } finally {
    if (buildDir) removeQuietly(buildDir);
    await lock.release();
  }
}

/**
 * Boots the template VM (its sockets in a short dir under the state dir; its logs in the build
 * dir, on disk: a dead builder's are swept with it), saves its state.
 */
async function bootAndSave(req: BuildRequest, buildDir: string, statePath: string): Promise<void> {
  // Unix socket paths are short (108 bytes): the VM's own dir lives under the state dir.
  const vmId = `tpl-${randomBytes(4).toString('hex')}`;
  const vmDir = path.join(req.paths.stateDir, 'templates', vmId);
  fs.mkdirSync(vmDir, { recursive: true, mode: 0o700 });
  markVmDirOwner(vmDir); // whose it is, should the builder die before its VMM runs (vmm-exec.ts)
  // A dot name: never part of the published template (see extraFiles), removed below.
  const dataDir = path.join(buildDir, BUILD_VM_DATA_DIR);
  fs.mkdirSync(dataDir, { mode: 0o700 });
  let vm: Vmm | null = null;
  let agent: AgentClient | null = null;
  try {
    const slots = req.shape.disks.map((slot, i) => {
      const placeholder = path.join(buildDir, `placeholder${i}.img`);
      fs.closeSync(fs.openSync(placeholder, 'w', 0o600));
      fs.truncateSync(placeholder, TEMPLATE_SLOT_BYTES);
      return { ...slot, path: placeholder };
    });
    // A pod VM's template on tcg: the hotplug controller with no disk on it.
    const config: VmConfig = { vmId, dir: vmDir, dataDir, shape: req.shape, guest: req.guest, slots };
    const bootVm = await req.backend.boot(config, req.log);
    vm = bootVm;
    // Should this builder die without its cleanup, the next garbage collection kills the VM.
    recordBuildVm(buildDir, bootVm);
    req.onVmStarted?.(bootVm);
    const exited = bootVm.exited.then((exit) => {
      throw new Error(`template VM exited during boot (code ${exit.code}, signal ${exit.signal}): ${bootVm.diagnostics()}`);
    });
    exited.catch(() => undefined);
    const channel = await Promise.race([bootVm.connectAgent(BUILD_BOOT_TIMEOUT_MS), exited]);
    agent = await Promise.race([AgentClient.connect(channel, { timeoutMs: BUILD_BOOT_TIMEOUT_MS }), exited]);
    // Hang up: every restored VM gets its own new connection. The snapshot must not hold the
    // old one (a restored guest would still think it live: kvm's vsock then drops the new
    // one), so it waits until the agent says it saw the host leave, then lets it settle.
    const hungUp = bootVm.consoleSays(AGENT_HUNG_UP, HANGUP_TIMEOUT_MS);
    agent.close();
    agent = null;
    if (!(await hungUp)) {
      throw new Error(`the template guest's agent did not notice the host hanging up within ${HANGUP_TIMEOUT_MS} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    await Promise.race([req.backend.saveState(bootVm, statePath), exited]);
  } catch (err) {
    const detail = vm?.diagnostics() ?? '';
    const msg = err instanceof Error ? err.message : String(err);
    throw new Error(detail && !msg.includes(detail) ? `${msg}\n${detail}` : msg);
  } finally {
    agent?.close();
    if (vm) await vm.kill();
    removeQuietly(vmDir);
    removeQuietly(dataDir);
    for (let i = 0; i < req.shape.disks.length; i++) removeQuietly(path.join(buildDir, `placeholder${i}.img`));
  }
}
