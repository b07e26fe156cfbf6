// The publisher across a containerd outage: events are held with no time limit and delivered
// in order once containerd answers again; the queue is bounded, with an error per dropped
// event; close() is bounded and names what it could not deliver.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { EventPublisher } from '../../shim/src/events/publisher';
import { taskExit, taskStart, Topics } from '../../shim/src/events/topics';
import { TaskExit } from '../../shim/src/gen/containerd/events/task';
import { EventsDefinition, type Envelope } from '../../shim/src/gen/containerd/services/events/events';
import { nullLogger, type Logger } from '../../shim/src/log';
import { TtrpcServer } from '../../shim/src/ttrpc/server';

interface Line { level: string; msg: string; fields: Record<string, unknown> }

function recordingLogger(lines: Line[]): Logger {
  const make = (level: string) => (msg: string, fields: Record<string, unknown> = {}): void => { lines.push({ level, msg, fields }); };
  const logger: Logger = { debug: make('debug'), info: make('info'), warn: make('warn'), error: make('error'), child: () => logger };
  return logger;
}

const exitOf = (id: string, status: number) => taskExit({ containerId: id, id, pid: 1, exitStatus: status, exitedAt: { seconds: 1, nanos: 0 } });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('event publisher across a containerd outage', function () {
  this.timeout(15_000); // loaded CI machines; the bounds that matter are asserted inside
  let dir: string;
  let servers: TtrpcServer[] = [];
  let publishers: EventPublisher[] = [];
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-evq-')); });
  afterEach(async () => {
    // A failed test must not leave a publisher retrying forever (mocha would never exit).
    for (const p of publishers) await p.close().catch(() => undefined);
    publishers = [];
    for (const s of servers) await s.close().catch(() => undefined);
    servers = [];
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function track(p: EventPublisher): EventPublisher {
    publishers.push(p);
    return p;
  }

  async function containerd(socket: string, received: Envelope[]): Promise<TtrpcServer> {
    const s = new TtrpcServer({ logger: nullLogger });
    s.register(EventsDefinition, { forward: async (req) => { received.push(req.envelope!); return {}; } });
    await s.listen(socket);
    servers.push(s);
    return s;
  }

  it('holds events well past the Forward-only period (publish binary failing too), then delivers them in order', async () => {
    const socket = path.join(dir, 'c.ttrpc');
    const lines: Line[] = [];
    const pub = track(new EventPublisher({
      namespace: 'ns', ttrpcAddress: socket, containerdAddress: '/nonexistent.sock', publishBinary: '/bin/false',
      log: recordingLogger(lines), retryForMs: 50, maxBackoffMs: 50,
    }));
    pub.publish(Topics.start, taskStart({ containerId: 'a', pid: 1 }));
    pub.publish(Topics.exit, exitOf('a', 7));
    await sleep(800); // 16x the Forward-only period: nothing may be given up
    assert.equal(pub.pending, 2);
    const received: Envelope[] = [];
    await containerd(socket, received);
    await pub.flush();
    assert.deepEqual(received.map((e) => e.topic), ['/tasks/start', '/tasks/exit']);
    assert.equal(TaskExit.decode(received[1]!.event!.value).exitStatus, 7);
    assert.ok(lines.some((l) => l.level === 'warn' && /containerd unreachable: holding events/.test(l.msg)));
    assert.ok(lines.some((l) => l.level === 'info' && /reachable again/.test(l.msg)));
    assert.ok(!lines.some((l) => /event lost/.test(l.msg)));
    await pub.close();
  });

  it('survives a containerd restart on the same socket: no loss, no duplicate, in order', async () => {
    const socket = path.join(dir, 'c.ttrpc');
    const before: Envelope[] = [];
    const first = await containerd(socket, before);
    const pub = track(new EventPublisher({ namespace: 'ns', ttrpcAddress: socket, containerdAddress: '', publishBinary: '', log: nullLogger, maxBackoffMs: 50 }));
    pub.publish(Topics.start, taskStart({ containerId: 'b', pid: 1 }));
    await pub.flush();
    await first.close();
    fs.rmSync(socket, { force: true });
    pub.publish(Topics.exit, exitOf('b', 0));
    pub.publish(Topics.exit, exitOf('b2', 1));
    await sleep(300);
    const after: Envelope[] = [];
    await containerd(socket, after);
    await pub.flush();
    assert.deepEqual(before.map((e) => e.topic), ['/tasks/start']);
    assert.deepEqual(after.map((e) => TaskExit.decode(e.event!.value).containerId), ['b', 'b2']);
    await pub.close();
  });

  it('falls back to the publish binary once Forward has failed for retryForMs', async () => {
    const record = path.join(dir, 'published');
    const binary = path.join(dir, 'fake-containerd');
    fs.writeFileSync(binary, `#!/bin/sh\necho "$@" >> ${record}\ncat > ${record}.payload\n`, { mode: 0o755 });
    const pub = track(new EventPublisher({
      namespace: 'ns', ttrpcAddress: path.join(dir, 'absent.ttrpc'), containerdAddress: '/run/c.sock', publishBinary: binary,
      log: nullLogger, retryForMs: 100, maxBackoffMs: 20,
    }));
    pub.publish(Topics.exit, exitOf('fb', 9));
    await pub.flush();
    assert.equal(fs.readFileSync(record, 'utf8'), '--address /run/c.sock publish --topic /tasks/exit --namespace ns\n');
    assert.ok(fs.readFileSync(`${record}.payload`).includes(Buffer.from('containerd.events.TaskExit')));
    await pub.close();
  });

  it('bounds the queue: past maxQueued an event is dropped with an error naming it', async () => {
    const socket = path.join(dir, 'c.ttrpc');
    const lines: Line[] = [];
    const pub = track(new EventPublisher({ namespace: 'ns', ttrpcAddress: socket, containerdAddress: '', publishBinary: '', log: recordingLogger(lines), maxQueued: 3, maxBackoffMs: 50 }));
    for (let i = 0; i < 5; i++) pub.publish(Topics.exit, exitOf(`q${i}`, i));
    assert.equal(pub.pending, 3);
    const drops = lines.filter((l) => l.level === 'error' && /event queue is full/.test(l.msg));
    assert.equal(drops.length, 2);
    assert.equal(drops[0]!.fields.topic, '/tasks/exit');
    assert.equal(drops[0]!.fields.limit, 3);
    const received: Envelope[] = [];
    await containerd(socket, received);
    await pub.flush();
    assert.deepEqual(received.map((e) => TaskExit.decode(e.event!.value).containerId), ['q0', 'q1', 'q2']);
    await pub.close();
  });

  it('close() is bounded while containerd is away and logs each undelivered event', async () => {
    const lines: Line[] = [];
    const pub = track(new EventPublisher({
      namespace: 'ns', ttrpcAddress: path.join(dir, 'absent.ttrpc'), containerdAddress: '', publishBinary: '',
      log: recordingLogger(lines), closeTimeoutMs: 200, maxBackoffMs: 50,
    }));
    pub.publish(Topics.exit, exitOf('z', 0));
    const started = Date.now();
    await pub.close();
    assert.ok(Date.now() - started < 2000, `close took ${Date.now() - started} ms`);
    assert.ok(lines.some((l) => l.level === 'error' && /containerd unreachable at shutdown/.test(l.msg) && l.fields.topic === '/tasks/exit'));
    pub.publish(Topics.exit, exitOf('late', 0));
    assert.ok(lines.some((l) => /published after the publisher closed/.test(l.msg)));
  });
});
