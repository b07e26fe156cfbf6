// Logging for the shim daemon and the CLI. The daemon writes to the bundle's `log` FIFO
// (containerd copies it into its own log), best effort: while containerd restarts nobody reads
// that FIFO and writes fail with EPIPE or EAGAIN. A log line is never worth a crash or a stall.
import * as fs from 'node:fs';

export type Level = 'debug' | 'info' | 'warn' | 'error';
const order: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

type Sink = (line: string) => void;

/** logfmt-style lines, as containerd's own logs: time=… level=… msg=… key=value. */
function format(level: Level, msg: string, fields: Record<string, unknown>): string {
  const parts = [`time="${new Date().toISOString()}"`, `level=${level}`, `msg=${JSON.stringify(msg)}`];
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    parts.push(`${k}=${typeof v === 'string' && /^[\w./:@-]+$/.test(v) ? v : JSON.stringify(v)}`);
  }
  return parts.join(' ') + '\n';
}

class SinkLogger implements Logger {
  constructor(
    private readonly sink: Sink, private readonly min: Level, private readonly fields: Record<string, unknown>,
    private readonly enabled: (level: Level) => boolean = () => true,
  ) {}
  private emit(level: Level, msg: string, fields?: Record<string, unknown>): void {
    if (order[level] < order[this.min] || !this.enabled(level)) return;
    this.sink(format(level, msg, { ...this.fields, ...fields }));
  }
  debug(msg: string, fields?: Record<string, unknown>): void { this.emit('debug', msg, fields); }
  info(msg: string, fields?: Record<string, unknown>): void { this.emit('info', msg, fields); }
  warn(msg: string, fields?: Record<string, unknown>): void { this.emit('warn', msg, fields); }
  error(msg: string, fields?: Record<string, unknown>): void { this.emit('error', msg, fields); }
  child(fields: Record<string, unknown>): Logger { return new SinkLogger(this.sink, this.min, { ...this.fields, ...fields }, this.enabled); }
}

/** A logger writing to an already-open fd without ever blocking or throwing. */
export function fdLogger(fd: number, min: Level = 'info', fields: Record<string, unknown> = {}): Logger {
  return new SinkLogger((line) => {
    try {
      fs.writeSync(fd, line);
    } catch {
      // EPIPE / EAGAIN while containerd is away: drop the line.
    }
  }, min, fields);
}

/** Where a retargetable logger writes, and from which level: both may change while it runs. */
export interface LogTarget {
  fd: number;
  min: Level;
}

/**
 * A logger whose fd and level can change later (a warm-pool spare logs to a file until a
 * container claims it, then to that bundle's FIFO): every child follows the change.
 */
export function retargetableLogger(target: LogTarget, fields: Record<string, unknown> = {}): Logger {
  return new SinkLogger((line) => {
    try {
      fs.writeSync(target.fd, line);
    } catch {
      // EPIPE / EAGAIN while containerd is away: drop the line.
    }
  }, 'debug', fields, (level) => order[level] >= order[target.min]);
}

/**
 * Opens the bundle's log FIFO without blocking: O_RDWR keeps it open even with no reader, and
 * O_NONBLOCK turns a full pipe into a dropped line instead of a stalled daemon.
 */
export function openLogFifo(path: string): number | null {
  try {
    return fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  } catch {
    return null;
  }
}

export function stderrLogger(min: Level = 'info', fields: Record<string, unknown> = {}): Logger {
  return fdLogger(2, min, fields);
}

export const nullLogger: Logger = new SinkLogger(() => undefined, 'error', {});
