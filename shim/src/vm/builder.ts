// Builds one VM from its shape, up to "agent ready" (the agent answered the handshake; no
// container exists yet), the one way every VM of smolvm is made: a container's own, a pod's,
// a warm spare's, an early one (Firecracker's builder.rs: boot and restore from one set of VM
// resources). It makes the VM's two directories, exports its shared directory, lays the
// files behind its slots, and then restores it from a template of its shape when a valid one
// exists, else cold-boots it (scheduling that template's build in the background).
//
// A restore is verified before anyone else sees the VM: the state loaded, the guest answered
// on a new agent connection, and its RNG was reseeded with fresh host entropy (clone safety).
// Anything failing there kills that VM, removes the template (it gets rebuilt) and falls back
// to a cold boot: a bad template costs time, never a wrong or a missing guest.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentClient } from '../agent/client';
import type { SmolvmConfig } from '../config/config';
import { vmDataDir, type Paths } from '../config/paths';
import { RpcError } from '../errdefs';
import type { Logger } from '../log';
import { removeQuietly } from '../util/fsutil';
import type { Backend, DiskSlot, GuestBoot, VmConfig, Vmm } from './backend';
import { DEFAULT_LOG_MAX_BYTES } from './capped-log';
import { guestArtifacts } from './guest';
import { HostShares } from './host-mounts';
import type { VmShape } from './shape';
import { scheduleBuild } from './template/build-process';
import { templateInputs, templatesUnsupported } from './template/inputs';
import { TEMPLATE_SLOT_BYTES } from './template/key';
import { TemplateStore, type Template } from './template/store';
import { Vm, type VmDirs } from './vm';
import { markVmDirOwner } from './vmm-exec';

/** Environment switch: SMOLVM_TEMPLATES=off (or 0, false) turns templates off. */
export const TEMPLATES_ENV = 'SMOLVM_TEMPLATES';
/** A restored guest answers within milliseconds; past this it is broken (fall back). */
const RESTORE_TIMEOUT_MS = 15_000;
/** Fresh host entropy for the reseed (the agent takes 32..65536 bytes). */
const RESEED_ENTROPY_BYTES = 64;
/** Time for a cold-booted guest to answer the handshake. */
const DEFAULT_BOOT_TIMEOUT_MS = 60_000;

/** What every VM of one shim daemon has in common (its config). */
export interface VmBuilderSettings {
  backend: Backend;
  paths: Paths;
  /** Restore from templates when valid (config `templates`; SMOLVM_TEMPLATES=off also). */
  templates: boolean;
  /** Cap of each VM's console log and of its VMM's log (config console_log_max_kib). */
  logMaxBytes?: number;
  /** Multiplies the agent calls' deadlines (config agent_deadline_scale). */
  agentDeadlineScale?: number;
  bootTimeoutMs?: number;
}

/** One VM to build. */
export interface VmRequest {
  shape: VmShape;
  log: Logger;
  /** The files behind the shape's disk slots, in order, made in the VM's data dir (on disk,
   *  never under the state dir); default: none (a shape without disks). */
  slotFiles?: (dirs: VmDirs) => Promise<string[]>;
  /** The VMM exists and the guest has not run yet: place it (host cgroup) and record it on
   *  disk. Called once, with the VMM that the VM will have; a throw fails the build. */
  onVmm?: (vmm: Vmm, dirs: VmDirs) => void;
}

export function templatesEnabled(requested: boolean | undefined, env: NodeJS.ProcessEnv = process.env): boolean {
  const value = env[TEMPLATES_ENV]?.trim().toLowerCase();
  if (value === 'off' || value === '0' || value === 'false' || value === 'no') return false;
  return requested ?? true;
}

/** A restore that did not produce a verified VM: the caller cold-boots instead. */
class RestoreFailed extends Error {
  constructor(message: string, readonly templateAtFault: boolean) {
    super(message);
    this.name = 'RestoreFailed';
  }
}

export class VmBuilder {
  constructor(readonly settings: VmBuilderSettings) {}

  /** The builder of a daemon (or of `smolvm run`, a spare) with this config. */
  static fromConfig(config: SmolvmConfig, backend: Backend, paths: Paths): VmBuilder {
    return new VmBuilder({
      backend, paths, templates: config.templates, logMaxBytes: config.consoleLogMaxKiB * 1024,
      agentDeadlineScale: config.agentDeadlineScale,
    });
  }

  get backend(): Backend {
    return this.settings.backend;
  }

  get paths(): Paths {
    return this.settings.paths;
  }

  /** The guest every VM boots, with this backend's kernel arguments. */
  async guest(): Promise<GuestBoot> {
    const artifacts = await guestArtifacts(this.paths.cacheDir);
    return {
      kernel: artifacts.kernel.vmlinux, initramfs: artifacts.initramfs,
      cmdline: `${artifacts.cmdline} ${this.backend.kernelArgs}`.trim(),
    };
  }

