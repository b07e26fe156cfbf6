// Deadlines of the host→guest agent calls (agent/deadlines.ts, AgentClient) and the lost-VM
// transition they trigger (Sandbox.declareLost): against a fake agent that can stop answering
// (a wedged guest), a real child process standing in for the VMM, and real GuestProcess
// watchers. The conformance suite (conformance/wedged-guest.test.ts) does the same with a
// real guest frozen through QMP and SIGSTOP.
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { AgentClient, type DeadlineExpiry } from '../../shim/src/agent/client';
import {
  AGENT_CALL_DEADLINES_MS, agentCallDeadlineMs, DeadlineClock, LONG_POLLS, MAX_DEADLINE_SCALE, MIN_DEADLINE_SCALE,
  type DeadlineCall,
} from '../../shim/src/agent/deadlines';
import { parseConfig } from '../../shim/src/config/config';
import { Code, RpcError } from '../../shim/src/errdefs';
import { AgentDefinition, type CreateContainerRequest } from '../../shim/src/gen/smolvm/agent';
import type { Logger } from '../../shim/src/log';
import type { VmExit, Vmm } from '../../shim/src/vm/backend';
import { Vm } from '../../shim/src/vm/vm';
import { GuestProcess } from '../../shim/src/task/guest-process';
import { TtrpcServer } from '../../shim/src/ttrpc';
import { processStartTime } from '../../shim/src/util/proc';
import { FakeAgentDefinition } from '../helpers/fake-agent-definition';

class MemoryLogger implements Logger {
  readonly lines: string[] = [];
  debug(): void {}
  info(msg: string): void { this.lines.push(`info ${msg}`); }
  warn(msg: string, fields?: Record<string, unknown>): void { this.lines.push(`warn ${msg} ${JSON.stringify(fields ?? {})}`); }
  error(msg: string): void { this.lines.push(`error ${msg}`); }
  child(): Logger { return this; }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves with how long `promise` took to settle, and how it settled. */
async function timed<T>(promise: Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const started = Date.now();
  try {
    const value = await promise;
    return { ms: Date.now() - started, value };
  } catch (error) {
    return { ms: Date.now() - started, error };
  }
}


/**
 * An agent that answers at once until it is wedged: then no call is answered (a frozen guest)
 * until `unwedge`. Long polls (WaitProcess, WatchOom) are never answered.
 */
class WedgeableAgent {
  readonly server = new TtrpcServer({ logger: new MemoryLogger(), name: 'wedgeable agent' });
  readonly received: string[] = [];
  private wedge: Promise<void> | null = null;
  private unwedgeNow: () => void = () => undefined;
  /** Methods that hang even when the agent is not wedged. */
  readonly slow = new Set<string>();
  private releaseSlow: () => void = () => undefined;
  private slowGate: Promise<void> = new Promise((resolve) => { this.releaseSlow = resolve; });

  constructor() {
    const never = new Promise<never>(() => undefined);
    const answer = async <T>(method: string, response: T): Promise<T> => {
      this.received.push(method);
      if (this.slow.has(method)) await this.slowGate;
      if (this.wedge) await this.wedge;
      return response;
    };
    this.server.register(FakeAgentDefinition, {
      handshake: async () => ({
        protocolVersion: 1, agentVersion: 'fake', kernelRelease: '6.1.0-fake', initialStreamCredit: 65536, maxDataFrame: 16384,
        protocolMinor: 3,
      }),
      createContainer: () => answer('createContainer', { pid: 100 }),
      execProcess: () => answer('execProcess', { pid: 200 }),
      startProcess: () => answer('startProcess', { pid: 100 }),
      signalProcess: () => answer('signalProcess', {}),
      closeStdin: () => answer('closeStdin', {}),
      resizePty: () => answer('resizePty', {}),
      listProcesses: () => answer('listProcesses', { processes: [] }),
      statsContainer: () => answer('statsContainer', {
        cpuStat: [], memoryStat: [], memoryEvents: [], memoryCurrent: 0n, memoryMax: 0n, memorySwapCurrent: 0n,
        memorySwapMax: 0n, pidsCurrent: 0n, pidsMax: 0n, io: [], memoryPeak: 0n,
      }),
      updateContainer: () => answer('updateContainer', {}),
      removeProcess: () => answer('removeProcess', {}),
      removeContainer: () => answer('removeContainer', {}),
      shutdown: () => answer('shutdown', {}),
      reseed: () => answer('reseed', { crngReseeded: true, hwrngBytes: 0 }),
      waitProcess: () => { this.received.push('waitProcess'); return never; },
      watchOom: () => { this.received.push('watchOom'); return never; },
    });
  }

