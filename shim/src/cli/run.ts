// `smolvm run`: one container in a microVM without containerd, through the same Container and
// VM code the shim uses. Its exit code is the container's.
import * as path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type { RootfsSource } from '../image';
import { loadConfig, type BackendChoice } from '../config/config';
import { smolvmPaths } from '../config/paths';
import { stderrLogger } from '../log';
import { loadBundleSpec, type OciSpec } from '../oci/spec';
import { createBackend } from '../vm/backends';
import { Container, containerSizing } from '../task/container';
import { VmBuilder } from '../vm/builder';
import { VmPlacer } from '../vm/placement';

export interface RunArgs {
  backend?: BackendChoice;
  rootfs?: string;
  bundle?: string;
  command: string[];
  debug: boolean;
}

export const RUN_USAGE = 'usage: smolvm run [--backend kvm|tcg|auto] (--rootfs DIR | --bundle DIR) [--] CMD...';

export function parseRunArgs(argv: string[]): RunArgs {
  const args: RunArgs = { command: [], debug: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n${RUN_USAGE}`);
      return v;
    };
    if (a === '--') { args.command = argv.slice(i + 1); break; }
    if (a === '--backend') {
      const b = value();
      if (b !== 'kvm' && b !== 'tcg' && b !== 'auto') throw new Error(`--backend must be kvm, tcg or auto, not ${JSON.stringify(b)}`);
      args.backend = b;
    } else if (a === '--rootfs') args.rootfs = path.resolve(value());
    else if (a === '--bundle') args.bundle = path.resolve(value());
    else if (a === '--image') throw new Error('--image needs containerd\'s content store; use --rootfs DIR or --bundle DIR (or ctr run with the smolvm runtime)');
    else if (a === '--debug') args.debug = true;
    else if (a.startsWith('-')) throw new Error(`unknown option ${a}\n${RUN_USAGE}`);
    else { args.command = argv.slice(i); break; }
  }
  if (!!args.rootfs === !!args.bundle) throw new Error(`give exactly one of --rootfs or --bundle\n${RUN_USAGE}`);
  if (args.rootfs && args.command.length === 0) throw new Error(`no command given\n${RUN_USAGE}`);
  return args;
}

function defaultSpec(command: string[]): OciSpec {
  return {
    ociVersion: '1.1.0',
    process: {
      args: command,
      env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'TERM=xterm'],
      cwd: '/',
      user: { uid: 0, gid: 0 },
    },
    root: { path: 'rootfs' },
    hostname: 'smolvm',
  };
}

export async function runCommand(argv: string[]): Promise<number> {
  const args = parseRunArgs(argv);
  const config = loadConfig();
  const log = stderrLogger(args.debug ? 'debug' : 'warn', { cmd: 'smolvm run' });
  let spec: OciSpec;
  let rootfs: RootfsSource;
  if (args.bundle) {
    spec = loadBundleSpec(args.bundle);
    if (args.command.length > 0 && spec.process) spec.process.args = args.command;
    rootfs = { kind: 'dir', path: path.resolve(args.bundle, spec.root?.path ?? 'rootfs') };
  } else {
    spec = defaultSpec(args.command);
    rootfs = { kind: 'dir', path: args.rootfs! };
  }
  const id = `run-${process.pid}`;
  const stdin = process.stdin.isTTY ? undefined : (process.stdin as Readable);
  const container = await Container.create({
    id, spec, rootfs,
    stdio: { stdin, stdout: process.stdout as Writable, stderr: process.stderr as Writable },
    placer: new VmPlacer(VmBuilder.fromConfig(config, createBackend(args.backend ?? config.backend), smolvmPaths()), { podMaxContainers: config.podMaxContainers }),
    sizing: containerSizing(config), podId: null, record: () => undefined,
    log,
  });
  const forward = (sig: NodeJS.Signals, num: number) => () => {
    container.kill('', num, false).catch(() => undefined);
    log.debug(`forwarded ${sig}`);
  };
  const handlers = [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]] as const;
  for (const [sig, num] of handlers) process.on(sig, forward(sig, num));
  try {
    await container.start();
    const exit = await container.init.exited;
    return exit.exitStatus;
  } finally {
    await container.destroy();
    for (const [sig] of handlers) process.removeAllListeners(sig);
  }
}
