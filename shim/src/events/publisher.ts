// Publishes task events to containerd, strictly in order: through the ttrpc Events/Forward
// service at TTRPC_ADDRESS (preferred), else through `<publish-binary> publish` (the fallback
// containerd documents). While containerd is unreachable (restarting) events queue, with no
// time limit, and go out in order once it answers again: a shim never drops /tasks/exit
// because containerd was away. The queue is bounded in size: past the bound, new events are
// dropped with an error in the log naming each one.
import { spawn } from 'node:child_process';
import { EventsDefinition } from '../gen/containerd/services/events/events';
import { Any } from '../gen/google/protobuf/any';
import type { Logger } from '../log';
import { TtrpcClient } from '../ttrpc/client';
import { timestampNow } from '../util/time';

export interface TopicMessage {
  topic: string;
  /** containerd.events.TaskExit etc.: the bare type name, no type.googleapis.com/ prefix. */
  event: Any;
}

export interface PublisherOptions {
  namespace: string;
  /** containerd's ttrpc socket (TTRPC_ADDRESS). */
  ttrpcAddress: string;
  /** containerd's grpc address and binary, for the `publish` fallback. */
  containerdAddress: string;
  publishBinary: string;
  log: Logger;
  /**
   * How long Forward alone is retried for one event before the publish binary is tried as
   * well; both then keep being retried until one works (or close()).
   */
  retryForMs?: number;
  /** Most events held while containerd is away. */
  maxQueued?: number;
  /** Longest pause between two delivery attempts. */
  maxBackoffMs?: number;
  /** Bound on close(): what is still undelivered then is logged as lost. */
  closeTimeoutMs?: number;
}

export const DEFAULT_MAX_QUEUED = 10_000;
const DEFAULT_RETRY_FOR_MS = 30_000;
const DEFAULT_MAX_BACKOFF_MS = 1_000;
const DEFAULT_CLOSE_TIMEOUT_MS = 5_000;
const FORWARD_TIMEOUT_MS = 5_000;
/** `containerd publish` dials containerd: bound it, or a hung dial would stall the queue. */
const PUBLISH_BINARY_TIMEOUT_MS = 10_000;

export class EventPublisher {
  private queue: TopicMessage[] = [];
  private draining: Promise<void> | null = null;
  private client: TtrpcClient | null = null;
  private closed = false;
  /** close() gave up waiting: the drain loop stops at its next attempt. */
  private abandoned = false;
  private wake: (() => void) | null = null;
  /** When the current outage began (first failed attempt), for the logs. */
  private unreachableSince: number | null = null;
  private dropped = 0;

  constructor(private readonly opts: PublisherOptions) {}

  /** Events waiting to be delivered (the one in flight included). */
  get pending(): number {
    return this.queue.length;
  }

  publish(topic: string, event: Any): void {
    if (this.closed) {
      this.opts.log.error('event lost: published after the publisher closed', { topic });
      return;
    }
    const limit = this.opts.maxQueued ?? DEFAULT_MAX_QUEUED;
    if (this.queue.length >= limit) {
      this.dropped++;
      this.opts.log.error('event lost: the event queue is full while containerd is unreachable', {
        topic, queued: this.queue.length, limit, dropped_total: this.dropped,
      });
      return;
    }
    this.queue.push({ topic, event });
    if (!this.draining) {
      this.draining = this.drain().finally(() => { this.draining = null; });
    }
  }

  /** Resolves when every queued event has been sent. */
  async flush(): Promise<void> {
    while (this.draining) await this.draining;
  }

