// Starting a VM up to "agent ready": restored from a template when a valid one exists, else
// cold-booted (and a template build scheduled in the background). The caller gets a VM whose
// agent has answered the handshake either way; the log line says which path was taken.
//
// A restore is verified before anyone else sees the VM: the state loaded, the guest answered
// on a new agent connection, and its RNG was reseeded with fresh host entropy (clone safety).
// Anything failing there kills that VM, removes the template (it gets rebuilt) and falls back
// to a cold boot: a bad template costs time, never a wrong or a missing guest.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { AgentClient } from '../../agent/client';
import type { Paths } from '../../config/paths';
import type { Logger } from '../../log';
import type { Backend, VmConfig, Vmm } from '../backend';
import { scheduleBuild } from './builder';
import { TEMPLATE_SLOT_BYTES } from './key';
import { shapeOf, templateInputs, templatesUnsupported } from './inputs';
import { TemplateStore, type Template } from './store';

/** Environment switch: SMOLVM_TEMPLATES=off (or 0, false) turns templates off. */
export const TEMPLATES_ENV = 'SMOLVM_TEMPLATES';
/** A restored guest answers within milliseconds; past this it is broken (fall back). */
const RESTORE_TIMEOUT_MS = 15_000;
/** Fresh host entropy for the reseed (the agent takes 32..65536 bytes). */
const RESEED_ENTROPY_BYTES = 64;

export interface StartVmRequest {
  backend: Backend;
  /** The VM as a cold boot would start it: its slots hold the container's files. */
  config: VmConfig;
  paths: Paths;
  log: Logger;
  /** Time for a cold boot to reach the handshake. */
  bootTimeoutMs: number;
  /** Templates on (default) or off. SMOLVM_TEMPLATES=off turns them off as well. */
  templates?: boolean;
  /** Hostname a restored VM takes in the reseed (empty: keep the template's). */
  hostname?: string;
  /** Called once, with the VM that will be returned, before its handshake when cold-booted. */
  onVmStarted?: (vm: Vmm) => void;
}

export interface StartedVm {
  vm: Vmm;
  agent: AgentClient;
  /** The template key when restored, null when cold-booted. */
  restoredFrom: string | null;
}

export function templatesEnabled(requested: boolean | undefined, env: NodeJS.ProcessEnv = process.env): boolean {
  const value = env[TEMPLATES_ENV]?.trim().toLowerCase();
  if (value === 'off' || value === '0' || value === 'false' || value === 'no') return false;
  return requested ?? true;
}

/** A valid template for this VM, or why it is cold-booted (the build is scheduled here). */
async function findTemplate(req: StartVmRequest): Promise<{ template: Template } | { reason: string }> {
  if (!templatesEnabled(req.templates)) return { reason: 'templates off' };
  const unsupported = templatesUnsupported(req.backend);
  if (unsupported) return { reason: unsupported };
  const store = new TemplateStore(req.paths.cacheDir);
  const shape = shapeOf(req.config);
  let key: string;
  try {
    ({ key } = await templateInputs(req.backend, shape, store.memoDir));
  } catch (err) {
    req.log.warn('template inputs unavailable', { error: err instanceof Error ? err.message : String(err) });
    return { reason: 'template inputs unavailable' };
  }
  const found = store.lookup(key);
  if (found.kind === 'found') return { template: found.template };
  if (found.kind === 'corrupt') {
    req.log.warn('template unusable: removing it', { template: key, reason: found.reason });
    store.remove(key);
  }
  const scheduled = await scheduleBuild({ backend: req.backend.name, paths: req.paths, shape, key, logLevel: 'info' }, req.log);
  const what = scheduled === 'failed-recently' ? 'its last build failed' : 'building';
  return { reason: `no template ${key} (${what})` };
}

export async function startVm(req: StartVmRequest): Promise<StartedVm> {
  const started = Date.now();
  const found = await findTemplate(req);
  if ('template' in found) {
    const { template } = found;
    try {
      const restored = await restore(req, template);
      try {
        req.onVmStarted?.(restored.vm);
      } catch (err) {
        restored.agent.close();
        throw err;
      }
      new TemplateStore(req.paths.cacheDir).touch(template);
      req.log.info(`vm restored from template ${template.key}`, { backend: restored.vm.backend, pid: restored.vm.identity.pid, ms: Date.now() - started });
      return { ...restored, restoredFrom: template.key };
    } catch (err) {
      if (!(err instanceof RestoreFailed)) throw err;
      req.log.warn(`vm cold boot: template ${template.key} did not restore: ${err.message}`, { template: template.key });
      if (err.templateAtFault) {
        const store = new TemplateStore(req.paths.cacheDir);
        store.remove(template.key);
        if (store.noteRestoreFailure(template.key, err.message)) {
          const shape = shapeOf(req.config);
          await scheduleBuild({ backend: req.backend.name, paths: req.paths, shape, key: template.key, logLevel: 'info' }, req.log);
        } else {
          req.log.warn(`template ${template.key} failed to restore again after a rebuild: templates of these inputs are paused`, { template: template.key });
        }
      }
    }
  } else {
    req.log.info(`vm cold boot: ${found.reason}`);
  }
  const booted = await coldBoot(req);
  req.log.info('vm ready', { backend: booted.vm.backend, pid: booted.vm.identity.pid, ms: Date.now() - started, kernel: booted.agent.info.kernelRelease });
  return { ...booted, restoredFrom: null };
}

