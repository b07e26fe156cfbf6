// Publishes task events to containerd, strictly in order: through the ttrpc Events/Forward
// service at TTRPC_ADDRESS (preferred), else through `<publish-binary> publish` (the fallback
// containerd documents). Events queue while containerd is unreachable and go out in order once
// it answers again; a shim never drops /tasks/exit silently.
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
  /** How long to keep retrying one event before giving up on it (containerd down). */
  retryForMs?: number;
}

export class EventPublisher {
  private queue: TopicMessage[] = [];
  private draining: Promise<void> | null = null;
  private client: TtrpcClient | null = null;
  private closed = false;

  constructor(private readonly opts: PublisherOptions) {}

  publish(topic: string, event: Any): void {
    if (this.closed) {
      this.opts.log.warn('event after publisher close dropped', { topic });
      return;
    }
    this.queue.push({ topic, event });
    if (!this.draining) {
      this.draining = this.drain().finally(() => { this.draining = null; });
    }
  }

  /** Resolves when every queued event has been sent (or given up on). */
  async flush(): Promise<void> {
    while (this.draining) await this.draining;
  }

  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    this.client?.close();
    this.client = null;
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const next = this.queue[0]!;
      await this.deliver(next);
      this.queue.shift();
    }
  }

  private async deliver(msg: TopicMessage): Promise<void> {
    const retryFor = this.opts.retryForMs ?? 30_000;
    const deadline = Date.now() + retryFor;
    let delay = 10;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.forward(msg);
        return;
      } catch (err) {
        this.client?.close();
        this.client = null;
        if (Date.now() > deadline) {
          this.opts.log.warn('ttrpc Forward failed; using the publish binary', { topic: msg.topic, error: String(err), attempt });
          try {
            await this.publishWithBinary(msg);
          } catch (binErr) {
            this.opts.log.error('event lost: containerd unreachable', { topic: msg.topic, error: String(binErr) });
          }
          return;
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 1000);
      }
    }
  }

  private async forward(msg: TopicMessage): Promise<void> {
    if (!this.opts.ttrpcAddress) throw new Error('no TTRPC_ADDRESS');
    if (!this.client) this.client = await TtrpcClient.connect(this.opts.ttrpcAddress.replace(/^unix:\/\//, ''));
    await this.client.call(EventsDefinition, 'forward', {
      envelope: { timestamp: timestampNow(), namespace: this.opts.namespace, topic: msg.topic, event: msg.event },
    }, { timeoutMs: 5000 });
  }

  private publishWithBinary(msg: TopicMessage): Promise<void> {
    const payload = Any.encode(msg.event).finish();
    return new Promise((resolve, reject) => {
      const child = spawn(this.opts.publishBinary, ['--address', this.opts.containerdAddress, 'publish', '--topic', msg.topic, '--namespace', this.opts.namespace], { stdio: ['pipe', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
      child.once('error', reject);
      child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`publish exited ${code}: ${stderr.trim()}`))));
      child.stdin!.end(Buffer.from(payload));
    });
  }
}