  /** Builds the VM (see the top of this file). On a failure nothing of it is left. */
  async start(req: VmRequest): Promise<Vm> {
    const vmId = randomBytes(6).toString('hex');
    const dirs: VmDirs = { dir: path.join(this.paths.stateDir, 'vms', vmId), dataDir: vmDataDir(this.paths, vmId) };
    const log = req.log.child({ vm: vmId });
    fs.mkdirSync(dirs.dir, { recursive: true, mode: 0o700 });
    markVmDirOwner(dirs.dir); // whose it is, should we die before its VMM runs (vmm-exec.ts)
    let vmm: Vmm | null = null;
    let agent: AgentClient | null = null;
    // The shared directory is exported (read-only, host-mounts.ts) before the VMM opens it.
    const exporting = req.shape.shares.length > 0 ? HostShares.export(dirs.dir, log) : Promise.resolve(null);
    try {
      fs.mkdirSync(dirs.dataDir, { recursive: true, mode: 0o700 });
      const [guest, files, shares] = await Promise.all([this.guest(), req.slotFiles?.(dirs) ?? Promise.resolve([]), exporting]);
      if (files.length !== req.shape.disks.length) {
        throw new Error(`vm ${vmId}: ${files.length} files for the ${req.shape.disks.length} disk slots of its shape`);
      }
      const slots: DiskSlot[] = req.shape.disks.map((disk, i) => ({ ...disk, path: files[i]! }));
      const config: VmConfig = {
        vmId, ...dirs, logMaxBytes: this.settings.logMaxBytes ?? DEFAULT_LOG_MAX_BYTES, shape: req.shape, guest, slots,
      };
      const started = await this.restoreOrBoot(config, log, (made) => {
        vmm = made;
        req.onVmm?.(made, dirs);
      });
      agent = started.agent;
      if (this.settings.agentDeadlineScale !== undefined) agent.setDeadlineScale(this.settings.agentDeadlineScale);
      return new Vm({ vmId, ...dirs, vmm: started.vmm, agent, slots, log, restoredFrom: started.restoredFrom, shares });
    } catch (err) {
      const failed = vmm as Vmm | null;
      const detail = failed ? failed.diagnostics() : '';
      (agent as AgentClient | null)?.close();
      if (failed) await failed.kill();
      // Its mounts before the directory (removeQuietly does not cross a mount).
      await (await exporting.catch(() => null))?.releaseAll();
      removeQuietly(dirs.dir);
      removeQuietly(dirs.dataDir);
      const msg = err instanceof Error ? err.message : String(err);
      const full = detail && !msg.includes(detail) ? `${msg}\n${detail}` : msg;
      // Keep the errdefs code (bad input stays InvalidArgument for containerd).
      throw err instanceof RpcError ? new RpcError(err.code, full) : new Error(full);
    }
  }

  /** A verified restore from a valid template, else a cold boot; `onVmm` sees the VMM kept. */
  private async restoreOrBoot(config: VmConfig, log: Logger, onVmm: (vmm: Vmm) => void): Promise<{ vmm: Vmm; agent: AgentClient; restoredFrom: string | null }> {
    const started = Date.now();
    const found = await this.findTemplate(config, log);
    if ('template' in found) {
      const { template } = found;
      try {
        const restored = await this.restore(config, template, log);
        try {
          onVmm(restored.vmm);
        } catch (err) {
          restored.agent.close();
          await restored.vmm.kill();
          throw err;
        }
        new TemplateStore(this.paths.cacheDir).touch(template);
        log.info(`vm restored from template ${template.key}`, { backend: restored.vmm.backend, pid: restored.vmm.identity.pid, ms: Date.now() - started });
        return { ...restored, restoredFrom: template.key };
      } catch (err) {
        if (!(err instanceof RestoreFailed)) throw err;
        log.warn(`vm cold boot: template ${template.key} did not restore: ${err.message}`, { template: template.key });
        if (err.templateAtFault) await this.retireTemplate(config, template.key, err.message, log);
      }
    } else {
      log.info(`vm cold boot: ${found.reason}`);
    }
    const booted = await this.coldBoot(config, log, onVmm);
    log.info('vm ready', { backend: booted.vmm.backend, pid: booted.vmm.identity.pid, ms: Date.now() - started, kernel: booted.agent.info.kernelRelease });
    return { ...booted, restoredFrom: null };
  }

