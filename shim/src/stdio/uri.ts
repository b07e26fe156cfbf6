// The stdio paths of CreateTaskRequest/ExecProcessRequest, as containerd's runc shim reads
// them: "" = absent; a bare path or fifo:// = a FIFO the client made; file:///path = append
// stdout and stderr to one file; binary:///path?k=v = a logging binary fed through pipes.
// As in the runc shim, stdout's URI decides where both outputs go (ctr --log-uri sets both).
import { invalidArgument } from '../errdefs';

export type StdioTarget =
  | { kind: 'none' }
  | { kind: 'fifo'; path: string }
  | { kind: 'file'; path: string }
  /** args: the query's keys each followed by its first value, in the URI's order. */
  | { kind: 'binary'; path: string; args: string[] };

const SCHEME = /^([a-z][a-z0-9+.-]*):/i;

function decodedPath(url: URL, uri: string, stream: string): string {
  if (url.host) throw invalidArgument(`${stream}: ${JSON.stringify(uri)}: a ${url.protocol}// URI takes no host (use ${url.protocol}///absolute/path)`);
  let decoded: string;
  try {
    decoded = decodeURIComponent(url.pathname);
  } catch {
    throw invalidArgument(`${stream}: ${JSON.stringify(uri)}: bad percent-encoding in the path`);
  }
  if (!decoded.startsWith('/') || decoded === '/') throw invalidArgument(`${stream}: ${JSON.stringify(uri)}: needs an absolute path`);
  if (decoded.includes('\0')) throw invalidArgument(`${stream}: ${JSON.stringify(uri)}: NUL in the path`);
  return decoded;
}

/** Go's url.Query() then `for k, vs := range q { args = append(args, k, vs[0]) }`, in order. */
function queryArgs(url: URL): string[] {
  const args: string[] = [];
  const seen = new Set<string>();
  for (const [key, value] of url.searchParams) {
    if (seen.has(key)) continue;
    seen.add(key);
    args.push(key, value);
  }
  return args;
}

export function parseStdioUri(uri: string, stream: string): StdioTarget {
  if (!uri) return { kind: 'none' };
  if (uri.startsWith('/')) return { kind: 'fifo', path: uri };
  const scheme = SCHEME.exec(uri)?.[1]?.toLowerCase();
  if (!scheme) throw invalidArgument(`${stream}: ${JSON.stringify(uri)} is neither an absolute path nor a URI`);
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw invalidArgument(`${stream}: ${JSON.stringify(uri)} is not a valid URI`);
  }
  switch (scheme) {
    case 'fifo':
      return { kind: 'fifo', path: decodedPath(url, uri, stream) };
    case 'file':
      if (url.search) throw invalidArgument(`${stream}: ${JSON.stringify(uri)}: a file:// URI takes no query`);
      return { kind: 'file', path: decodedPath(url, uri, stream) };
    case 'binary':
      return { kind: 'binary', path: decodedPath(url, uri, stream), args: queryArgs(url) };
    default:
      throw invalidArgument(`${stream}: unsupported stdio URI scheme ${scheme}:// in ${JSON.stringify(uri)} (supported: a FIFO path, fifo://, file://, binary://)`);
  }
}
