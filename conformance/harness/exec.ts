// Run one external command with a hard time bound, optional stdin input, and captured
// stdout/stderr. Tests need the exact bytes, the exit code and whether the bound was hit,
// never a hang: on timeout the child gets SIGKILL (ctr proxies softer signals to the task).
import { spawn } from 'node:child_process';

export interface RunOptions {
  /** Milliseconds before the child is killed with SIGKILL. */
  readonly timeoutMs: number;
  /** Bytes written to the child's stdin, which is then closed. Absent: stdin closed at once. */
  readonly input?: Buffer | string;
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
}

export interface RunResult {
  readonly command: string;
  readonly args: readonly string[];
  readonly stdout: Buffer;
  readonly stderr: Buffer;
  /** Exit code, or null when the child died of a signal. */
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly timedOut: boolean;
  readonly durationMs: number;
}

export class CommandError extends Error {
  constructor(readonly result: RunResult, why: string) {
    super(`${why}\n${describeResult(result)}`);
    this.name = 'CommandError';
  }
}

/** One-paragraph description of a finished command, for assertion messages. */
export function describeResult(result: RunResult, maxChars = 2000): string {
  const status = result.timedOut
    ? `timed out after ${Math.round(result.durationMs)} ms (killed)`
    : result.signal !== null
      ? `killed by ${result.signal}`
      : `exit code ${result.exitCode}`;
  return [
    `command: ${[result.command, ...result.args].join(' ')}`,
    `status: ${status} (${Math.round(result.durationMs)} ms)`,
    `stdout (${result.stdout.length} bytes): ${clip(result.stdout.toString('utf8'), maxChars)}`,
    `stderr (${result.stderr.length} bytes): ${clip(result.stderr.toString('utf8'), maxChars)}`,
  ].join('\n');
}

function clip(text: string, maxChars: number): string {
  return text.length <= maxChars ? text : `${text.slice(0, maxChars)}… [${text.length - maxChars} more chars]`;
}

export function runCommand(command: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const startedAt = process.hrtime.bigint();
    const child = spawn(command, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: options.env ?? process.env,
      cwd: options.cwd,
    });
    const stdoutChunks: Buffer[] = [];
    const stderrChunks: Buffer[] = [];
    let timedOut = false;
    let settled = false;

    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs);

    child.stdout.on('data', (chunk: Buffer) => stdoutChunks.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderrChunks.push(chunk));
    // The child may exit before reading its input (EPIPE): that is its business, not an error.
    child.stdin.on('error', () => undefined);

    child.on('error', (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`cannot run ${command}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({
        command,
        args,
        stdout: Buffer.concat(stdoutChunks),
        stderr: Buffer.concat(stderrChunks),
        exitCode: code,
        signal,
        timedOut,
        // Microsecond resolution: benchmarks take medians of these.
        durationMs: Number((process.hrtime.bigint() - startedAt) / 1_000n) / 1000,
      });
    });

    if (options.input !== undefined) child.stdin.end(options.input);
    else child.stdin.end();
  });
}

/** Like runCommand, but a timeout, a signal or a non-zero exit is an error. */
export async function runChecked(command: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
  const result = await runCommand(command, args, options);
  if (result.timedOut || result.exitCode !== 0) {
    throw new CommandError(result, `${command} ${args.join(' ')} failed`);
  }
  return result;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
