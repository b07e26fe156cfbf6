// A small TOML reader for smolvm's config: tables, dotted-free keys, strings, integers,
// floats, booleans and flat arrays of those. Errors name the file and line.
export type TomlValue = string | number | boolean | TomlValue[] | TomlTable;
export interface TomlTable { [key: string]: TomlValue }

function parseScalar(text: string, where: string): TomlValue {
  const t = text.trim();
  if (t.startsWith('"')) {
    if (!t.endsWith('"') || t.length < 2) throw new Error(`${where}: unterminated string`);
    return JSON.parse(t) as string;
  }
  if (t.startsWith("'")) {
    if (!t.endsWith("'") || t.length < 2) throw new Error(`${where}: unterminated string`);
    return t.slice(1, -1);
  }
  if (t === 'true') return true;
  if (t === 'false') return false;
  if (t.startsWith('[')) {
    if (!t.endsWith(']')) throw new Error(`${where}: unterminated array`);
    const inner = t.slice(1, -1).trim();
    if (!inner) return [];
    return splitTopLevel(inner).filter((s) => s.trim()).map((s) => parseScalar(s, where));
  }
  const num = t.replace(/_/g, '');
  if (/^[+-]?\d+$/.test(num)) return Number.parseInt(num, 10);
  if (/^[+-]?(\d+\.\d*|\d*\.\d+)([eE][+-]?\d+)?$/.test(num)) return Number.parseFloat(num);
  throw new Error(`${where}: cannot parse value ${JSON.stringify(t)}`);
}

function splitTopLevel(s: string): string[] {
  const out: string[] = [];
  let depth = 0, quote = '', cur = '';
  for (const ch of s) {
    if (quote) { cur += ch; if (ch === quote) quote = ''; continue; }
    if (ch === '"' || ch === "'") { quote = ch; cur += ch; continue; }
    if (ch === '[') depth++;
    if (ch === ']') depth--;
    if (ch === ',' && depth === 0) { out.push(cur); cur = ''; continue; }
    cur += ch;
  }
  out.push(cur);
  return out;
}

function stripComment(line: string): string {
  let quote = '';
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quote) { if (ch === quote) quote = ''; continue; }
    if (ch === '"' || ch === "'") quote = ch;
    else if (ch === '#') return line.slice(0, i);
  }
  return line;
}

export function parseToml(text: string, file = 'config'): TomlTable {
  const root: TomlTable = {};
  let table = root;
  text.split('\n').forEach((raw, i) => {
    const where = `${file}:${i + 1}`;
    const line = stripComment(raw).trim();
    if (!line) return;
    const header = /^\[([A-Za-z0-9_.-]+)\]$/.exec(line);
    if (header) {
      table = root;
      for (const part of header[1]!.split('.')) {
        const next = table[part] ?? {};
        if (typeof next !== 'object' || Array.isArray(next)) throw new Error(`${where}: ${part} is not a table`);
        table[part] = next;
        table = next;
      }
      return;
    }
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`${where}: expected key = value`);
    const key = line.slice(0, eq).trim().replace(/^"(.*)"$/, '$1');
    if (!/^[A-Za-z0-9_-]+$/.test(key)) throw new Error(`${where}: bad key ${JSON.stringify(key)}`);
    if (key in table) throw new Error(`${where}: duplicate key ${key}`);
    table[key] = parseScalar(line.slice(eq + 1), where);
  });
  return root;
}
