// Fast checks of the lab's parts (no VM): module dependency ordering from .modinfo, the
// command script's quoting, the init script's syntax, bzImage/ELF parsing, input validation.
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { bzImagePayload, hasPvhEntry } from '../../lab/bzimage';
import { labInitScript } from '../../lab/initramfs';
import { collectModules, ensureLabKernel } from '../../lab/kernel';
import { commandScript, LabStallError, retryStallOnce, runInLab } from '../../lab/lab';
import { readModuleInfo } from '../../lab/modinfo';

/** A minimal ELF64 relocatable with a .modinfo section, like a .ko as far as we read it. */
function fakeKo(fields: Record<string, string>): Buffer {
  const modinfo = Buffer.from(Object.entries(fields).map(([k, v]) => `${k}=${v}\0`).join(''), 'latin1');
  const shstrtab = Buffer.from('\0.shstrtab\0.modinfo\0', 'latin1');
  const headerSize = 64;
  const shstrtabOffset = headerSize;
  const modinfoOffset = shstrtabOffset + shstrtab.length;
  const shoff = Math.ceil((modinfoOffset + modinfo.length) / 8) * 8;
  const elf = Buffer.alloc(shoff + 3 * 64);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(elf, 0);
  elf.writeUInt16LE(1, 0x10); // ET_REL
  elf.writeUInt16LE(62, 0x12); // EM_X86_64
  elf.writeBigUInt64LE(BigInt(shoff), 0x28);
  elf.writeUInt16LE(64, 0x3a);
  elf.writeUInt16LE(3, 0x3c);
  elf.writeUInt16LE(1, 0x3e);
  shstrtab.copy(elf, shstrtabOffset);
  modinfo.copy(elf, modinfoOffset);
  const section = (index: number, name: number, type: number, offset: number, size: number): void => {
    const base = shoff + index * 64;
    elf.writeUInt32LE(name, base);
    elf.writeUInt32LE(type, base + 4);
    elf.writeBigUInt64LE(BigInt(offset), base + 0x18);
    elf.writeBigUInt64LE(BigInt(size), base + 0x20);
  };
  section(1, 1, 3 /* SHT_STRTAB */, shstrtabOffset, shstrtab.length);
  section(2, 11, 1 /* SHT_PROGBITS */, modinfoOffset, modinfo.length);
  return elf;
}