/** A restore that did not produce a verified VM: the caller cold-boots instead. */
class RestoreFailed extends Error {
  constructor(message: string, readonly templateAtFault: boolean) {
    super(message);
    this.name = 'RestoreFailed';
  }
}

async function restore(req: StartVmRequest, template: Template): Promise<{ vm: Vmm; agent: AgentClient }> {
  for (const slot of req.config.slots) {
    const size = fs.statSync(slot.path).size;
    if (size > TEMPLATE_SLOT_BYTES) {
      throw new RestoreFailed(`disk slot ${slot.serial} holds ${size} bytes, more than a template slot (${TEMPLATE_SLOT_BYTES})`, false);
    }
  }
  let vm: Vmm;
  try {
    vm = await req.backend.boot({ ...req.config, incomingState: template.statePath }, req.log);
  } catch (err) {
    // A VMM that checks the state as it loads it (kvm) refuses a bad template right here; a
    // state file gone meanwhile (garbage-collected) is nobody's fault: just cold-boot.
    throw new RestoreFailed(err instanceof Error ? err.message : String(err), fs.existsSync(template.statePath));
  }
  const restoredVm = vm;
  let agent: AgentClient | null = null;
  const exited = restoredVm.exited.then((exit) => {
    throw new Error(`the VMM exited while restoring (code ${exit.code}, signal ${exit.signal}): ${restoredVm.diagnostics()}`);
  });
  exited.catch(() => undefined);
  try {
    agent = await connectRestored(req, restoredVm, exited);
    const connected = agent;
    // The guest runs: its slots now hold other files than the placeholders it was saved with.
    // It re-reads their capacity while it reseeds (the agent waits for the size before mounting).
    const [reseed] = await Promise.race([
      Promise.all([
        connected.reseed({
          entropy: randomBytes(RESEED_ENTROPY_BYTES),
          hostTimeUnixNano: BigInt(Date.now()) * 1_000_000n,
          hostname: req.hostname ?? '',
        }, { timeoutMs: RESTORE_TIMEOUT_MS }),
        refreshSlots(restoredVm, req.config),
      ]),
      exited,
    ]);
    if (!reseed.crngReseeded) throw new Error('the guest did not reseed its CRNG (RNDRESEEDCRNG failed)');
    return { vm: restoredVm, agent: connected };
  } catch (err) {
    agent?.close();
    await restoredVm.kill();
    const msg = err instanceof Error ? err.message : String(err);
    const detail = restoredVm.diagnostics();
    throw new RestoreFailed(detail && !msg.includes(detail) ? `${msg}\n${detail}` : msg, true);
  }
}

/**
 * The agent connection of a restored VM. kvm: smolvm-vmm tells the restored guest that its
 * vsock connections are gone (TRANSPORT_RESET) and holds our connection until the guest has
 * handled that event, so the first connection lasts (native-vmm/src/devices/virtio/vsock.h).
 */
async function connectRestored(req: StartVmRequest, vm: Vmm, exited: Promise<never>): Promise<AgentClient> {
  const channel = await Promise.race([vm.connectAgent(RESTORE_TIMEOUT_MS), exited]);
  return await Promise.race([AgentClient.connect(channel, { timeoutMs: RESTORE_TIMEOUT_MS, logger: req.log }), exited]);
}

async function refreshSlots(vm: Vmm, config: VmConfig): Promise<void> {
  for (const slot of config.slots) await vm.refreshSlot(slot.serial);
}

/** Boots the VM from scratch up to the agent's handshake (the path before templates). */
async function coldBoot(req: StartVmRequest): Promise<{ vm: Vmm; agent: AgentClient }> {
  const vm = await req.backend.boot(req.config, req.log);
  req.onVmStarted?.(vm);
  const channel = await vm.connectAgent(req.bootTimeoutMs);
  const vmExited = vm.exited.then((exit) => {
    throw new Error(`VM exited during boot (code ${exit.code}, signal ${exit.signal}): ${vm.diagnostics()}`);
  });
  vmExited.catch(() => undefined);
  const agent = await Promise.race([AgentClient.connect(channel, { timeoutMs: req.bootTimeoutMs }), vmExited]);
  return { vm, agent };
}
