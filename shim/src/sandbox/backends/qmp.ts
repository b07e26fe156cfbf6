// A minimal QMP (QEMU Machine Protocol) client: one connection per command (greeting,
// qmp_capabilities, the command, close). QEMU's monitor socket serves one client at a time, so
// callers serialize through QmpChannel. Every reply is bounded in size and time: QEMU is
// trusted, but a wedged or dying QEMU must give a clear error, never a hang.
import * as net from 'node:net';

/** Longest single QMP message we accept (query replies are a few KiB). */
const MAX_MESSAGE_BYTES = 1024 * 1024;
export const DEFAULT_QMP_TIMEOUT_MS = 10_000;

export class QmpError extends Error {
  constructor(message: string, readonly errorClass = '') {
    super(message);
    this.name = 'QmpError';
  }
}

type QmpMessage = Record<string, unknown>;

/** Splits the stream into JSON messages (QEMU ends each with \r\n). */
class MessageReader {
  private buffered = '';
  private readonly waiting: Array<(m: QmpMessage) => void> = [];
  private readonly ready: QmpMessage[] = [];
  failure: Error | null = null;
  private readonly failed: Array<(e: Error) => void> = [];

  push(chunk: string): void {
    this.buffered += chunk;
    if (this.buffered.length > MAX_MESSAGE_BYTES) return this.fail(new QmpError(`QMP message longer than ${MAX_MESSAGE_BYTES} bytes`));
    let newline: number;
    while ((newline = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, newline).trim();
      this.buffered = this.buffered.slice(newline + 1);
      if (!line) continue;
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        return this.fail(new QmpError(`QMP: unparsable message ${JSON.stringify(line.slice(0, 120))}`));
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
        return this.fail(new QmpError(`QMP: expected a JSON object, got ${JSON.stringify(line.slice(0, 120))}`));
      }
      const next = this.waiting.shift();
      if (next) next(parsed as QmpMessage);
      else this.ready.push(parsed as QmpMessage);
    }
  }

  fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    for (const reject of this.failed.splice(0)) reject(err);
  }

  /** The next message that is not an asynchronous event. */
  async next(): Promise<QmpMessage> {
    for (;;) {
      const message = await this.nextAny();
      if (!('event' in message)) return message;
    }
  }

  private nextAny(): Promise<QmpMessage> {
    const queued = this.ready.shift();
    if (queued) return Promise.resolve(queued);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting.push(resolve);
      this.failed.push(reject);
    });
  }
}

function replyOf(message: QmpMessage, command: string): unknown {
  if ('return' in message) return message.return;
  const error = message.error as { class?: unknown; desc?: unknown } | undefined;
  if (error && typeof error === 'object') {
    const cls = typeof error.class === 'string' ? error.class : '';
    const desc = typeof error.desc === 'string' ? error.desc : JSON.stringify(error);
    throw new QmpError(`QMP ${command}: ${cls ? `${cls}: ` : ''}${desc}`, cls);
  }
  throw new QmpError(`QMP ${command}: unexpected reply ${JSON.stringify(message).slice(0, 200)}`);
}

/**
 * Runs one QMP command on the monitor at `socketPath` and returns its `return` value. Rejects
 * with QmpError naming the command on a QMP error, a malformed reply, a closed connection or
 * the time bound.
 */
export function qmpExecute(socketPath: string, command: string, args?: Record<string, unknown>, timeoutMs = DEFAULT_QMP_TIMEOUT_MS): Promise<unknown> {
  const socket = net.connect(socketPath);
  const reader = new MessageReader();
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => reader.push(chunk));
  socket.on('error', (err) => reader.fail(new QmpError(`QMP ${command}: ${socketPath}: ${err.message}`)));
  socket.on('close', () => reader.fail(new QmpError(`QMP ${command}: ${socketPath}: connection closed by QEMU`)));
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new QmpError(`QMP ${command}: no answer from ${socketPath} within ${timeoutMs} ms`)), timeoutMs);
  });
  const conversation = (async () => {
    const greeting = await reader.next();
    if (!('QMP' in greeting)) throw new QmpError(`QMP ${command}: ${socketPath} did not greet with QMP: ${JSON.stringify(greeting).slice(0, 200)}`);
    socket.write(`${JSON.stringify({ execute: 'qmp_capabilities' })}\n`);
    replyOf(await reader.next(), 'qmp_capabilities');
    socket.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    return replyOf(await reader.next(), command);
  })();
  return Promise.race([conversation, timeout]).finally(() => {
    clearTimeout(timer);
    conversation.catch(() => undefined);
    socket.destroy();
  });
}

export interface QmpStatus {
  running: boolean;
  /** QEMU's RunState: "running", "paused", "shutdown", … */
  status: string;
}

/** One VM's monitor: commands go out one at a time (QEMU serves one monitor client at once). */
export class QmpChannel {
  private tail: Promise<unknown> = Promise.resolve();

  constructor(readonly socketPath: string, private readonly timeoutMs = DEFAULT_QMP_TIMEOUT_MS) {}

  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const run = this.tail.then(() => qmpExecute(this.socketPath, command, args, this.timeoutMs));
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Stops every vCPU: the guest makes no progress until `cont`. */
  async stop(): Promise<void> {
    await this.execute('stop');
  }

  async cont(): Promise<void> {
    await this.execute('cont');
  }

  async queryStatus(): Promise<QmpStatus> {
    const reply = await this.execute('query-status');
    const r = reply as { running?: unknown; status?: unknown } | null;
    if (!r || typeof r.running !== 'boolean' || typeof r.status !== 'string') {
      throw new QmpError(`QMP query-status: unexpected reply ${JSON.stringify(reply).slice(0, 200)}`);
    }
    return { running: r.running, status: r.status };
  }
}