  wedgeAll(): void {
    this.wedge ??= new Promise<void>((resolve) => { this.unwedgeNow = resolve; });
  }

  unwedge(): void {
    this.unwedgeNow();
    this.wedge = null;
  }

  /** Lets every call held by `slow` go. */
  answerSlow(): void {
    this.slow.clear();
    this.releaseSlow();
  }
}

const createRequest = (containerId: string): Omit<CreateContainerRequest, 'stdio'> => ({
  containerId,
  image: { serial: 'slot0', fsType: 'erofs', readOnly: true, sizeBytes: 0n },
  writable: { serial: 'slot1', fsType: 'ext4', readOnly: false, sizeBytes: 0n },
  process: { args: ['/bin/sh'], env: [], cwd: '/', user: { uid: 0, gid: 0, additionalGids: [] }, terminal: false, rlimits: [], noNewPrivileges: true, consoleSize: undefined },
  hostname: 'h',
  readonlyRootfs: false,
} as Omit<CreateContainerRequest, 'stdio'>);

describe('agent call deadlines: the table', () => {
  it('gives every agent method a deadline, except the handshake (bounded by the boot) and the long polls', () => {
    const longPolls = new Set<string>(LONG_POLLS);
    for (const method of Object.keys(AgentDefinition.methods)) {
      if (method === 'handshake') continue;
      if (longPolls.has(method)) {
        assert.ok(!(method in AGENT_CALL_DEADLINES_MS), `${method} is a long poll: it must have no deadline`);
        continue;
      }
      const ms = AGENT_CALL_DEADLINES_MS[method as DeadlineCall];
      assert.ok(Number.isInteger(ms) && ms >= 1000, `${method} has no deadline (or a tiny one): ${ms}`);
    }
    for (const call of Object.keys(AGENT_CALL_DEADLINES_MS)) assert.ok(call in AgentDefinition.methods, `${call} is no agent method`);
  });

  it('gives Create the longest deadline and Kill (SignalProcess) a short one', () => {
    const t = AGENT_CALL_DEADLINES_MS;
    assert.equal(Math.max(...Object.values(t)), t.createContainer);
    assert.ok(t.signalProcess < t.execProcess && t.signalProcess < t.createContainer);
    assert.ok(t.signalProcess <= 10_000, 'a kill of a wedged guest must answer soon');
    // Create covers the agent's own disk waits (2 × 5 s for hot-added disks, 2 × 5 s for sizes).
    assert.ok(t.createContainer >= 3 * 20_000);
  });

  it('scales every deadline, rounds to whole milliseconds, refuses a scale out of range', () => {
    assert.equal(agentCallDeadlineMs('signalProcess'), AGENT_CALL_DEADLINES_MS.signalProcess);
    assert.equal(agentCallDeadlineMs('createContainer', 2), 2 * AGENT_CALL_DEADLINES_MS.createContainer);
    assert.equal(agentCallDeadlineMs('signalProcess', 0.01234), Math.round(AGENT_CALL_DEADLINES_MS.signalProcess * 0.01234));
    for (const bad of [0, -1, MIN_DEADLINE_SCALE / 2, MAX_DEADLINE_SCALE * 2, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => agentCallDeadlineMs('signalProcess', bad), (err: unknown) =>
        err instanceof RpcError && err.code === Code.InvalidArgument && /agent deadline scale/.test(err.message));
    }
  });

  it('config agent_deadline_scale: default 1, a number in range, anything else named', () => {
    assert.equal(parseConfig('', 'c.toml').agentDeadlineScale, 1);
    assert.equal(parseConfig('agent_deadline_scale = 2.5', 'c.toml').agentDeadlineScale, 2.5);
    assert.equal(parseConfig('agent_deadline_scale = 3', 'c.toml').agentDeadlineScale, 3);
    for (const bad of ['0', '-1', '1000', '"fast"', '0.001']) {
      assert.throws(() => parseConfig(`agent_deadline_scale = ${bad}`, 'c.toml'), /c\.toml: agent_deadline_scale must be a number from 0\.01 to 100/);
    }
  });
});

describe('agent call deadlines: DeadlineClock', () => {
  it('fires once after its time, never after cancel', async () => {
    const clock = new DeadlineClock();
    let fired = 0;
    let canceledFired = 0;
    clock.arm(30, () => { fired += 1; });
    clock.arm(30, () => { canceledFired += 1; }).cancel();
    await sleep(100);
    assert.equal(fired, 1);
    assert.equal(canceledFired, 0);
    assert.equal(clock.size, 0);
  });

  it('stops while held (also deadlines armed meanwhile) and starts each over, in full, on release', async () => {
    const clock = new DeadlineClock();
    const firedAt: number[] = [];
    clock.arm(100, () => firedAt.push(Date.now()));
    await sleep(60);
    clock.hold();
    clock.arm(100, () => firedAt.push(Date.now()));
    await sleep(250);
    assert.deepEqual(firedAt, [], 'a deadline fired while held');
    const released = Date.now();
    clock.release();
    await sleep(200);
    assert.equal(firedAt.length, 2);
    // In full: not the 40 ms the first one had left when the hold came.
    for (const at of firedAt) assert.ok(at - released >= 95, `fired ${at - released} ms after release`);
  });
});

describe('agent call deadlines: AgentClient', function () {
  this.timeout(10_000);
  let dir: string;
  let agent: WedgeableAgent;
  let client: AgentClient | undefined;
  let logger: MemoryLogger;

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-deadlines-'));
    agent = new WedgeableAgent();
    await agent.server.listen(path.join(dir, 'agent.sock'));
    logger = new MemoryLogger();
  });