  /** A valid template for this VM, or why it is cold-booted (the build is scheduled here). */
  private async findTemplate(config: VmConfig, log: Logger): Promise<{ template: Template } | { reason: string }> {
    if (!templatesEnabled(this.settings.templates)) return { reason: 'templates off' };
    const unsupported = templatesUnsupported(this.backend);
    if (unsupported) return { reason: unsupported };
    const store = new TemplateStore(this.paths.cacheDir);
    let key: string;
    try {
      ({ key } = await templateInputs(this.backend, config.shape, config.guest, store.memoDir));
    } catch (err) {
      log.warn('template inputs unavailable', { error: err instanceof Error ? err.message : String(err) });
      return { reason: 'template inputs unavailable' };
    }
    const found = store.lookup(key);
    if (found.kind === 'found') return { template: found.template };
    if (found.kind === 'corrupt') {
      log.warn('template unusable: removing it', { template: key, reason: found.reason });
      store.remove(key);
    }
    const scheduled = await this.scheduleTemplateBuild(config, key, log);
    const what = scheduled === 'failed-recently' ? 'its last build failed' : 'building';
    return { reason: `no template ${key} (${what})` };
  }

  private scheduleTemplateBuild(config: VmConfig, key: string, log: Logger): ReturnType<typeof scheduleBuild> {
    return scheduleBuild({ backend: this.backend.name, paths: this.paths, shape: config.shape, guest: config.guest, key, logLevel: 'info' }, log);
  }

  /** A template that failed its restore is removed and rebuilt, once: a second failure after
   *  a rebuild pauses templates of these inputs. */
  private async retireTemplate(config: VmConfig, key: string, why: string, log: Logger): Promise<void> {
    const store = new TemplateStore(this.paths.cacheDir);
    store.remove(key);
    if (store.noteRestoreFailure(key, why)) await this.scheduleTemplateBuild(config, key, log);
    else log.warn(`template ${key} failed to restore again after a rebuild: templates of these inputs are paused`, { template: key });
  }

  private async restore(config: VmConfig, template: Template, log: Logger): Promise<{ vmm: Vmm; agent: AgentClient }> {
    for (const slot of config.slots) {
      const size = fs.statSync(slot.path).size;
      if (size > TEMPLATE_SLOT_BYTES) {
        throw new RestoreFailed(`disk slot ${slot.serial} holds ${size} bytes, more than a template slot (${TEMPLATE_SLOT_BYTES})`, false);
      }
    }
    let vmm: Vmm;
    try {
      vmm = await this.backend.boot({ ...config, incomingState: template.statePath }, log);
    } catch (err) {
      // A VMM that checks the state as it loads it (kvm) refuses a bad template right here; a
      // state file gone meanwhile (garbage-collected) is nobody's fault: just cold-boot.
      throw new RestoreFailed(err instanceof Error ? err.message : String(err), fs.existsSync(template.statePath));
    }
    const restored = vmm;
    let agent: AgentClient | null = null;
    const exited = restored.exited.then((exit) => {
      throw new Error(`the VMM exited while restoring (code ${exit.code}, signal ${exit.signal}): ${restored.diagnostics()}`);
    });
    exited.catch(() => undefined);
    try {
      // kvm: smolvm-vmm tells the restored guest that its vsock connections are gone
      // (TRANSPORT_RESET) and holds this connection until the guest handled that event.
      const channel = await Promise.race([restored.connectAgent(RESTORE_TIMEOUT_MS), exited]);
      agent = await Promise.race([AgentClient.connect(channel, { timeoutMs: RESTORE_TIMEOUT_MS, logger: log }), exited]);
      const connected = agent;
      // The guest runs: its slots now hold other files than the placeholders it was saved
      // with. It re-reads their capacity while it reseeds (the agent waits for the size).
      const [reseed] = await Promise.race([
        Promise.all([
          connected.reseed({
            entropy: randomBytes(RESEED_ENTROPY_BYTES), hostTimeUnixNano: BigInt(Date.now()) * 1_000_000n, hostname: '',
          }, { timeoutMs: RESTORE_TIMEOUT_MS }),
          (async () => { for (const slot of config.slots) await restored.refreshSlot(slot.serial); })(),
        ]),
        exited,
      ]);
      if (!reseed.crngReseeded) throw new Error('the guest did not reseed its CRNG (RNDRESEEDCRNG failed)');
      return { vmm: restored, agent: connected };
    } catch (err) {
      agent?.close();
      await restored.kill();
      const msg = err instanceof Error ? err.message : String(err);
      const detail = restored.diagnostics();
      throw new RestoreFailed(detail && !msg.includes(detail) ? `${msg}\n${detail}` : msg, true);
    }
  }

  /** Boots the VM from scratch up to the agent's handshake. */
  private async coldBoot(config: VmConfig, log: Logger, onVmm: (vmm: Vmm) => void): Promise<{ vmm: Vmm; agent: AgentClient }> {
    const vmm = await this.backend.boot(config, log);
    onVmm(vmm);
    const timeoutMs = this.settings.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
    const channel = await vmm.connectAgent(timeoutMs);
    const vmExited = vmm.exited.then((exit) => {
      throw new Error(`VM exited during boot (code ${exit.code}, signal ${exit.signal}): ${vmm.diagnostics()}`);
    });
    vmExited.catch(() => undefined);
    const agent = await Promise.race([AgentClient.connect(channel, { timeoutMs }), vmExited]);
    return { vmm, agent };
  }
}