describe('lab parts', () => {
  let tmp: string;
  beforeEach(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-lab-parts-')); });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  describe('modinfo', () => {
    it('reads name and depends from a .ko', () => {
      const info = readModuleInfo(fakeKo({ license: 'GPL', depends: 'kvm,ccp', name: 'kvm_amd' }), 'kvm-amd.ko');
      assert.deepEqual(info, { name: 'kvm_amd', depends: ['kvm', 'ccp'] });
      assert.deepEqual(readModuleInfo(fakeKo({ depends: '', name: 'virtio' }), 'x.ko').depends, []);
    });

    it('names the file when the ELF is bad', () => {
      assert.throws(() => readModuleInfo(Buffer.from('not an elf at all, not an elf at all, not an elf at all, padding....'), 'bad.ko'),
        /bad\.ko: not an ELF file/);
      const truncated = fakeKo({ name: 'x' }).subarray(0, 100);
      assert.throws(() => readModuleInfo(truncated, 'short.ko'), /short\.ko: section headers run past the end/);
      const noModinfo = fakeKo({ name: 'x' });
      noModinfo.writeUInt16LE(2, 0x3c); // hide the .modinfo section
      assert.throws(() => readModuleInfo(noModinfo, 'plain.ko'), /plain\.ko: has no \.modinfo section/);
    });
  });

  describe('collectModules', () => {
    function tree(modules: Record<string, Record<string, string>>, builtin: string[]): string {
      const root = path.join(tmp, 'lib', 'modules', '6.1.0-test');
      for (const [file, fields] of Object.entries(modules)) {
        fs.mkdirSync(path.join(root, 'kernel', path.dirname(file)), { recursive: true });
        fs.writeFileSync(path.join(root, 'kernel', file), fakeKo(fields));
      }
      fs.writeFileSync(path.join(root, 'modules.builtin'), builtin.map((b) => `kernel/${b}\n`).join(''));
      return root;
    }

    it('orders dependencies first, once, and reports built-ins', async () => {
      const root = tree({
        'arch/x86/kvm/kvm-amd.ko': { name: 'kvm_amd', depends: 'kvm,ccp' },
        'arch/x86/kvm/kvm.ko': { name: 'kvm', depends: 'irqbypass' },
        'virt/lib/irqbypass.ko': { name: 'irqbypass', depends: '' },
        'drivers/crypto/ccp/ccp.ko': { name: 'ccp', depends: '' },
      }, ['fs/overlayfs/overlay.ko']);
      const dest = path.join(tmp, 'out');
      fs.mkdirSync(dest);
      const result = await collectModules(root, ['overlay', 'kvm-amd', 'kvm'], dest);
      assert.deepEqual(result.loadOrder, ['irqbypass', 'kvm', 'ccp', 'kvm_amd']);
      assert.deepEqual(result.builtin, ['overlay']);
      assert.deepEqual(fs.readdirSync(dest).sort(), ['ccp.ko', 'irqbypass.ko', 'kvm.ko', 'kvm_amd.ko']);
    });

    it('names a module that is neither a module nor built in, and who needs it', async () => {
      const root = tree({ 'fs/9p/9p.ko': { name: '9p', depends: '9pnet,netfs' }, 'net/9p/9pnet.ko': { name: '9pnet', depends: '' } }, []);
      const dest = path.join(tmp, 'out');
      fs.mkdirSync(dest);
      await assert.rejects(collectModules(root, ['9p'], dest), /kernel module netfs \(needed by 9p\) is neither a module nor built into/);
    });

    it('rejects a dependency loop', async () => {
      const root = tree({ 'a.ko': { name: 'a', depends: 'b' }, 'b.ko': { name: 'b', depends: 'a' } }, []);
      const dest = path.join(tmp, 'out');
      fs.mkdirSync(dest);
      await assert.rejects(collectModules(root, ['a'], dest), /dependency loop through a/);
    });
  });

  describe('ensureLabKernel without apt', () => {
    let savedPath: string | undefined;
    beforeEach(() => { savedPath = process.env.PATH; process.env.PATH = path.join(tmp, 'no-bin'); });
    afterEach(() => { process.env.PATH = savedPath; });

    it('fails naming apt-cache when nothing is cached', async () => {
      await assert.rejects(ensureLabKernel(tmp), /lab: resolving linux-image-amd64: apt-cache is not installed/);
    });

    it('falls back to a complete cached kernel, with a warning', async () => {
      const dir = path.join(tmp, 'lab', '6.1.0-1-amd64_6.1.1-1');
      fs.mkdirSync(path.join(dir, 'modules'), { recursive: true });
      for (const f of ['vmlinuz', 'vmlinux', 'modules/kvm.ko']) fs.writeFileSync(path.join(dir, f), 'x');
      fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({
        layout: 2, package: 'linux-image-6.1.0-1-amd64', debianVersion: '6.1.1-1', release: '6.1.0-1-amd64',
        bootImage: 'vmlinux', loadOrder: ['kvm'], builtin: [],
      }));
      const lines: string[] = [];
      const kernel = await ensureLabKernel(tmp, (l) => lines.push(l));
      assert.equal(kernel.release, '6.1.0-1-amd64');
      assert.deepEqual(kernel.modules, [path.join(dir, 'modules', 'kvm.ko')]);
      assert.equal(kernel.bootImage, path.join(dir, 'vmlinux'));
      assert.match(lines.join('\n'), /warning: .*apt-cache is not installed.*using the cached linux-image-6\.1\.0-1-amd64 6\.1\.1-1/);
    });
  });

  describe('command script', () => {
    it('passes argv, env and cwd through /bin/sh exactly', () => {
      const argv = ['printf', '[%s]\\n', "it's", 'two words', '$HOME', '`id`', '"q"', '', 'a\nb'];
      const script = commandScript(argv, { GREETING: "hello 'world' $x" }, tmp);
      const file = path.join(tmp, 'command.sh');
      fs.writeFileSync(file, script + 'echo unreachable\n');
      const out = execFileSync('/bin/sh', [file], { encoding: 'utf8' });
      assert.equal(out, "[it's]\n[two words]\n[$HOME]\n[`id`]\n[\"q\"]\n[]\n[a\nb]\n");
      const envAndCwd = commandScript(['sh', '-c', 'echo "$GREETING"; pwd'], { GREETING: "hello 'world' $x" }, tmp);
      const env = execFileSync('/bin/sh', ['-c', envAndCwd], { encoding: 'utf8' });
      assert.equal(env, `hello 'world' $x\n${fs.realpathSync(tmp)}\n`);
    });
  });

  describe('init scripts', () => {
    it('the L1 init is valid busybox sh', () => {
      const file = path.join(tmp, 'init');
      fs.writeFileSync(file, labInitScript());
      execFileSync('/bin/busybox', ['sh', '-n', file]);
    });

    it('l2-boot.sh is valid sh', () => {
      execFileSync('/bin/sh', ['-n', path.join(__dirname, '..', '..', '..', 'lab', 'l2-boot.sh')]);
    });
  });

  describe('bzImage and ELF parsing', () => {
    it('rejects what is not a bzImage', () => {
      assert.throws(() => bzImagePayload(Buffer.alloc(4096)), /not a bzImage/);
      const header = Buffer.alloc(4096);
      header.write('HdrS', 0x202, 'latin1');
      header.writeUInt16LE(0x20f, 0x206);
      header.writeUInt32LE(100, 0x248);
      header.writeUInt32LE(1 << 30, 0x24c);
      assert.throws(() => bzImagePayload(header), /payload out of range/);
    });

    it('finds no PVH note in a non-ELF or a note-less ELF', () => {
      assert.equal(hasPvhEntry(Buffer.alloc(128)), false);
      assert.equal(hasPvhEntry(fakeKo({ name: 'x' })), false);
    });
  });

  describe('runInLab input checks (fail fast, boot nothing)', () => {
    const before = (): string[] => fs.readdirSync(os.tmpdir()).filter((n) => /^smolvm-lab-[^p]/.test(n));
    const cases: Array<[string, () => Promise<unknown>, RegExp]> = [
      ['empty command', () => runInLab([], { timeoutMs: 1000 }), /command is empty/],
      ['empty program', () => runInLab([''], { timeoutMs: 1000 }), /command\[0\] \(the program\) is empty/],
      ['NUL in an argument', () => runInLab(['echo', 'a\0b'], { timeoutMs: 1000 }), /command\[1\] contains a NUL byte/],
      ['zero timeout', () => runInLab(['true'], { timeoutMs: 0 }), /timeoutMs must be a positive number/],
      ['NaN timeout', () => runInLab(['true'], { timeoutMs: Number.NaN }), /timeoutMs must be a positive number/],
      ['bad env name', () => runInLab(['true'], { timeoutMs: 1000, env: { 'A-B': 'x' } }), /bad environment variable name "A-B"/],
      ['relative cwd', () => runInLab(['true'], { timeoutMs: 1000, cwd: 'work' }), /cwd must be an absolute path/],
      ['tiny memory', () => runInLab(['true'], { timeoutMs: 1000, memoryMiB: 64 }), /memoryMiB must be an integer >= 512/],
      ['zero stall bound', () => runInLab(['true'], { timeoutMs: 1000, stallMs: 0 }), /stallMs must be a positive number/],
    ];
    for (const [what, call, message] of cases) {
      it(`rejects ${what}`, async () => {
        const leftovers = before();
        const started = Date.now();
        await assert.rejects(call(), message);
        assert.ok(Date.now() - started < 500, 'should fail before doing any work');
        assert.deepEqual(before(), leftovers);
      });
    }
  });

  describe('retryStallOnce: only a stall gets a second run', () => {
    const notes: string[] = [];
    const note = (line: string): void => { notes.push(line); };
    beforeEach(() => { notes.length = 0; });

    it('runs again once after a stall, and says so', async () => {
      let runs = 0;
      const result = await retryStallOnce('suite', async () => {
        runs += 1;
        if (runs === 1) throw new LabStallError('lab: stalled: no output for 150000 ms');
        return 'second run';
      }, note);
      assert.equal(result, 'second run');
      assert.equal(runs, 2);
      assert.match(notes.join('\n'), /suite stalled in the lab.*running it once more/s);
    });

    it('never runs again after a failure: a failed result or any other error is final', async () => {
      let runs = 0;
      const failed = await retryStallOnce('suite', async () => { runs += 1; return { exitCode: 1 }; }, note);
      assert.deepEqual(failed, { exitCode: 1 });
      await assert.rejects(retryStallOnce('suite', async () => { runs += 1; throw new Error('lab: timed out after 3000 ms'); }, note), /timed out/);
      assert.equal(runs, 2);
      assert.deepEqual(notes, []);
    });

    it('a second stall is final', async () => {
      let runs = 0;
      await assert.rejects(retryStallOnce('bench', async () => { runs += 1; throw new LabStallError(`stall ${runs}`); }, note), /stall 2/);
      assert.equal(runs, 2);
    });
  });
});