  /**
   * Delivers what is queued (waiting at most closeTimeoutMs), then refuses new events. What
   * could not be delivered in time is logged, event by event, as lost.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const bound = this.opts.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    const inTime = await Promise.race([
      this.flush().then(() => true),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), bound); }),
    ]);
    clearTimeout(timer);
    if (!inTime) {
      this.abandoned = true;
      this.wake?.();
      for (const msg of this.queue) {
        this.opts.log.error('event lost: containerd unreachable at shutdown', { topic: msg.topic, waited_ms: bound });
      }
      await this.flush();
      this.queue = [];
    }
    this.client?.close();
    this.client = null;
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0 && !this.abandoned) {
      const next = this.queue[0]!;
      if (!(await this.deliver(next))) return;
      this.queue.shift();
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.wake = null; resolve(); }, ms);
      this.wake = () => { clearTimeout(timer); this.wake = null; resolve(); };
    });
  }

  /** True once delivered; false when close() abandoned it. */
  private async deliver(msg: TopicMessage): Promise<boolean> {
    const firstAttempt = Date.now();
    const forwardOnlyFor = this.opts.retryForMs ?? DEFAULT_RETRY_FOR_MS;
    const maxBackoff = this.opts.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS;
    let delay = 10;
    let binaryTries = 0;
    for (let attempt = 1; !this.abandoned; attempt++) {
      let failure: unknown;
      // A connection kept from before a containerd restart fails once: retry on a fresh one
      // at once before calling containerd unreachable.
      const reused = this.client !== null;
      for (const fresh of reused ? [false, true] : [true]) {
        try {
          await this.forward(msg);
          this.reachable();
          return true;
        } catch (err) {
          failure = err;
          this.client?.close();
          this.client = null;
          if (fresh) break;
        }
      }
      // The binary is a process per attempt: past the Forward-only period, one try in ten.
      if (Date.now() - firstAttempt > forwardOnlyFor && this.opts.publishBinary && (binaryTries++ % 10 === 0)) {
        try {
          await this.publishWithBinary(msg);
          this.reachable();
          return true;
        } catch (binErr) {
          failure = `${String(failure)}; publish binary: ${String(binErr)}`;
        }
      }
      if (this.unreachableSince === null) {
        this.unreachableSince = Date.now();
        this.opts.log.warn('containerd unreachable: holding events until it answers again', {
          topic: msg.topic, queued: this.queue.length, error: String(failure),
        });
      } else if (attempt % 60 === 0) {
        this.opts.log.warn('containerd still unreachable', {
          topic: msg.topic, queued: this.queue.length, since_ms: Date.now() - this.unreachableSince, error: String(failure),
        });
      }
      await this.sleep(delay);
      delay = Math.min(delay * 2, maxBackoff);
    }
    return false;
  }

  private reachable(): void {
    if (this.unreachableSince === null) return;
    this.opts.log.info('containerd reachable again: delivering held events in order', {
      away_ms: Date.now() - this.unreachableSince, queued: this.queue.length,
    });
    this.unreachableSince = null;
  }

  private async forward(msg: TopicMessage): Promise<void> {
    if (!this.opts.ttrpcAddress) throw new Error('no TTRPC_ADDRESS');
    if (!this.client) this.client = await TtrpcClient.connect(this.opts.ttrpcAddress.replace(/^unix:\/\//, ''));
    await this.client.call(EventsDefinition, 'forward', {
      envelope: { timestamp: timestampNow(), namespace: this.opts.namespace, topic: msg.topic, event: msg.event },
    }, { timeoutMs: FORWARD_TIMEOUT_MS });
  }

  private publishWithBinary(msg: TopicMessage): Promise<void> {
    const payload = Any.encode(msg.event).finish();
    return new Promise((resolve, reject) => {
      const child = spawn(this.opts.publishBinary, ['--address', this.opts.containerdAddress, 'publish', '--topic', msg.topic, '--namespace', this.opts.namespace], { stdio: ['pipe', 'ignore', 'pipe'] });
      let stderr = '';
      const timer = setTimeout(() => child.kill('SIGKILL'), PUBLISH_BINARY_TIMEOUT_MS);
      child.stderr!.on('data', (d: Buffer) => { if (stderr.length < 4096) stderr += d.toString(); });
      child.stdin!.on('error', () => undefined);
      child.once('error', (err) => { clearTimeout(timer); reject(err); });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        if (code === 0) resolve();
        else reject(new Error(`publish exited ${signal ? `on ${signal}` : code}: ${stderr.trim()}`));
      });
      child.stdin!.end(Buffer.from(payload));
    });
  }
}
