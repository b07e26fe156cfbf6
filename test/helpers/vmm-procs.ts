// VMM processes of one smolvm state root as /proc shows them, independent of smolvm's own
// records (tests of those records must not trust them): a QEMU or smolvm-vmm whose command
// line names the root's directories or whose environment carries the exec wrapper's marker.
import * as fs from 'node:fs';

export interface VmmProc {
  pid: number;
  ppid: number;
  cmdline: string;
  /** Restoring a saved state (QEMU's -incoming). */
  restoring: boolean;
  /** Its parent is a template builder (a build in progress, not a leak). */
  templateBuild: boolean;
}

function argvOf(pid: number): string[] {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return [];
  }
}

/** Live (non-zombie) VMM processes of the smolvm state root `stateDir`. */
export function vmmProcsOf(stateDir: string): VmmProc[] {
  const found: VmmProc[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const argv = argvOf(Number(name));
      if (!/(^|\/)(qemu-system-x86_64|smolvm-vmm)$/.test(argv[0] ?? '')) continue;
      const environ = fs.readFileSync(`/proc/${name}/environ`, 'utf8');
      if (!argv.some((a) => a.includes(`${stateDir}/`)) && !environ.includes(`SMOLVM_VM_DIR=${stateDir}/`)) continue;
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] === 'Z' || fields[0] === 'X') continue;
      const ppid = Number(fields[1]);
      found.push({
        pid: Number(name), ppid, cmdline: argv.join(' ').slice(0, 300), restoring: argv.includes('-incoming'),
        templateBuild: argvOf(ppid).some((a) => a.endsWith('template/build-process.js')),
      });
    } catch {
      // gone while we looked
    }
  }
  return found;
}

/** The command line of `pid` (spaces for NULs), empty when gone. */
export function cmdlineOf(pid: number): string {
  return argvOf(pid).join(' ').trim();
}
