// containerd-shim-smolvm-v1: dispatch on the action containerd passes (start | delete) or the
// daemon that `start` spawns. Each path loads only what it needs: `start` runs on every
// container start and must not pay for protobuf, ttrpc or VM code.
import { parseShimFlags } from './bootstrap/flags';

async function main(argv: string[]): Promise<number> {
  let flags;
  try {
    flags = parseShimFlags(argv);
  } catch (err) {
    process.stderr.write(`containerd-shim-smolvm-v1: ${(err as Error).message}\n`);
    return 2;
  }
  if (flags.version) {
    process.stdout.write('containerd-shim-smolvm-v1\n  Version: 0.1.0\n  Runtime: io.containerd.smolvm.v1\n');
    return 0;
  }
  switch (flags.action) {
    case 'start': {
      const { startShim } = await import('./bootstrap/start');
      // The address, JSON or a BootstrapResult: whatever this containerd version reads.
      const { answer } = await startShim(flags, process.argv[1]!);
      process.stdout.write(answer);
      return 0;
    }
    case 'delete': {
      const { deleteShim } = await import('./bootstrap/delete');
      const response = await deleteShim(flags);
      process.stdout.write(response);
      return 0;
    }
    case 'daemon': {
      let failure: string;
      try {
        // It names the state file of its early VM and serves this namespace: checked first.
        const { identifierProblem } = await import('./util/identifiers');
        const bad = identifierProblem('container id', flags.id) ?? identifierProblem('namespace', flags.namespace);
        if (bad === undefined) {
          const { runDaemon } = await import('./daemon');
          await runDaemon(flags);
          return -1; // keep running
        }
        failure = `daemon: ${bad}`;
      } catch (err) {
        failure = err instanceof Error ? err.stack ?? err.message : String(err);
      }
      // Before the daemon's own logging exists: tell `start` through the ready pipe (fd 3).
      try {
        require('node:fs').writeSync(3, `error: ${failure}`);
      } catch {
        process.stderr.write(`containerd-shim-smolvm-v1: ${failure}\n`); // not started by `start`
      }
      return 1;
    }
    case 'spare': {
      // A warm-pool spare (pool/spare.ts), spawned by the pool, never by containerd.
      const { runSpare } = await import('./pool/spare');
      await runSpare();
      return -1; // keep running
    }
    default:
      process.stderr.write(`containerd-shim-smolvm-v1: unknown action ${JSON.stringify(flags.action)} (want start or delete)\n`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`containerd-shim-smolvm-v1: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
