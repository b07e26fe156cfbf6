// The `smolvm` command: run a container in a microVM without containerd, inspect the host,
// provision the guest kernel.
const USAGE = `usage:
  smolvm run [--backend kvm|tcg|auto] (--rootfs DIR | --bundle DIR) [--] CMD...
  smolvm doctor [--json]
  smolvm kernel build [--force]
  smolvm kernel path
  smolvm pool status | fill [--size N] [--wait] | drain`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'run': {
      const { runCommand } = await import('./run');
      return runCommand(rest);
    }
    case 'doctor': {
      const { doctor } = await import('./doctor');
      return doctor(rest.includes('--json'));
    }
    case 'kernel': {
      const { kernelCommand } = await import('./kernel');
      return kernelCommand(rest);
    }
    case 'pool': {
      const { poolCommand } = await import('./pool');
      return poolCommand(rest);
    }
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE + '\n');
      return cmd ? 0 : 2;
    default:
      process.stderr.write(`smolvm: unknown command ${JSON.stringify(cmd)}\n${USAGE}\n`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    process.stderr.write(`smolvm: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 125;
  },
);
