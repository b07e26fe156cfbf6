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

/** Asynchronous events kept per connection (a command's connection sees only a few). */
const MAX_EVENTS_KEPT = 256;

/** An asynchronous QMP event: its name and `data`. */
export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
}

/** Splits the stream into JSON messages (QEMU ends each with \r\n). */
class MessageReader {
  private buffered = '';
  private readonly waiting: Array<(m: QmpMessage) => void> = [];
  private readonly ready: QmpMessage[] = [];
  failure: Error | null = null;
  private readonly failed: Array<(e: Error) => void> = [];
  /** Events received on this connection, oldest first (bounded). */
  readonly events: QmpEvent[] = [];
  private readonly eventListeners = new Set<() => void>();

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
      if ('event' in parsed) {
        this.pushEvent(parsed as QmpMessage);
        continue;
      }
      const next = this.waiting.shift();
      if (next) next(parsed as QmpMessage);
      else this.ready.push(parsed as QmpMessage);
    }
  }

  private pushEvent(message: QmpMessage): void {
    const name = typeof message.event === 'string' ? message.event : '';
    const data = typeof message.data === 'object' && message.data !== null && !Array.isArray(message.data)
      ? message.data as Record<string, unknown> : {};
    this.events.push({ event: name, data });
    if (this.events.length > MAX_EVENTS_KEPT) this.events.shift();
    for (const listener of [...this.eventListeners]) listener();
  }

  fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    for (const reject of this.failed.splice(0)) reject(err);
    for (const listener of [...this.eventListeners]) listener();
  }

  /**
   * Whether an event matching `match` arrived (before now or within `timeoutMs`). False on
   * the time bound or when the connection failed first.
   */
  waitEvent(match: (e: QmpEvent) => boolean, timeoutMs: number): Promise<boolean> {
    if (this.events.some(match)) return Promise.resolve(true);
    if (this.failure) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (seen: boolean): void => {
        clearTimeout(timer);
        this.eventListeners.delete(listener);
        resolve(seen);
      };
      const listener = (): void => {
        if (this.events.some(match)) done(true);
        else if (this.failure) done(false);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.eventListeners.add(listener);
    });
  }

  /** The next message that is not an asynchronous event (events are kept in `events`). */
  next(): Promise<QmpMessage> {
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
  return qmpConverse(socketPath, command, args, timeoutMs, null).then((r) => r.reply);
}

/** What to wait for after a command's reply, on the same connection (QEMU sends events to
 *  every monitor connection, so one opened after the event would miss it). */
interface AwaitedEvent {
  match: (e: QmpEvent) => boolean;
  timeoutMs: number;
}

function qmpConverse(
  socketPath: string, command: string, args: Record<string, unknown> | undefined, timeoutMs: number,
  awaited: AwaitedEvent | null,
): Promise<{ reply: unknown; eventSeen: boolean }> {
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
    const reply = replyOf(await reader.next(), command);
    if (!awaited) return { reply, eventSeen: false };
    // Bounded by its own time, not the command's: stop the race's timer first.
    clearTimeout(timer);
    return { reply, eventSeen: await reader.waitEvent(awaited.match, awaited.timeoutMs) };
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

  /**
   * Runs `command`, then waits on the same connection (at most `eventTimeoutMs`) for an event
   * matching `match`, also one that came before the reply. Resolves whether it came.
   */
  executeAwaitingEvent(
    command: string, args: Record<string, unknown>, match: (e: QmpEvent) => boolean, eventTimeoutMs: number,
  ): Promise<boolean> {
    const run = this.tail.then(() =>
      qmpConverse(this.socketPath, command, args, this.timeoutMs, { match, timeoutMs: eventTimeoutMs }));
    this.tail = run.catch(() => undefined);
    return run.then((r) => r.eventSeen);
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