  afterEach(async () => {
    client?.close();
    client = undefined;
    agent.unwedge();
    agent.answerSlow();
    await agent.server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function connect(scale: number): Promise<AgentClient> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(path.join(dir, 'agent.sock'), () => resolve(s));
      s.once('error', reject);
    });
    client = await AgentClient.connect(socket, { logger, timeoutMs: 5000 });
    client.setDeadlineScale(scale);
    return client;
  }

  it('a call the guest does not answer rejects with DeadlineExceeded naming the call and the container, at its deadline', async () => {
    const c = await connect(0.02); // SignalProcess: 200 ms
    const expiries: DeadlineExpiry[] = [];
    c.on('deadlineExceeded', (e) => expiries.push(e));
    await c.signalProcess('box', '', 15); // answered: no deadline involved
    agent.wedgeAll();
    const result = await timed(c.signalProcess('box', '', 15));
    assert.ok(result.error instanceof RpcError, String(result.error));
    assert.equal(result.error.code, Code.DeadlineExceeded);
    assert.equal(result.error.message, 'container box: signal 15: no answer from the guest agent to SignalProcess within 200 ms (its deadline)');
    assert.ok(result.ms >= 195 && result.ms < 3000, `answered after ${result.ms} ms`);
    assert.equal(expiries.length, 1);
    assert.equal(expiries[0]!.call, 'signalProcess');
    assert.equal(expiries[0]!.method, 'SignalProcess');
    assert.equal(expiries[0]!.deadlineMs, 200);
    assert.equal(expiries[0]!.error.message, result.error.message);
    // An exec's call names the exec, and each call has its own deadline.
    const exec = await timed(c.execProcess('box', 'e1', createRequest('box').process!, {}));
    assert.ok(exec.error instanceof RpcError && exec.error.code === Code.DeadlineExceeded);
    assert.match(exec.error.message, /^container box exec e1: exec: no answer from the guest agent to ExecProcess within 600 ms/);
    assert.ok(exec.ms >= 595, `ExecProcess gave up after ${exec.ms} ms`);
  });

  it('every call with a deadline gives up on a wedged guest; each names itself', async () => {
    const c = await connect(0.01);
    agent.wedgeAll();
    const calls: Array<[string, () => Promise<unknown>]> = [
      ['CreateContainer', () => c.createContainer(createRequest('a'), {})],
      ['StartProcess', () => c.startProcess('b')],
      ['CloseStdin', () => c.closeStdin('b')],
      ['ResizePty', () => c.resizePty('b', 'x', 80, 24)],
      ['ListProcesses', () => c.listProcesses('b')],
      ['StatsContainer', () => c.statsContainer('b')],
      ['UpdateContainer', () => c.updateContainer('b', {})],
      ['RemoveProcess', () => c.removeProcess('b', 'x')],
      ['RemoveContainer', () => c.removeContainer('b')],
      ['Shutdown', () => c.shutdown()],
    ];
    const results = await Promise.all(calls.map(([, call]) => call().then(() => null, (err: unknown) => err)));
    results.forEach((err, i) => {
      assert.ok(err instanceof RpcError && err.code === Code.DeadlineExceeded, `${calls[i]![0]}: ${String(err)}`);
      assert.match(err.message, new RegExp(`no answer from the guest agent to ${calls[i]![0]} within \\d+ ms`));
    });
  });

  it('long polls (WaitProcess, WatchOom) have no deadline: they wait past every deadline and end when the channel closes', async () => {
    const c = await connect(0.01); // every deadline ≤ 600 ms
    agent.wedgeAll();
    let waitSettled = false;
    let oomSettled = false;
    const wait = c.waitProcess('box').finally(() => { waitSettled = true; });
    const oom = c.watchOom('box', 0n).finally(() => { oomSettled = true; });
    wait.catch(() => undefined);
    oom.catch(() => undefined);
    await sleep(900);
    assert.equal(waitSettled, false, 'WaitProcess gave up');
    assert.equal(oomSettled, false, 'WatchOom gave up');
    c.close();
    await assert.rejects(wait, (err: unknown) => err instanceof RpcError && err.code === Code.Unavailable);
    await assert.rejects(oom, (err: unknown) => err instanceof RpcError && err.code === Code.Unavailable);
  });

  it('a call queued behind an unanswered one gets its full time from when that one settles', async () => {
    const c = await connect(0.1); // CreateContainer 6000 ms, SignalProcess 1000 ms
    agent.slow.add('createContainer');
    const create = timed(c.createContainer(createRequest('a'), {}));
    await sleep(20);
    const kill = timed(c.signalProcess('b', '', 15));
    await sleep(1500);
    // The Kill is answered (the agent is healthy) but would be past its deadline if it counted from its send.
    agent.answerSlow();
    const [created, killed] = await Promise.all([create, kill]);
    assert.equal(created.error, undefined, String(created.error));
    assert.equal(killed.error, undefined, `a Kill behind a slow Create hit its deadline: ${String(killed.error)}`);
  });

  it('while the clock is held (the VM paused on purpose) nothing expires; on release each call gets its full time', async () => {
    const c = await connect(0.05); // SignalProcess 500 ms
    agent.wedgeAll();
    c.deadlineClock.hold();
    const kill = timed(c.signalProcess('box', '', 9));
    await sleep(1200);
    c.deadlineClock.release();
    await sleep(50);
    agent.unwedge(); // resumed: the guest answers now
    const result = await kill;
    assert.equal(result.error, undefined, `a held call expired: ${String(result.error)}`);
    // And a wedge after the release is still caught, a full deadline after the call.
    agent.wedgeAll();
    const late = await timed(c.signalProcess('box', '', 9));
    assert.ok(late.error instanceof RpcError && late.error.code === Code.DeadlineExceeded, String(late.error));
    assert.ok(late.ms >= 495, `expired after ${late.ms} ms`);
  });

  it('a caller\'s own bound (a restore\'s reseed) is kept: DeadlineExceeded from ttrpc, no lost-VM event', async () => {
    const c = await connect(1);
    const expiries: DeadlineExpiry[] = [];
    c.on('deadlineExceeded', (e) => expiries.push(e));
    agent.wedgeAll();
    const result = await timed(c.reseed({ entropy: Buffer.alloc(32), hostTimeUnixNano: 0n, hostname: '' }, { timeoutMs: 150 }));
    assert.ok(result.error instanceof RpcError && result.error.code === Code.DeadlineExceeded, String(result.error));
    assert.match(result.error.message, /Reseed: no answer within 150ms/);
    assert.ok(result.ms < 3000);
    assert.equal(expiries.length, 0);
  });
});

