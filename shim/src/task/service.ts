// containerd.task.v2.Task for smolvm: the init process of each container and its execs
// (pause, stats and the rest come with the rest of the task API). Every container is its own
// microVM; an exec is one more process in the container's namespaces in that VM.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { RootfsSource } from '../image';
import type { Paths } from '../config/paths';
import { alreadyExists, failedPrecondition, invalidArgument, notFound, unimplemented } from '../errdefs';
import type { EventPublisher } from '../events/publisher';
import { taskCreate, taskDelete, taskExecAdded, taskExecStarted, taskExit, taskOOM, taskPaused, taskResumed, taskStart, Topics } from '../events/topics';
import { Status } from '../gen/containerd/types/task/task';
import type {
  CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
  DeleteResponse, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
  StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, UpdateTaskRequest, WaitRequest, WaitResponse,
} from '../gen/containerd/task/v2/shim';
import type { Empty } from '../gen/google/protobuf/empty';
import type { Any } from '../gen/google/protobuf/any';
import { ProcessDetails } from '../gen/containerd/runc/options/oci';
import type { Logger } from '../log';
import { parseUpdateResources } from '../oci/resources';
import { loadBundleSpec } from '../oci/spec';
import { openHostStdio, type HostStdio } from '../stdio/host-stdio';
import { STATE_VERSION, StateStore, type ContainerState, type LoggerRecord } from '../state/store';
import { validateIdentifier } from '../util/identifiers';
import { toTimestamp } from '../util/time';
import type { VmPlacer } from '../vm/placement';
import { PodRegistry } from '../vm/pods';
import { Container, type ContainerSizing } from './container';
import { parseExecProcessSpec } from './exec-spec';
import { packCgroupMetrics, toCgroupMetrics } from './metrics';
import type { GuestProcess } from './guest-process';
import type { ProcessStatus } from './process';

export const SHIM_VERSION = '0.1.0';

export interface TaskServiceOptions {
  namespace: string;
  /** Where the state files go (state/store.ts). */
  paths: Paths;
  publisher: EventPublisher;
  log: Logger;
  /** Where containers' VMs come from (vm/placement.ts). */
  placer: VmPlacer;
  /** The daemon's defaults a container's spec may change. */
  sizing: ContainerSizing;
  /** Called when Shutdown finds no container left: the daemon exits. */
  onShutdown: () => void;
  /** Called before that Shutdown is answered: the daemon stops being findable (its socket
   *  goes), so that a `start` right after the answer spawns a new daemon, never this one. */
  onShutdownAccepted?: () => void;
  /** After every Create, whatever its outcome, before it answers (the daemon tears down an
   *  early VM the Create did not take, and tops the warm pool up after its first). */
  onCreated?: () => Promise<void>;
}

interface Entry {
  id: string;
  bundle: string;
  request: CreateTaskRequest;
  container: Container;
  stdio: HostStdio;
  deleted: boolean;
  execs: Map<string, ExecEntry>;
}

interface ExecEntry {
  execId: string;
  request: ExecProcessRequest;
  process: GuestProcess;
  stdio: HostStdio;
  /** Delete has begun: its exit is no longer published. */
  deleted: boolean;
}

/** What persist() records of a container: its binary:// loggers come from its stdio and execs. */
interface PersistedIdent {
  id: string;
  bundle: string;
  stdio?: HostStdio;
  execs?: Map<string, ExecEntry>;
}

/** The logger processes to record, so that `delete` can stop them if this daemon dies. */
function loggerRecords(e: PersistedIdent): LoggerRecord[] {
  const records: LoggerRecord[] = [];
  if (e.stdio?.logger) records.push({ execId: '', ...e.stdio.logger });
  for (const x of e.execs?.values() ?? []) if (x.stdio.logger) records.push({ execId: x.execId, ...x.stdio.logger });
  return records;
}

