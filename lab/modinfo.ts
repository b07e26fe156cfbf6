// Reads a kernel module's .modinfo section (name=, depends=) straight from the .ko ELF, so the
// lab can order its modules by their real dependencies without modules.dep (Debian's package
// does not ship it: depmod makes it at install time) and without running modinfo(8).

export interface ModuleInfo {
  /** The module's name as the kernel knows it (underscores, e.g. kvm_amd). */
  name: string;
  /** Names of the modules it needs loaded first (possibly empty). */
  depends: string[];
}

const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const SECTION_HEADER_SIZE = 64;

function fail(what: string, file: string): never {
  throw new Error(`kernel module ${file}: ${what}`);
}

/** Bounds-checked u64 read that must fit in a JS number and inside the buffer. */
function offsetAt(elf: Buffer, at: number, file: string, what: string): number {
  if (at + 8 > elf.length) fail(`truncated (${what} at ${at})`, file);
  const value = elf.readBigUInt64LE(at);
  if (value > BigInt(elf.length)) fail(`${what} ${value} points outside the ${elf.length}-byte file`, file);
  return Number(value);
}

/** The bytes of a named section of a little-endian ELF64 file. */
function sectionBytes(elf: Buffer, wanted: string, file: string): Buffer | undefined {
  if (elf.length < 64 || !elf.subarray(0, 4).equals(ELF_MAGIC)) fail('not an ELF file', file);
  if (elf[4] !== ELFCLASS64 || elf[5] !== ELFDATA2LSB) fail('not a little-endian ELF64 file', file);
  const shoff = offsetAt(elf, 0x28, file, 'section header offset');
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  if (shentsize !== SECTION_HEADER_SIZE) fail(`unexpected section header size ${shentsize}`, file);
  if (shoff + shnum * SECTION_HEADER_SIZE > elf.length) fail('section headers run past the end of the file', file);
  if (shstrndx >= shnum) fail('section name table index out of range', file);

  const header = (index: number): { name: number; offset: number; size: number } => {
    const base = shoff + index * SECTION_HEADER_SIZE;
    const offset = offsetAt(elf, base + 0x18, file, 'section offset');
    const size = offsetAt(elf, base + 0x20, file, 'section size');
    if (offset + size > elf.length) fail(`section ${index} runs past the end of the file`, file);
    return { name: elf.readUInt32LE(base), offset, size };
  };
  const names = header(shstrndx);
  for (let i = 0; i < shnum; i++) {
    const h = header(i);
    if (h.name >= names.size) continue;
    const start = names.offset + h.name;
    const end = elf.indexOf(0, start);
    if (end < 0 || end > names.offset + names.size) continue;
    if (elf.toString('latin1', start, end) === wanted) return elf.subarray(h.offset, h.offset + h.size);
  }
  return undefined;
}

/** name= and depends= of a module image (.ko contents, uncompressed). */
export function readModuleInfo(ko: Buffer, file: string): ModuleInfo {
  const modinfo = sectionBytes(ko, '.modinfo', file);
  if (!modinfo) fail('has no .modinfo section', file);
  const fields = new Map<string, string>();
  for (const entry of modinfo.toString('latin1').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq > 0 && !fields.has(entry.slice(0, eq))) fields.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  const name = fields.get('name');
  if (!name) fail('.modinfo has no name=', file);
  const depends = (fields.get('depends') ?? '').split(',').filter((d) => d.length > 0);
  return { name, depends };
}

/** Module names are compared with '-' and '_' as the same character (as the kernel does). */
export function canonicalModuleName(name: string): string {
  return name.replace(/-/g, '_');
}
