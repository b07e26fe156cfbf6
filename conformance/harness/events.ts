// `ctr events` in the background: collects the event stream, parsed, so a test can check which
// topics came for one container and in what order.
import { ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { CTR_BINARY, PrivateContainerd } from './containerd';
import { sleep } from './exec';

export interface ObservedEvent {
  readonly namespace: string;
  readonly topic: string;
  /** The event decoded by ctr, as JSON (undefined when ctr printed something unparsable). */
  readonly payload: Record<string, unknown> | undefined;
  readonly raw: string;
}

// ctr 1.6 prints: `<timestamp with spaces> <namespace> <topic> <json>`.
const EVENT_LINE = /\s(\S+)\s(\/[A-Za-z0-9_\-/]+)\s(\{.*\})\s*$/;

export class EventWatcher {
  readonly events: ObservedEvent[] = [];
  private stderr = '';
  private pending = '';
  private exited = false;

  private constructor(private readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => this.consume(chunk));
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    child.on('exit', () => {
      this.exited = true;
    });
    child.on('error', () => {
      this.exited = true;
    });
  }

  /**
   * Start `ctr events` and wait until it is subscribed: we label our namespace with a fresh
   * value and wait to see that /namespaces/update come through.
   */
  static async start(containerd: PrivateContainerd, readyTimeoutMs = 10_000): Promise<EventWatcher> {
    const child = spawn(CTR_BINARY, ['--address', containerd.address, '-n', containerd.namespace, 'events'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const watcher = new EventWatcher(child);
    const deadline = Date.now() + readyTimeoutMs;
    try {
      while (Date.now() < deadline) {
        const token = randomBytes(4).toString('hex');
        await containerd.ctrChecked(['namespaces', 'label', containerd.namespace, `conformance.events-ready=${token}`], {
          timeoutMs: 10_000,
        });
        const seen = await watcher.waitFor((e) => e.topic === '/namespaces/update' && e.raw.includes(token), 1_000);
        if (seen) return watcher;
        if (watcher.exited) break;
      }
    } catch (err) {
      watcher.stop();
      throw err;
    }
    watcher.stop();
    throw new Error(`ctr events did not deliver a marker event within ${readyTimeoutMs} ms; stderr: ${watcher.stderr}`);
  }

  private consume(chunk: string): void {
    this.pending += chunk;
    let newline: number;
    while ((newline = this.pending.indexOf('\n')) !== -1) {
      const line = this.pending.slice(0, newline);
      this.pending = this.pending.slice(newline + 1);
      const match = EVENT_LINE.exec(line);
      if (!match) continue;
      let payload: Record<string, unknown> | undefined;
      try {
        payload = JSON.parse(match[3] ?? '') as Record<string, unknown>;
      } catch {
        payload = undefined;
      }
      this.events.push({ namespace: match[1] ?? '', topic: match[2] ?? '', payload, raw: line });
    }
  }

  /** Wait until an event matching `predicate` has arrived; false after `timeoutMs`. */
  async waitFor(predicate: (event: ObservedEvent) => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.events.some(predicate)) return true;
      if (Date.now() >= deadline || this.exited) return false;
      await sleep(25);
    }
  }

  /** Task events (topics under /tasks/) whose payload names this container. */
  taskEventsFor(containerId: string): ObservedEvent[] {
    return this.events.filter((e) => e.topic.startsWith('/tasks/') && e.payload?.container_id === containerId);
  }

  get errorOutput(): string {
    return this.stderr;
  }

  stop(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }
}