/** typeurl's name for runc's ProcessDetails (bare message name, as containerd's typeurl writes it). */
const PROCESS_DETAILS_TYPE_URL = 'containerd.runc.v1.ProcessDetails';

/** PidsResponse info for an exec's process, in runc's shim's type (ctr decodes it by name). */
function processDetails(execId: string): Any {
  return { typeUrl: PROCESS_DETAILS_TYPE_URL, value: Buffer.from(ProcessDetails.encode({ execId }).finish()) };
}

const MAX_UINT32 = 0xffff_ffff;

const statusCode: Record<ProcessStatus, Status> = {
  created: Status.CREATED,
  running: Status.RUNNING,
  pausing: Status.PAUSING,
  paused: Status.PAUSED,
  stopped: Status.STOPPED,
};

export class TaskService {
  private readonly entries = new Map<string, Entry>();
  /** Ids whose Create is in progress: a second Create for one of them is AlreadyExists. */
  private readonly creating = new Set<string>();
  private readonly store: StateStore;
  private shuttingDown = false;

  constructor(private readonly opts: TaskServiceOptions) {
    validateIdentifier('namespace', opts.namespace);
    this.store = new StateStore(opts.paths.stateDir);
  }

  /** The pod (CRI sandbox id) a container joins, or null for a VM of its own. Refused while
   *  the pod's VM is paused: its agent could not take the container. */
  private podFor(id: string, annotations: Record<string, string> | undefined): string | null {
    const podId = PodRegistry.podIdOf(annotations);
    if (!podId) return null;
    for (const e of this.entries.values()) {
      if (e.container.podId === podId && e.container.paused) {
        throw failedPrecondition(`container ${id}: pod ${podId} is paused (container ${e.id}); resume it first`);
      }
    }
    return podId;
  }

  get containerCount(): number {
    return this.entries.size + this.creating.size;
  }

  /** Every request's container (and exec) id is checked before anything else: InvalidArgument. */
  private entry(id: string): Entry {
    validateIdentifier('container id', id);
    const e = this.entries.get(id);
    if (!e) throw notFound(`container ${id} not found in this shim`);
    return e;
  }

  private execEntry(e: Entry, execId: string): ExecEntry {
    validateIdentifier('exec id', execId, `container ${e.id}`);
    const x = e.execs.get(execId);
    if (!x) throw notFound(`container ${e.id}: exec ${execId} not found`);
    return x;
  }

  /** The init process for "", else the exec. */
  private process(e: Entry, execId: string): GuestProcess {
    return execId ? this.execEntry(e, execId).process : e.container.process('');
  }

  private persist(e: PersistedIdent, status: ContainerState['status'], container: Container | null, vm?: ContainerState['vm'], hostMounts?: string[]): void {
    const previous = this.store.read(this.opts.namespace, e.id);
    const exit = container?.init.exit;
    const loggers = loggerRecords(e);
    const mounts = hostMounts ?? previous?.hostMounts ?? [];
    this.store.write({
      version: STATE_VERSION, id: e.id, namespace: this.opts.namespace, bundle: e.bundle, status, shimPid: process.pid,
      vm: vm ?? previous?.vm ?? null,
      ...(exit ? { exitStatus: exit.exitStatus, exitedAt: exit.exitedAt.toISOString() } : {}),
      ...(loggers.length > 0 ? { loggers } : {}),
      ...(mounts.length > 0 ? { hostMounts: mounts } : {}),
    });
  }

  /** Rewrites the state file with the current set of logger processes (an exec's came or went). */
  private persistLoggers(e: Entry): void {
    // A deleted container's state file is gone for good: never write it again.
    if (!e.deleted && this.entries.get(e.id) === e) this.persist(e, e.container.init.status === 'created' ? 'created' : e.container.init.live ? 'running' : 'stopped', e.container);
  }

