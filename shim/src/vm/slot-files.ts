// The files behind a VM's disk slots that are filled after its boot (a pod's spare slots).
// virtio-mmio has no hotplug, so the VMM opens every slot's file at boot and keeps it; a slot
// gets new contents by rewriting that same file in place (same inode), after which the backend
// is told to re-read its size (VmInstance.refreshSlot).
import * as fs from 'node:fs';

export const SECTOR_BYTES = 512;
const COPY_CHUNK_BYTES = 1024 * 1024;

/** An empty file for a slot nobody uses yet: a zero-capacity disk the guest never reads. */
export function createPlaceholder(file: string): void {
  fs.writeFileSync(file, '', { mode: 0o600, flag: 'wx' });
}

/** Makes an existing slot file empty again (its container left): frees its blocks. */
export async function emptySlotFile(file: string): Promise<void> {
  await fs.promises.truncate(file, 0);
}

/**
 * Copies `source` into the existing file `target` in place (same inode: a running VMM holds it
 * open), zero-padded to a whole number of 512-byte sectors (a virtio-blk capacity is counted
 * in sectors). Returns the new size in bytes.
 */
export async function copyIntoSlot(target: string, source: string): Promise<number> {
  const input = await fs.promises.open(source, 'r');
  try {
    const output = await fs.promises.open(target, fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW);
    try {
      if (!(await output.stat()).isFile()) throw new Error(`disk slot file ${target} is not a regular file`);
      await output.truncate(0);
      const buffer = Buffer.allocUnsafe(COPY_CHUNK_BYTES);
      let offset = 0;
      for (;;) {
        const { bytesRead } = await input.read(buffer, 0, buffer.length, offset);
        if (bytesRead === 0) break;
        let written = 0;
        while (written < bytesRead) {
          const { bytesWritten } = await output.write(buffer, written, bytesRead - written, offset + written);
          written += bytesWritten;
        }
        offset += bytesRead;
      }
      const size = Math.ceil(offset / SECTOR_BYTES) * SECTOR_BYTES;
      if (size !== offset) await output.truncate(size);
      return size;
    } finally {
      await output.close();
    }
  } finally {
    await input.close();
  }
}
