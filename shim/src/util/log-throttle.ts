// A token bucket for log lines a peer can trigger at will (one per frame it sends): a hostile
// guest agent must not be able to flood the shim's log, which containerd copies into its own.
// The first `burst` lines pass, then about `perSecond`; the next line that passes says how
// many were held back meanwhile.

export interface LogThrottleOptions {
  /** Lines that may pass at once. */
  readonly burst?: number;
  /** Lines per second in the long run. */
  readonly perSecond?: number;
  /** Clock in milliseconds (tests). */
  readonly now?: () => number;
}

export class LogThrottle {
  private readonly burst: number;
  private readonly perSecond: number;
  private readonly now: () => number;
  private tokens: number;
  private last: number;
  private held = 0;

  constructor(options: LogThrottleOptions = {}) {
    this.burst = options.burst ?? 10;
    this.perSecond = options.perSecond ?? 1;
    this.now = options.now ?? Date.now;
    this.tokens = this.burst;
    this.last = this.now();
  }

  /**
   * Whether a line may be written now: the number of lines suppressed since the last one that
   * passed (0 or more), or null when this one must be dropped.
   */
  admit(): number | null {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
    if (this.tokens < 1) {
      this.held += 1;
      return null;
    }
    this.tokens -= 1;
    const held = this.held;
    this.held = 0;
    return held;
  }

  /** Lines dropped since the last one that passed. */
  get suppressed(): number {
    return this.held;
  }
}

/** `fields` plus `suppressed=N` when lines were held back before this one. */
export function withSuppressed(fields: Record<string, unknown> | undefined, held: number): Record<string, unknown> | undefined {
  return held > 0 ? { ...fields, suppressed: held } : fields;
}