  async create(req: CreateTaskRequest): Promise<CreateTaskResponse> {
    const id = req.id;
    validateIdentifier('container id', id);
    if (this.shuttingDown) throw failedPrecondition(`container ${id}: shim is shutting down`);
    if (this.entries.has(id) || this.creating.has(id)) throw alreadyExists(`container ${id} already exists`);
    if (req.checkpoint) throw unimplemented(`container ${id}: restore from checkpoint is not supported`);
    if (!path.isAbsolute(req.bundle)) throw invalidArgument(`container ${id}: bundle path ${JSON.stringify(req.bundle)} must be absolute`);
    this.creating.add(id);
    const log = this.opts.log.child({ id });
    let stdio: HostStdio | null = null;
    try {
      const spec = loadBundleSpec(req.bundle);
      if (!spec.process) throw invalidArgument(`container ${id}: config.json has no process`);
      const rootfs: RootfsSource = req.rootfs.length > 0
        ? { kind: 'mounts', mounts: req.rootfs }
        : { kind: 'dir', path: path.resolve(req.bundle, spec.root?.path ?? 'rootfs') };
      if (rootfs.kind === 'dir' && !fs.statSync(rootfs.path, { throwIfNoEntry: false })?.isDirectory()) {
        // Checked before anything is started: name the field the path came from.
        throw invalidArgument(`container ${id}: no rootfs: containerd passed no rootfs mounts and config.json root.path ${JSON.stringify(spec.root?.path ?? 'rootfs')} (${rootfs.path}) is not a directory`);
      }
      stdio = await openHostStdio(
        { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal || !!spec.process.terminal },
        { containerId: id, namespace: this.opts.namespace },
      );
      const hostStdio = stdio;
      const ident: PersistedIdent = { id, bundle: req.bundle, stdio: hostStdio };
      this.persist(ident, 'creating', null, null);
      const container = await Container.create({
        id, spec, rootfs, terminal: req.terminal || !!spec.process.terminal,
        stdio: { stdin: hostStdio.stdin, stdout: hostStdio.stdout, stderr: hostStdio.stderr },
        log, placer: this.opts.placer, sizing: this.opts.sizing, podId: this.podFor(id, spec.annotations),
        record: (vm) => this.persist(ident, 'creating', null, vm),
        onHostMounts: (points) => this.persist(ident, 'creating', null, undefined, points),
        onExit: (info) => {
          const e = this.entries.get(id);
          if (!e || e.deleted) return;
          this.persist(e, 'stopped', e.container);
          this.opts.publisher.publish(Topics.exit, taskExit({
            containerId: id, id, pid: e.container.pid, exitStatus: info.exitStatus, exitedAt: toTimestamp(info.exitedAt),
          }));
        },
        // Runs before the TaskExit of a process the OOM killer ended (see GuestProcess).
        onOom: () => {
          const e = this.entries.get(id);
          if (!e || e.deleted) return;
          this.opts.publisher.publish(Topics.oom, taskOOM({ containerId: id }));
        },
      });
      const entry: Entry = { id, bundle: req.bundle, request: req, container, stdio: hostStdio, deleted: false, execs: new Map() };
      this.entries.set(id, entry);
      this.persist(entry, 'created', container);
      this.opts.publisher.publish(Topics.create, taskCreate({
        containerId: id, bundle: req.bundle, rootfs: req.rootfs,
        io: { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal },
        checkpoint: req.checkpoint, pid: container.pid,
      }));
      log.info('container created', { pid: container.pid, guest_pid: container.guestPid });
      return { pid: container.pid };
    } catch (err) {
      stdio?.close();
      await stdio?.closed;
      this.store.remove(this.opts.namespace, id);
      log.error('create failed', { error: (err as Error).message });
      // Every error names the container (errdefs codes are kept).
      if (err instanceof Error && !err.message.includes(`container ${id}`)) {
        err.message = `container ${id}: ${err.message}`;
      }
      throw err;
    } finally {
      this.creating.delete(id);
      // A failed Create leaves nothing behind, not even the VM started for it ahead.
      await this.opts.onCreated?.();
    }
  }

