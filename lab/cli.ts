// Runs one command in the KVM lab by hand:
//   node dist/lab/cli.js [--timeout SECONDS] [--machine pc|q35] [--cwd DIR] [--env K=V]... [--] CMD...
// Prints the command's stdout/stderr, timings on stderr, and exits with the command's code.
import { type LabMachine, runInLab } from './lab';

const USAGE = 'usage: node dist/lab/cli.js [--timeout SECONDS] [--machine pc|q35] [--cwd DIR] [--env K=V]... [--console|--verbose-console] [--] CMD...';

async function main(argv: string[]): Promise<number> {
  let timeoutMs = 300_000;
  let machine: LabMachine = 'pc';
  let cwd: string | undefined;
  let showConsole = false;
  let verboseConsole = false;
  const env: Record<string, string> = {};
  let i = 0;
  const value = (flag: string): string => {
    const v = argv[++i];
    if (v === undefined) throw new Error(`${flag} needs a value\n${USAGE}`);
    return v;
  };
  for (; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') { i++; break; }
    if (!arg.startsWith('--')) break;
    if (arg === '--timeout') {
      const seconds = Number(value(arg));
      if (!Number.isFinite(seconds) || seconds <= 0) throw new Error(`--timeout must be a positive number of seconds`);
      timeoutMs = seconds * 1000;
    } else if (arg === '--machine') {
      const m = value(arg);
      if (m !== 'pc' && m !== 'q35') throw new Error(`--machine must be pc or q35, got ${JSON.stringify(m)}`);
      machine = m;
    } else if (arg === '--cwd') {
      cwd = value(arg);
    } else if (arg === '--env') {
      const kv = value(arg);
      const eq = kv.indexOf('=');
      if (eq <= 0) throw new Error(`--env needs NAME=VALUE, got ${JSON.stringify(kv)}`);
      env[kv.slice(0, eq)] = kv.slice(eq + 1);
    } else if (arg === '--console') {
      showConsole = true;
    } else if (arg === '--verbose-console') {
      showConsole = true;
      verboseConsole = true;
    } else {
      throw new Error(`unknown flag ${arg}\n${USAGE}`);
    }
  }
  const command = argv.slice(i);
  if (command.length === 0) throw new Error(`no command given\n${USAGE}`);
  const result = await runInLab(command, {
    timeoutMs, machine, cwd, env, verboseConsole,
    log: (line) => process.stderr.write(line + '\n'),
  });
  process.stdout.write(result.stdout);
  process.stderr.write(result.stderr);
  if (showConsole) process.stderr.write(`--- L1 console ---\n${result.consoleLog}\n`);
  process.stderr.write(`lab: L1 ${result.kernelRelease} booted in ${result.bootMs} ms, command ran ${result.commandMs} ms, ` +
    `total ${result.totalMs} ms, exit ${result.exitCode}\n`);
  return result.exitCode;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    process.stderr.write(`lab: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 125;
  },
);
