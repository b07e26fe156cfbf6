// `smolvm pool status|fill|drain`: the warm pool of spare daemons (pool/pool.ts) by hand.
// fill tops it up to the config's pool_size (or --size N) and, with --wait, returns once every
// spare takes claims; drain stops every spare and removes what a dead one left, and any
// orphaned VMM of the state root (vm/vmm-sweep.ts).
import { loadConfig } from '../config/config';
import { smolvmPaths } from '../config/paths';
import { drainPoolReport, listSpares, sweepPool, topUpPool, waitForReady } from '../pool/pool';
import { isSameProcessAlive } from '../util/proc';

const USAGE = 'usage: smolvm pool status | fill [--size N] [--wait] | drain';
const FILL_WAIT_MS = 120_000;

export async function poolCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const paths = smolvmPaths();
  switch (sub) {
    case 'status': {
      const spares = listSpares(paths);
      const config = loadConfig();
      process.stdout.write(`pool_size ${config.poolSize}, ${spares.length} spare(s)\n`);
      for (const s of spares) {
        const alive = s.owner !== null && isSameProcessAlive(s.owner);
        process.stdout.write(`${s.name}  ${!alive ? 'dead' : s.ready ? 'ready' : 'booting'}  daemon ${s.owner?.pid ?? '-'}  vmm ${s.vm?.pid ?? '-'}\n`);
      }
      return 0;
    }
    case 'fill': {
      let size = loadConfig().poolSize;
      let wait = false;
      for (let i = 0; i < rest.length; i++) {
        if (rest[i] === '--wait') wait = true;
        else if (rest[i] === '--size') {
          const raw = rest[++i];
          size = Number(raw);
          if (!Number.isInteger(size) || size < 0 || size > 16) throw new Error(`--size must be an integer from 0 to 16, got ${JSON.stringify(raw)}`);
        } else throw new Error(`unknown argument ${JSON.stringify(rest[i])}\n${USAGE}`);
      }
      if (size === 0) {
        process.stderr.write('smolvm pool fill: pool_size is 0 in the config (set pool_size, or pass --size N)\n');
        return 2;
      }
      const spawned = await topUpPool(paths, size);
      process.stdout.write(`spawned ${spawned.length} spare(s)\n`);
      if (wait && !(await waitForReady(paths, size, FILL_WAIT_MS))) {
        process.stderr.write(`smolvm pool fill: fewer than ${size} spares ready after ${FILL_WAIT_MS / 1000} s; see spare.log in ${paths.stateDir}/pool/*\n`);
        return 1;
      }
      return 0;
    }
    case 'drain': {
      const report = await drainPoolReport(paths);
      await sweepPool(paths);
      process.stdout.write(`stopped ${report.stopped} spare(s)\n`);
      const { killed, removedDirs, problems } = report.orphans;
      if (killed.length > 0 || removedDirs.length > 0) {
        process.stdout.write(`swept ${killed.length} orphaned VMM(s) and ${removedDirs.length} VM director${removedDirs.length === 1 ? 'y' : 'ies'}\n`);
      }
      for (const problem of problems) process.stderr.write(`smolvm pool drain: ${problem}\n`);
      return problems.length > 0 ? 1 : 0;
    }
    default:
      process.stderr.write(`${USAGE}\n`);
      return 2;
  }
}