  async start(req: StartRequest): Promise<StartResponse> {
    const e = this.entry(req.id);
    if (req.execId) {
      const x = this.execEntry(e, req.execId);
      await x.process.start(() => {
        this.opts.publisher.publish(Topics.execStarted, taskExecStarted({ containerId: e.id, execId: x.execId, pid: e.container.pid }));
      });
      return { pid: e.container.pid };
    }
    await e.container.start(() => {
      this.persist(e, 'running', e.container);
      this.opts.publisher.publish(Topics.start, taskStart({ containerId: e.id, pid: e.container.pid }));
    });
    return { pid: e.container.pid };
  }

  async state(req: StateRequest): Promise<StateResponse> {
    const e = this.entry(req.id);
    if (req.execId) {
      const x = this.execEntry(e, req.execId);
      const exit = x.process.state.exit;
      return {
        id: x.execId, bundle: e.bundle, pid: e.container.pid, status: statusCode[x.process.state.status],
        stdin: x.request.stdin, stdout: x.request.stdout, stderr: x.request.stderr, terminal: x.process.terminal,
        exitStatus: exit?.exitStatus ?? 0, exitedAt: exit ? toTimestamp(exit.exitedAt) : undefined, execId: x.execId,
      };
    }
    const exit = e.container.init.exit;
    return {
      id: e.id, bundle: e.bundle, pid: e.container.pid, status: statusCode[e.container.init.status],
      stdin: e.request.stdin, stdout: e.request.stdout, stderr: e.request.stderr, terminal: e.request.terminal,
      exitStatus: exit?.exitStatus ?? 0, exitedAt: exit ? toTimestamp(exit.exitedAt) : undefined, execId: req.execId,
    };
  }

  async wait(req: WaitRequest): Promise<WaitResponse> {
    const e = this.entry(req.id);
    const info = await this.process(e, req.execId).state.exited;
    return { exitStatus: info.exitStatus, exitedAt: toTimestamp(info.exitedAt) };
  }

  async kill(req: KillRequest): Promise<Empty> {
    const e = this.entry(req.id);
    if (req.signal <= 0 || req.signal > 64) throw invalidArgument(`container ${req.id}: invalid signal ${req.signal}`);
    const outcome = await e.container.kill(req.execId, req.signal, req.all);
    if (outcome === 'resumed to deliver') this.opts.log.info('paused container resumed to deliver SIGKILL', { id: e.id });
    return {};
  }

  async delete(req: DeleteRequest): Promise<DeleteResponse> {
    const e = this.entry(req.id);
    if (req.execId) return this.deleteExec(e, req.execId);
    const status = e.container.init.status;
    if (e.container.paused) throw failedPrecondition(`container ${req.id}: cannot delete a paused task; kill or resume it first`);
    if (status === 'running') throw failedPrecondition(`container ${req.id}: cannot delete a running task; kill it first`);
    e.deleted = true;
    await e.container.destroy();
    const execStdio = [...e.execs.values()].map((x) => x.stdio);
    e.stdio.close();
    this.closeExecs(e);
    // A binary:// logger is gone before Delete answers (nothing is left behind).
    await Promise.all([e.stdio.closed, ...execStdio.map((s) => s.closed)]);
    this.entries.delete(e.id);
    this.store.remove(this.opts.namespace, e.id);
    const exit = e.container.init.exit!;
    const pid = e.container.pid;
    this.opts.publisher.publish(Topics.delete, taskDelete({
      containerId: e.id, pid, exitStatus: exit.exitStatus, exitedAt: toTimestamp(exit.exitedAt), id: e.id,
    }));
    this.opts.log.info('container deleted', { id: e.id });
    return { pid, exitStatus: exit.exitStatus, exitedAt: toTimestamp(exit.exitedAt) };
  }

