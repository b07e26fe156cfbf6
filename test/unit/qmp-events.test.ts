// QmpChannel.executeAwaitingEvent: a command whose effect QEMU reports by an event (device_del
// → DEVICE_DELETED) waits for that event on the same connection, bounded, whether it comes
// before or after the reply; other events and a closed connection are no match.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fakeMonitor } from '../helpers/fake-qmp';
import { QmpChannel, QmpError } from '../../shim/src/vm/backends/qmp';


const deleted = (id: string) => `{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "DEVICE_DELETED", "data": {"device": "${id}", "path": "/machine/peripheral/${id}"}}\r\n`;
const isDeleted = (id: string) => (e: { event: string; data: Record<string, unknown> }): boolean => e.event === 'DEVICE_DELETED' && e.data.device === id;

describe('QMP events after a command', () => {
  let dir: string;
  let server: net.Server | null = null;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-qmpev-')); });
  afterEach(async () => {
    if (server) await new Promise((r) => server!.close(r));
    server = null;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('sees the event sent before the reply (virtio-scsi unplugs at once)', async () => {
    const sock = path.join(dir, 'm.sock');
    server = await fakeMonitor(sock, (line, s) => {
      assert.deepEqual(line, { execute: 'device_del', arguments: { id: 'hd0' } });
      s.write(`${deleted('hd0')}{"return": {}}\r\n`);
    });
    assert.equal(await new QmpChannel(sock).executeAwaitingEvent('device_del', { id: 'hd0' }, isDeleted('hd0'), 1000), true);
  });

  it('waits for an event that comes after the reply; ignores other devices\' events', async () => {
    const sock = path.join(dir, 'm.sock');
    server = await fakeMonitor(sock, (_line, s) => {
      s.write(`${deleted('hd9')}{"return": {}}\r\n`);
      setTimeout(() => s.write(deleted('hd1')), 100);
    });
    const started = Date.now();
    assert.equal(await new QmpChannel(sock).executeAwaitingEvent('device_del', { id: 'hd1' }, isDeleted('hd1'), 2000), true);
    assert.ok(Date.now() - started >= 90);
  });

  it('gives up after its bound, or when QEMU closes the connection, with false', async () => {
    const sock = path.join(dir, 'm.sock');
    server = await fakeMonitor(sock, (line, s) => {
      s.write('{"return": {}}\r\n');
      if ((line.arguments as { id?: string }).id === 'close') setTimeout(() => s.end(), 50);
    });
    const qmp = new QmpChannel(sock);
    const started = Date.now();
    assert.equal(await qmp.executeAwaitingEvent('device_del', { id: 'hd2' }, isDeleted('hd2'), 150), false);
    assert.ok(Date.now() - started >= 140);
    assert.equal(await qmp.executeAwaitingEvent('device_del', { id: 'close' }, isDeleted('close'), 5000), false);
    // The channel still serves the next command.
    assert.equal(await qmp.executeAwaitingEvent('device_del', { id: 'hd3' }, isDeleted('hd3'), 10), false);
  });

  it('rejects with the QMP error (e.g. DeviceNotFound) and its class', async () => {
    const sock = path.join(dir, 'm.sock');
    server = await fakeMonitor(sock, (_line, s) => s.write('{"error": {"class": "DeviceNotFound", "desc": "Device \'hd7\' not found"}}\r\n'));
    await assert.rejects(new QmpChannel(sock).executeAwaitingEvent('device_del', { id: 'hd7' }, isDeleted('hd7'), 1000),
      (err: Error) => err instanceof QmpError && err.errorClass === 'DeviceNotFound' && /QMP device_del: DeviceNotFound/.test(err.message));
  });
});
