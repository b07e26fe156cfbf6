// The template builder runs as its own detached process: shim daemons come and go with their
// containers (a daemon per container exits right after Delete), so a build inside one would
// rarely finish. The daemon never waits for it; its Creates cold-boot meanwhile.
//
//   node build-process.js '<BuilderJob JSON>'     (stdout/stderr: <templates>/<key>.build.log)
//
// The job names the VM shape; the builder recomputes the key from the files as they are now
// and refuses when it differs (inputs changed meanwhile), so it never builds a wrong guest.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Paths } from '../../config/paths';
import { stderrLogger, type Level, type Logger } from '../../log';
import type { BackendName, GuestBoot, Vmm } from '../backend';
import { createBackend } from '../backends';
import type { VmShape } from '../shape';
import { buildTemplate } from './build';
import { TemplateStore } from './store';

export interface BuilderJob {
  backend: BackendName;
  paths: Paths;
  shape: VmShape;
  guest: GuestBoot;
  key: string;
  logLevel: Level;
}

/** Test hook: a builder command other than this file (e.g. one that fails). */
export const BUILDER_ENV = 'SMOLVM_TEMPLATE_BUILDER';

/**
 * Starts a detached builder for `job.key` unless one is running or a build of it failed
 * recently. Never waits; returns what it did, for the log line.
 */
export async function scheduleBuild(job: BuilderJob, log: Logger): Promise<'started' | 'running' | 'failed-recently'> {
  const store = new TemplateStore(job.paths.cacheDir);
  if (await store.buildInProgress(job.key)) return 'running';
  const failure = store.recentFailure(job.key);
  if (failure) {
    log.debug('template build failed recently: not retrying yet', { template: job.key, failure });
    return 'failed-recently';
  }
  // A burst of Creates schedules one builder, not one each (the builder holds the real lock).
  if (!store.claimSchedule(job.key)) return 'running';
  const logFd = fs.openSync(path.join(store.root, `${job.key}.build.log`), 'a', 0o600);
  try {
    const script = process.env[BUILDER_ENV] || __filename;
    const child = spawn(process.execPath, [script, JSON.stringify(job)], {
      detached: true,
      stdio: ['ignore', logFd, logFd],
      env: process.env,
    });
    child.on('error', (err) => {
      store.releaseSchedule(job.key);
      log.warn('template builder did not start', { template: job.key, error: err.message });
    });
    child.unref();
  } finally {
    fs.closeSync(logFd);
  }
  return 'started';
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;

/** A VmShape as a job carries it (JSON from the scheduling daemon: checked, not trusted). */
function isShape(v: unknown): v is VmShape {
  const s = v as Partial<VmShape> | undefined;
  return typeof s === 'object' && s !== null && isCount(s.memoryMiB) && isCount(s.vcpus) && typeof s.diskHotplug === 'boolean' &&
    Array.isArray(s.disks) && s.disks.every((d) => isString(d?.serial) && typeof d?.readOnly === 'boolean') &&
    Array.isArray(s.nics) && s.nics.every((n) => isString(n?.name)) &&
    Array.isArray(s.shares) && s.shares.every((x) => isString(x?.tag)) &&
    typeof s.jail === 'object' && s.jail !== null && !Array.isArray(s.jail);
}

function parseJob(text: string | undefined): BuilderJob {
  if (!text) throw new Error('usage: build-process.js <job JSON>');
  const job = JSON.parse(text) as Partial<BuilderJob>;
  const ok = (job.backend === 'tcg' || job.backend === 'kvm') && isString(job.key) &&
    isString(job.paths?.cacheDir) && isString(job.paths?.stateDir) && isShape(job.shape) &&
    isString(job.guest?.kernel) && isString(job.guest?.initramfs) && isString(job.guest?.cmdline);
  if (!ok) throw new Error(`builder: malformed job ${text.slice(0, 200)}`);
  return job as BuilderJob;
}

async function main(): Promise<number> {
  const job = parseJob(process.argv[2]);
  const log = stderrLogger(job.logLevel ?? 'info', { component: 'template-builder', template: job.key, pid: process.pid });
  log.info('template build starting', { backend: job.backend, memoryMiB: job.shape.memoryMiB, vcpus: job.shape.vcpus });
  // Signals end the builder, but never leave its QEMU behind (the lock and the build dir of a
  // dead builder are swept by the next one).
  let vm: Vmm | null = null;
  const store = new TemplateStore(job.paths.cacheDir);
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(signal, () => {
      log.warn('template build interrupted', { signal });
      void (vm ? vm.kill() : Promise.resolve()).finally(() => {
        store.releaseSchedule(job.key);
        process.exit(1);
      });
    });
  }
  try {
    const outcome = await buildTemplate({
      backend: createBackend(job.backend), paths: job.paths, shape: job.shape, guest: job.guest, expectedKey: job.key, log,
      onVmStarted: (started) => { vm = started; },
    });
    if (outcome.kind === 'built') log.info('template built', { ms: outcome.ms, stateBytes: outcome.stateBytes, removed: outcome.removed.join(',') });
    else log.info(outcome.kind === 'busy' ? 'template build already running elsewhere' : 'template already exists');
    return 0;
  } catch (err) {
    log.error('template build failed', { error: err instanceof Error ? err.message : String(err) });
    return 1;
  } finally {
    store.releaseSchedule(job.key);
  }
}

if (require.main === module) {
  void main().then((code) => process.exit(code));
}