  /** Deletes a stopped (or never started) exec: the container and its VM stay. */
  private async deleteExec(e: Entry, execId: string): Promise<DeleteResponse> {
    const x = this.execEntry(e, execId);
    if (x.process.state.status === 'running') {
      throw failedPrecondition(`container ${e.id}: cannot delete exec ${execId} while it runs; kill it first`);
    }
    x.deleted = true;
    await e.container.removeExec(execId);
    x.stdio.close();
    await x.stdio.closed;
    e.execs.delete(execId);
    if (x.stdio.logger) this.persistLoggers(e);
    const exit = x.process.state.exit!;
    this.opts.log.info('exec deleted', { id: e.id, exec: execId });
    // containerd publishes no /tasks/delete for an exec (runc's shim neither).
    return { pid: e.container.pid, exitStatus: exit.exitStatus, exitedAt: toTimestamp(exit.exitedAt) };
  }

  private closeExecs(e: Entry): void {
    for (const x of e.execs.values()) {
      x.deleted = true;
      x.stdio.close();
    }
    e.execs.clear();
  }

  /**
   * Exec: a new process in the container's namespaces, blocked before exec until Start with
   * its exec id. The spec is the JSON OCI process; stdio as for Create.
   */
  async exec(req: ExecProcessRequest): Promise<Empty> {
    const execId = req.execId;
    // Both ids first, whether or not the container is here.
    validateIdentifier('container id', req.id);
    validateIdentifier('exec id', execId, `container ${req.id}`);
    const e = this.entry(req.id);
    const what = `container ${e.id} exec ${JSON.stringify(execId)}`;
    if (e.execs.has(execId)) throw alreadyExists(`${what}: exec id already exists`);
    if (e.deleted || e.container.init.status === 'stopped') throw failedPrecondition(`${what}: container is stopped`);
    if (e.container.paused) throw failedPrecondition(`${what}: container is paused; resume it first`);
    const spec = parseExecProcessSpec(req.spec, what);
    const terminal = req.terminal || !!spec.terminal;
    const stdio = await openHostStdio(
      { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal },
      // A binary:// logger of an exec sees the exec id as CONTAINER_ID, as with runc's shim.
      { containerId: execId, namespace: this.opts.namespace },
    );
    let x: ExecEntry | undefined;
    try {
      const process = await e.container.exec(execId, {
        process: spec, terminal,
        stdio: { stdin: stdio.stdin, stdout: stdio.stdout, stderr: stdio.stderr },
        onExit: (info) => {
          if (!x || x.deleted || e.deleted) return;
          this.opts.publisher.publish(Topics.exit, taskExit({
            containerId: e.id, id: execId, pid: e.container.pid, exitStatus: info.exitStatus, exitedAt: toTimestamp(info.exitedAt),
          }));
        },
      });
      x = { execId, request: req, process, stdio, deleted: false };
    } catch (err) {
      stdio.close();
      await stdio.closed;
      if (err instanceof Error && !err.message.includes(`container ${e.id}`)) err.message = `${what}: ${err.message}`;
      throw err;
    }
    e.execs.set(execId, x);
    if (stdio.logger) this.persistLoggers(e);
    this.opts.publisher.publish(Topics.execAdded, taskExecAdded({ containerId: e.id, execId }));
    this.opts.log.info('exec added', { id: e.id, exec: execId, guest_pid: x.process.guestPid, terminal });
    return {};
  }

  async resizePty(req: ResizePtyRequest): Promise<Empty> {
    const e = this.entry(req.id);
    const target = this.process(e, req.execId);
    const what = req.execId ? `container ${e.id} exec ${req.execId}` : `container ${e.id}`;
    if (!target.terminal) throw failedPrecondition(`${what}: no terminal to resize (terminal=false)`);
    for (const [name, value] of [['width', req.width], ['height', req.height]] as const) {
      if (!Number.isInteger(value) || value < 0 || value > MAX_UINT32) throw invalidArgument(`${what}: invalid pty ${name} ${value}`);
    }
    await target.resizePty(req.width, req.height);
    return {};
  }