/** A stand-in VMM: a real process (so SIGKILL and pid checks are real), paused and resumed by the test. */
class FakeVm implements Vmm {
  readonly backend = 'tcg' as const;
  readonly sockets = {};
  readonly exited: Promise<VmExit>;
  readonly identity: { pid: number; startTime: string };
  pauses = 0;
  resumes = 0;
  failPause = false;

  constructor(private readonly child: ChildProcess, readonly consoleLog: string, private readonly onPause: () => void, private readonly onResume: () => void) {
    this.identity = { pid: child.pid!, startTime: processStartTime(child.pid!)! };
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  connectAgent(): Promise<never> { throw new Error('not used'); }
  diagnostics(): string { return 'guest console:\nlast words of the fake guest'; }
  async kill(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exited;
  }
  async pause(): Promise<void> {
    if (this.failPause) throw new Error('QMP stop: no answer');
    this.pauses += 1;
    this.onPause();
  }
  async resume(): Promise<void> {
    this.resumes += 1;
    this.onResume();
  }
  async refreshSlot(): Promise<void> {}
  async consoleSays(): Promise<boolean> { return false; }
}




describe('agent call deadlines: the lost VM', function () {
  this.timeout(15_000);
  let dir: string;
  let agent: WedgeableAgent;
  let logger: MemoryLogger;
  let vmm: ChildProcess;
  let vm: FakeVm;
  let lostVm: Vm;

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-lost-'));
    agent = new WedgeableAgent();
    await agent.server.listen(path.join(dir, 'agent.sock'));
    logger = new MemoryLogger();
    vmm = spawn('sleep', ['600'], { stdio: 'ignore' });
    await new Promise((resolve) => vmm.once('spawn', resolve));
    const vmDir = path.join(dir, 'vm');
    fs.mkdirSync(vmDir);
    fs.writeFileSync(path.join(vmDir, 'console.log'), 'booted\n');
    vm = new FakeVm(vmm, path.join(vmDir, 'console.log'), () => agent.wedgeAll(), () => agent.unwedge());
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(path.join(dir, 'agent.sock'), () => resolve(s));
      s.once('error', reject);
    });
    const client = await AgentClient.connect(socket, { logger, timeoutMs: 5000 });
    client.setDeadlineScale(0.02); // SignalProcess 200 ms, ExecProcess 600 ms
    lostVm = new Vm({ vmId: 'fakevm', dir: vmDir, dataDir: path.join(dir, 'data'), vmm: vm, agent: client, slots: [], log: logger, restoredFrom: null, shares: null });
  });

  afterEach(async () => {
    agent.unwedge();
    await lostVm.destroy();
    await agent.server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A process of a container in the VM, watched as the task service watches it. */
  async function startProcess(containerId: string, execId = ''): Promise<GuestProcess> {
    const out = new PassThrough().resume();
    const created = execId
      ? await lostVm.agent.execProcess(containerId, execId, createRequest(containerId).process!, { stdout: out })
      : await lostVm.agent.createContainer(createRequest(containerId), { stdout: out });
    const proc = new GuestProcess({
      agent: lostVm.agent, containerId, execId, guestPid: created.pid, io: created.io, terminal: false, log: logger,
      describeLoss: () => lostVm.lossReport(),
    });
    proc.watchExit();
    await proc.start();
    return proc;
  }

  it('a call past its deadline declares the VM lost once: VMM killed, channel closed, files gone, every process of every container 137, the call named', async () => {
    // A pod's VM: two containers, one with an exec.
    const a = await startProcess('a');
    const aExec = await startProcess('a', 'x');
    const b = await startProcess('b');
    agent.wedgeAll();
    const kill = await timed(lostVm.agent.signalProcess('a', '', 15));
    assert.ok(kill.error instanceof RpcError && kill.error.code === Code.DeadlineExceeded, String(kill.error));
    assert.ok(kill.ms >= 195 && kill.ms < 3000, `Kill answered after ${kill.ms} ms`);
    assert.equal(lostVm.lost, true);
    // Every process of every container ends with 137, promptly.
    const exits = await Promise.race([
      Promise.all([a, aExec, b].map((p) => p.state.exited)),
      sleep(3000).then(() => null),
    ]);
    assert.ok(exits, 'not every process reported its exit');
    for (const exit of exits) assert.equal(exit.exitStatus, 137);
    // The VMM is killed by SIGKILL, the channel is closed, the VM directory is gone.
    const end = await Promise.race([vm.exited, sleep(3000).then(() => null)]);
    assert.deepEqual(end, { code: null, signal: 'SIGKILL' });
    assert.equal(lostVm.agent.closed, true);
    await lostVm.destroy();
    assert.equal(fs.existsSync(lostVm.dir), false);
    // One loss, named after the call that timed out, in the log lines of each process.
    const report = await lostVm.lossReport();
    assert.match(report.reason, /^container a: signal 15: no answer from the guest agent to SignalProcess within 200 ms \(its deadline\); the VM was declared lost and its VMM \(qemu-system-x86_64, pid \d+\) killed$/);
    assert.match(report.diagnostics, /last words of the fake guest/);
    assert.equal(logger.lines.filter((l) => l.startsWith('error vm lost:')).length, 1);
    for (const who of ['container a', 'container a exec x', 'container b']) {
      const line = logger.lines.find((l) => l.startsWith(`warn ${who}: the VM is gone`));
      assert.ok(line, `no log line for ${who}:\n${logger.lines.join('\n')}`);
      assert.match(line, /to SignalProcess within 200 ms .*declared lost.*reporting exit status 137/);
    }
    // Later calls fail at once; a second declaration changes nothing.
    const after = await timed(lostVm.agent.statsContainer('b'));
    assert.ok(after.error instanceof RpcError && after.error.code === Code.Unavailable && after.ms < 1000, String(after.error));
    assert.match(after.error.message, /the VM was declared lost: container a: signal 15: no answer/);
    lostVm.declareLost('something else');
    assert.match((await lostVm.lossReport()).reason, /SignalProcess/);
  });

  it('a VM being torn down by smolvm is not declared lost', async () => {
    const destroyed = lostVm.destroy();
    lostVm.declareLost('late deadline');
    await destroyed;
    assert.equal(lostVm.lost, false);
    assert.equal(logger.lines.filter((l) => l.startsWith('error vm lost:')).length, 0);
  });

  it('pause is not a wedge: no deadline fires while the VM is paused on purpose; calls held meanwhile answer after resume', async () => {
    const a = await startProcess('a');
    await lostVm.pause(); // the fake guest stops answering
    assert.equal(vm.pauses, 1);
    const kill = timed(lostVm.agent.signalProcess('a', '', 10));
    const stdin = timed(lostVm.agent.closeStdin('a'));
    await sleep(800); // four SignalProcess deadlines
    assert.equal(lostVm.lost, false, 'a paused VM was declared lost');
    assert.equal(a.state.status, 'running');
    await lostVm.resume();
    const [killed, closed] = await Promise.all([kill, stdin]);
    assert.equal(killed.error, undefined, String(killed.error));
    assert.equal(closed.error, undefined, String(closed.error));
    assert.equal(lostVm.lost, false);
    // Resumed: a wedge is caught again.
    agent.wedgeAll();
    const wedged = await timed(lostVm.agent.signalProcess('a', '', 10));
    assert.ok(wedged.error instanceof RpcError && wedged.error.code === Code.DeadlineExceeded);
    assert.equal(lostVm.lost, true);
    assert.equal((await a.state.exited).exitStatus, 137);
  });

  it('a pause that fails keeps the deadlines running', async () => {
    vm.failPause = true;
    await assert.rejects(lostVm.pause(), /QMP stop: no answer/);
    assert.equal(lostVm.agent.deadlineClock.held, false);
    agent.wedgeAll();
    const wedged = await timed(lostVm.agent.signalProcess('a', '', 10));
    assert.ok(wedged.error instanceof RpcError && wedged.error.code === Code.DeadlineExceeded);
    assert.equal(lostVm.lost, true);
  });
});
