// A fake QEMU monitor for QMP client tests: greets, answers qmp_capabilities, then hands each
// command line to the test's script.
import * as net from 'node:net';

export type QmpScript = (line: Record<string, unknown>, socket: net.Socket) => void;

export const QMP_GREETING = '{"QMP": {"version": {}, "capabilities": []}}\r\n';

export async function fakeMonitor(socketPath: string, script: QmpScript, greeting = QMP_GREETING): Promise<net.Server> {
  const server = net.createServer((socket) => {
    socket.write(greeting);
    let buffered = '';
    socket.on('data', (chunk) => {
      buffered += chunk.toString();
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>;
        buffered = buffered.slice(nl + 1);
        if (line.execute === 'qmp_capabilities') socket.write('{"return": {}}\r\n');
        else script(line, socket);
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return server;
}