  async pids(req: PidsRequest): Promise<PidsResponse> {
    const e = this.entry(req.id);
    // The guest agent is frozen with a paused VM: the container refuses to list its processes.
    const processes = await e.container.guestProcesses();
    // As runc's shim: an exec's process carries ProcessDetails{exec_id} (`ctr task ps` INFO).
    return { processes: processes.map(({ pid, execId }) => ({ pid, info: execId ? processDetails(execId) : undefined })) };
  }

  async closeIO(req: CloseIORequest): Promise<Empty> {
    const e = this.entry(req.id);
    if (!req.stdin) return {};
    if (req.execId) {
      const x = this.execEntry(e, req.execId);
      x.stdio.closeStdin();
      await x.process.closeStdin();
      return {};
    }
    e.stdio.closeStdin();
    await e.container.closeStdin();
    return {};
  }

  async connect(req: ConnectRequest): Promise<ConnectResponse> {
    const e = this.entries.get(req.id);
    return { shimPid: process.pid, taskPid: e?.container.pid ?? 0, version: SHIM_VERSION };
  }

  async shutdown(_req: ShutdownRequest): Promise<Empty> {
    if (this.containerCount > 0) return {};
    this.shuttingDown = true;
    // containerd starts the next task of this group (e.g. the same id again) as soon as this
    // answer arrives: by then no `start` may find this daemon, which is leaving.
    this.opts.onShutdownAccepted?.();
    // Answer first, then exit: containerd waits for the reply.
    setImmediate(() => this.opts.onShutdown());
    return {};
  }

  /** Tears everything down (daemon exit on a signal). */
  async destroyAll(): Promise<void> {
    this.shuttingDown = true;
    await Promise.all([...this.entries.values()].map(async (e) => {
      e.deleted = true;
      await e.container.destroy().catch(() => undefined);
      const execStdio = [...e.execs.values()].map((x) => x.stdio);
      e.stdio.close();
      this.closeExecs(e);
      await Promise.all([e.stdio.closed, ...execStdio.map((s) => s.closed)]);
      this.store.remove(this.opts.namespace, e.id);
    }));
    this.entries.clear();
  }

  /**
   * Pause stops the whole VM (task/container.ts): every process of the container, and its
   * guest agent, stop making progress until Resume.
   */
  async pause(req: PauseRequest): Promise<Empty> {
    const e = this.entry(req.id);
    if (e.deleted) throw failedPrecondition(`container ${e.id}: cannot pause a deleted task`);
    await e.container.pause();
    this.opts.publisher.publish(Topics.paused, taskPaused({ containerId: e.id }));
    this.opts.log.info('container paused', { id: e.id });
    return {};
  }

  /** Resume lets the VM run again, then delivers the signals sent while it was paused. */
  async resume(req: ResumeRequest): Promise<Empty> {
    const e = this.entry(req.id);
    await e.container.resume();
    this.opts.publisher.publish(Topics.resumed, taskResumed({ containerId: e.id }));
    this.opts.log.info('container resumed', { id: e.id });
    return {};
  }

  // The rest of the task API arrives with issue 4; until then a clear Unimplemented.
  async checkpoint(): Promise<Empty> { throw unimplemented('checkpoint is not supported'); }

  /**
   * Update: the JSON LinuxResources (cpu, memory, pids) applied to the container's guest
   * cgroup, as `runc update` does. Bad values are InvalidArgument naming the field.
   */
  async update(req: UpdateTaskRequest): Promise<Empty> {
    const e = this.entry(req.id);
    const raw = parseUpdateResources(req.resources, `container ${e.id}`);
    await e.container.update(raw);
    this.opts.log.info('container resources updated', { id: e.id });
    return {};
  }

  /** Stats: the guest cgroup's counters as io.containerd.cgroups.v2.Metrics. */
  async stats(req: StatsRequest): Promise<StatsResponse> {
    const e = this.entry(req.id);
    const stats = await e.container.stats();
    return { stats: packCgroupMetrics(toCgroupMetrics(stats)) };
  }
}
