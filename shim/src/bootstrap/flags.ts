// The shim's command line as containerd passes it: Go `flag` style, e.g.
//   -namespace NS -address /run/containerd/containerd.sock -publish-binary /usr/bin/containerd
//   -id ID [-debug] [-bundle PATH] start|delete
export interface ShimFlags {
  namespace: string;
  address: string;
  publishBinary: string;
  id: string;
  bundle: string;
  debug: boolean;
  version: boolean;
  /** start | delete | (empty: containerd never calls us without one) */
  action: string;
}

const valueFlags: Record<string, keyof ShimFlags> = {
  namespace: 'namespace',
  address: 'address',
  'publish-binary': 'publishBinary',
  id: 'id',
  bundle: 'bundle',
  socket: 'address', // 2.x may pass -socket; treat like -address for our purposes
};

export function parseShimFlags(argv: readonly string[]): ShimFlags {
  const flags: ShimFlags = { namespace: '', address: '', publishBinary: '', id: '', bundle: '', debug: false, version: false, action: '' };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('-')) {
      if (flags.action) throw new Error(`unexpected argument ${JSON.stringify(arg)} after ${flags.action}`);
      flags.action = arg;
      continue;
    }
    let name = arg.replace(/^--?/, '');
    let value: string | undefined;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    if (name === 'debug' || name === 'v' || name === 'version') {
      if (name === 'debug') flags.debug = value === undefined ? true : value !== 'false';
      else flags.version = true;
      continue;
    }
    const key = valueFlags[name];
    if (!key) {
      // Unknown flags from newer containerd versions take a value; skip it rather than fail.
      if (value === undefined && i + 1 < argv.length && !argv[i + 1]!.startsWith('-')) i++;
      continue;
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new Error(`flag needs an argument: -${name}`);
      value = argv[++i]!;
    }
    (flags as unknown as Record<string, string>)[key] = value;
  }
  return flags;
}
