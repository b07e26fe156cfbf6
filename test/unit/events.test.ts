import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { EventPublisher } from '../../shim/src/events/publisher';
import { taskCreate, taskDelete, taskExit, taskStart, Topics } from '../../shim/src/events/topics';
import { TaskExit } from '../../shim/src/gen/containerd/events/task';
import { EventsDefinition, type Envelope } from '../../shim/src/gen/containerd/services/events/events';
import { nullLogger } from '../../shim/src/log';
import { TtrpcServer } from '../../shim/src/ttrpc/server';

describe('event publisher', () => {
  let dir: string;
  let server: TtrpcServer | null = null;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-ev-')); });
  afterEach(async () => {
    await server?.close();
    server = null;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function fakeContainerd(socket: string, received: Envelope[]): Promise<TtrpcServer> {
    const s = new TtrpcServer({ logger: nullLogger });
    s.register(EventsDefinition, {
      forward: async (req) => {
        if (!req.envelope?.timestamp?.seconds) throw new Error('zero timestamp');
        received.push(req.envelope);
        return {};
      },
    });
    await s.listen(socket);
    return s;
  }

  const publisherFor = (socket: string): EventPublisher => new EventPublisher({
    namespace: 'ns1', ttrpcAddress: socket, containerdAddress: '', publishBinary: '/bin/false', log: nullLogger, retryForMs: 5000,
  });

  it('forwards events in order with bare type urls and real timestamps', async () => {
    const socket = path.join(dir, 'c.ttrpc');
    const received: Envelope[] = [];
    server = await fakeContainerd(socket, received);
    const pub = publisherFor(socket);
    pub.publish(Topics.create, taskCreate({ containerId: 'c1', bundle: '/b', rootfs: [], io: undefined, checkpoint: '', pid: 7 }));
    pub.publish(Topics.start, taskStart({ containerId: 'c1', pid: 7 }));
    pub.publish(Topics.exit, taskExit({ containerId: 'c1', id: 'c1', pid: 7, exitStatus: 3, exitedAt: { seconds: 5, nanos: 0 } }));
    pub.publish(Topics.delete, taskDelete({ containerId: 'c1', pid: 7, exitStatus: 3, exitedAt: { seconds: 5, nanos: 0 }, id: 'c1' }));
    await pub.close();
    assert.deepEqual(received.map((e) => e.topic), ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
    assert.deepEqual(received.map((e) => e.event!.typeUrl), [
      'containerd.events.TaskCreate', 'containerd.events.TaskStart', 'containerd.events.TaskExit', 'containerd.events.TaskDelete']);
    assert.ok(received.every((e) => e.namespace === 'ns1'));
    const exit = TaskExit.decode(received[2]!.event!.value);
    assert.equal(exit.id, 'c1');
    assert.equal(exit.exitStatus, 3);
  });

  it('queues events while containerd is away and delivers them in order', async () => {
    const socket = path.join(dir, 'late.ttrpc');
    const received: Envelope[] = [];
    const pub = publisherFor(socket);
    pub.publish(Topics.start, taskStart({ containerId: 'c2', pid: 1 }));
    pub.publish(Topics.exit, taskExit({ containerId: 'c2', id: 'c2', pid: 1, exitStatus: 0, exitedAt: { seconds: 1, nanos: 0 } }));
    await new Promise((r) => setTimeout(r, 150));
    server = await fakeContainerd(socket, received);
    await pub.close();
    assert.deepEqual(received.map((e) => e.topic), ['/tasks/start', '/tasks/exit']);
  });
});
