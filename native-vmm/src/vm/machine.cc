#include "vm/machine.h"

#include <pthread.h>
#include <unistd.h>

#include "boot/layout.h"
#include "devices/i8042.h"
#include "devices/port_sink.h"
#include "devices/serial.h"
#include "devices/virtio/block.h"
#include "devices/virtio/mmio.h"
#include "devices/virtio/rng.h"
#include "devices/virtio/vsock.h"
#include "kvm/irq_line.h"
#include "snapshot/host_identity.h"
#include "snapshot/memory_file.h"
#include "util/error.h"
#include "util/log.h"

namespace smolvm {
namespace {

constexpr uint64_t kMinMemoryBytes = 4ULL << 20;

ExitReason ExitReasonFor(VcpuExitKind kind) {
  switch (kind) {
    case VcpuExitKind::kHalt: return ExitReason::kGuestHalt;
    case VcpuExitKind::kTripleFault: return ExitReason::kGuestReset;
    case VcpuExitKind::kSystemShutdown: return ExitReason::kGuestShutdown;
    case VcpuExitKind::kSystemReset: return ExitReason::kGuestReset;
    case VcpuExitKind::kSystemCrash: return ExitReason::kGuestCrash;
    case VcpuExitKind::kFailEntry: return ExitReason::kEntryFailed;
    case VcpuExitKind::kInternalError:
    case VcpuExitKind::kUnhandled: return ExitReason::kInternalError;
    case VcpuExitKind::kRunFailed:
    case VcpuExitKind::kStopRequested: break;
  }
  return ExitReason::kVmmFault;
}

uint64_t CheckedMemorySize(uint64_t bytes) {
  if (bytes < kMinMemoryBytes) throw VmmError("machine: memory must be at least 4 MiB");
  return bytes;
}

MachineConfig& RequireKernel(MachineConfig& config) {
  if (!config.kernel.valid()) throw VmmError("machine: no kernel");
  return config;
}

// A restore's host-side config must describe the snapshot's machine; the controller builds it
// from the layout, this checks it again for any other caller.
MachineConfig& MatchLayout(MachineConfig& config, const snapshot::MachineLayout& layout) {
  if (config.memory_bytes != layout.memory_bytes)
    throw VmmError("restore: memory is " + std::to_string(config.memory_bytes) + " bytes, the snapshot's " +
                   std::to_string(layout.memory_bytes));
  if (config.vcpu_count != layout.vcpu_count)
    throw VmmError("restore: " + std::to_string(config.vcpu_count) + " vcpus, the snapshot has " +
                   std::to_string(layout.vcpu_count));
  std::vector<snapshot::DeviceKind> kinds;
  for (size_t i = 0; i < config.disks.size(); ++i) kinds.push_back(snapshot::DeviceKind::kBlock);
  if (config.vsock) kinds.push_back(snapshot::DeviceKind::kVsock);
  if (config.rng) kinds.push_back(snapshot::DeviceKind::kRng);
  std::string want, have;
  for (const snapshot::DeviceLayout& device : layout.devices) want += std::string(" ") + snapshot::DeviceKindName(device.kind);
  for (snapshot::DeviceKind kind : kinds) have += std::string(" ") + snapshot::DeviceKindName(kind);
  if (want != have)
    throw VmmError("restore: the snapshot's devices are [" + want + " ], the configuration gives [" + have + " ]");
  size_t disk = 0;
  for (const snapshot::DeviceLayout& device : layout.devices) {
    if (device.kind == snapshot::DeviceKind::kBlock) {
      const DiskSlotConfig& slot = config.disks[disk];
      if (slot.read_only != device.read_only || slot.serial != device.serial)
        throw VmmError("restore: disks[" + std::to_string(disk) + "] is " +
                       (slot.read_only ? "read-only" : "writable") + " with serial \"" + slot.serial +
                       "\", the snapshot's slot is " + (device.read_only ? "read-only" : "writable") +
                       " with serial \"" + device.serial + "\"");
      ++disk;
    } else if (device.kind == snapshot::DeviceKind::kVsock && config.vsock->guest_cid != device.guest_cid) {
      throw VmmError("restore: vsock guest_cid " + std::to_string(config.vsock->guest_cid) +
                     ", the snapshot's is " + std::to_string(device.guest_cid));
    }
  }
  return config;
}

std::unique_ptr<GuestMemory> MapSnapshotMemory(const MachineRestore& restore) {
  if (!restore.memory_file.valid()) throw VmmError("restore: no memory file");
  snapshot::CheckMemoryFile(restore.memory_file.get(), restore.state.layout.memory_bytes,
                            restore.state.snapshot_id);
  return GuestMemory::MapPrivate(restore.memory_file.get(), restore.state.layout.memory_bytes);
}

}  // namespace

const char* ExitReasonName(ExitReason reason) {
  switch (reason) {
    case ExitReason::kGuestShutdown: return "guest_shutdown";
    case ExitReason::kGuestReset: return "guest_reset";
    case ExitReason::kGuestHalt: return "guest_halt";
    case ExitReason::kGuestCrash: return "guest_crash";
    case ExitReason::kInternalError: return "internal_error";
    case ExitReason::kEntryFailed: return "entry_failed";
    case ExitReason::kVmmFault: return "vmm_fault";
    case ExitReason::kStopped: return "stopped";
  }
  return "unknown";
}

Machine::Machine(MachineConfig config, std::function<void(const MachineExit&)> on_exit)
    : Machine(RequireKernel(config), GuestMemory::Create(CheckedMemorySize(config.memory_bytes)),
              std::move(on_exit), nullptr) {
  LinuxBootConfig boot;
  boot.kernel_fd = config.kernel.get();
  boot.initramfs_fd = config.initramfs.get();
  boot.cmdline = cmdline_;
  boot.vcpu_count = config.vcpu_count;
  boot.last_gsi = next_gsi_ - 1 > 15 ? next_gsi_ - 1 : 15;
  boot.protocol = config.boot_protocol;
  boot_description_ = BootLinux(*memory_, *vcpus_[0], boot);
  // The kernel and initramfs fds close with `config` here: they are in guest RAM now.
}

Machine::Machine(MachineConfig config, MachineRestore restore,
                 std::function<void(const MachineExit&)> on_exit)
    : Machine(MatchLayout(config, restore.state.layout), MapSnapshotMemory(restore),
              std::move(on_exit), &restore.state.identity) {
  ApplyRestore(restore);
}

Machine::Machine(MachineConfig& config, std::unique_ptr<GuestMemory> memory,
                 std::function<void(const MachineExit&)> on_exit,
                 const snapshot::HostIdentity* restoring)
    : on_exit_(std::move(on_exit)),
      system_(config.kvm_fd),
      memory_(std::move(memory)),
      vm_(system_),
      serial_output_(std::move(config.serial_output)),
      cmdline_(config.cmdline),
      next_gsi_(kFirstVirtioGsi),
      next_mmio_base_(kVirtioMmioBase) {
  if (restoring != nullptr)
    snapshot::CheckRestorable(*restoring, snapshot::CurrentHostIdentity(system_));
  if (config.vcpu_count == 0 || config.vcpu_count > kMaxVcpus)
    throw VmmError("machine: vcpus must be 1.." + std::to_string(kMaxVcpus));

  vm_.MapGuestMemory(*memory_);
  vm_.CreateIrqchipAndPit();

  // Legacy devices on the port bus.
  auto serial_irq = std::make_shared<IrqfdLine>(vm_, kCom1Gsi);
  irq_lines_.push_back(serial_irq);
  serial_ = std::make_shared<Serial>(serial_irq, serial_output_.get());
  pio_bus_.Insert(serial_, kCom1Base, kCom1Size);
  i8042_ = std::make_shared<I8042>([this] {
    ReportExit({ExitReason::kGuestReset, "the guest reset the machine through the i8042 (0xFE on port 0x64)"});
  });
  pio_bus_.Insert(i8042_, kI8042DataPort, kI8042CommandPort - kI8042DataPort + 1);
  auto sink = std::make_shared<PortSink>();
  pio_bus_.Insert(sink, 0x70, 2);     // CMOS/RTC index + data: reads as zero, no RTC
  pio_bus_.Insert(sink, 0x80, 0x10);  // POST code and DMA page registers (io_delay)
  pio_bus_.Insert(sink, 0xed, 1);     // alternative io_delay port

  AddVirtioDevices(config);

  for (uint32_t i = 0; i < config.vcpu_count; ++i) {
    auto vcpu = std::make_unique<Vcpu>(vm_, i);
    const std::string cpuid_problem = vcpu->ConfigureCpuid(config.vcpu_count);
    if (!cpuid_problem.empty() && i == 0) LogWarning("CPUID left at KVM's defaults: " + cpuid_problem);
    vcpu->ConfigureMsrs();
    vcpu->ConfigureLapic();
    vcpu->ConfigureFpu();
    vcpus_.push_back(std::move(vcpu));
  }
}

void Machine::ApplyRestore(const MachineRestore& restore) {
  const snapshot::MachineSnapshot& state = restore.state;
  const snapshot::MachineLayout built = Layout();
  if (built.devices.size() != state.layout.devices.size())
    throw VmmError("restore: the snapshot has " + std::to_string(state.layout.devices.size()) +
                   " virtio devices, this machine " + std::to_string(built.devices.size()));
  for (size_t i = 0; i < built.devices.size(); ++i) {
    const snapshot::DeviceLayout& want = state.layout.devices[i];
    const snapshot::DeviceLayout& have = built.devices[i];
    if (want.gsi != have.gsi || want.mmio_base != have.mmio_base)
      throw VmmError("restore: device " + std::to_string(i) + " (" + snapshot::DeviceKindName(want.kind) +
                     ") was at GSI " + std::to_string(want.gsi) + ", this VMM places it at GSI " +
                     std::to_string(have.gsi));
  }
  if (state.vcpus.size() != vcpus_.size() || state.virtio.size() != transports_.size())
    throw VmmError("restore: the snapshot's vCPU or device state does not match its layout");
  cmdline_ = state.layout.cmdline;
  // VM-wide state first, then each vCPU, then the devices: a device that signals the guest
  // while restoring (vsock's transport reset) raises its interrupt on the restored irqchip.
  snapshot::ApplyVm(vm_, state.vm, restore_warnings_);
  for (size_t i = 0; i < vcpus_.size(); ++i) snapshot::ApplyVcpu(*vcpus_[i], state.vcpus[i], restore_warnings_);
  serial_->RestoreState(state.serial);
  i8042_->RestoreState(state.i8042);
  for (size_t i = 0; i < transports_.size(); ++i) {
    transports_[i]->RestoreState(state.virtio[i]);
    // A slot restored over a file of another size: tell a bound driver to re-read the capacity.
    auto* block = dynamic_cast<const virtio::VirtioBlock*>(&transports_[i]->device());
    if (block != nullptr && block->active() &&
        block->capacity_sectors() != state.layout.devices[i].capacity_sectors)
      transports_[i]->interrupt()->SignalConfigChange();
  }
  boot_description_ = "restored snapshot " + snapshot::SnapshotIdHex(state.snapshot_id);
  for (const std::string& warning : restore_warnings_) LogWarning("restore: " + warning);
}

uint64_t Machine::RefreshDisk(const std::string& serial) {
  for (const auto& transport : transports_) {
    auto* block = dynamic_cast<virtio::VirtioBlock*>(&transport->device());
    if (block != nullptr && block->serial() == serial) return block->RefreshCapacity() * virtio::kSectorSize;
  }
  throw VmmError("no disk slot with serial '" + serial + "'");
}

snapshot::MachineLayout Machine::Layout() const {
  snapshot::MachineLayout layout;
  layout.memory_bytes = memory_->size();
  layout.vcpu_count = static_cast<uint32_t>(vcpus_.size());
  layout.cmdline = cmdline_;
  layout.devices = device_layout_;
  for (size_t i = 0; i < transports_.size(); ++i) {
    if (auto* block = dynamic_cast<const virtio::VirtioBlock*>(&transports_[i]->device()))
      layout.devices[i].capacity_sectors = block->capacity_sectors();
  }
  return layout;
}

std::unique_ptr<EventLoopParking> Machine::ParkDeviceLoop() {
  if (threads_.empty()) return nullptr;  // the loop starts with the vCPUs
  return std::make_unique<EventLoopParking>(event_loop_, 5000);
}

snapshot::MachineSnapshot Machine::CaptureState(std::vector<std::string>& warnings) const {
  if (!threads_.empty() && !paused_) throw VmmError("snapshot: the machine must be paused first");
  snapshot::MachineSnapshot state;
  state.identity = snapshot::CurrentHostIdentity(system_);
  state.layout = Layout();
  state.vm = snapshot::CaptureVm(vm_, warnings);
  for (const auto& vcpu : vcpus_)
    state.vcpus.push_back(snapshot::CaptureVcpu(*vcpu, system_.MsrIndexList(), warnings));
  state.serial = serial_->SaveState();
  state.i8042 = i8042_->SaveState();
  for (const auto& transport : transports_) state.virtio.push_back(transport->SaveState());
  return state;
}

Machine::~Machine() {
  {
    std::lock_guard<std::mutex> lock(exit_mutex_);
    exit_reported_ = true;  // tearing down: no exit report from here on
  }
  control_.RequestStop();
  KickVcpus();
  JoinVcpus();
  event_loop_.Stop();
}

Machine::PathRemover::~PathRemover() {
  if (!path.empty()) ::unlink(path.c_str());
}

void Machine::AddVirtioDevice(std::shared_ptr<virtio::MmioTransport> transport,
                              snapshot::DeviceLayout layout) {
  if (!mmio_bus_.Insert(transport, layout.mmio_base, kVirtioMmioWindow))
    throw VmmError("machine: virtio MMIO window overlaps another device");
  cmdline_ += " " + virtio::MmioTransport::KernelCmdlineArg(layout.mmio_base, layout.gsi);
  transports_.push_back(std::move(transport));
  device_layout_.push_back(std::move(layout));
}

void Machine::AddVirtioDevices(MachineConfig& config) {
  auto next_slot = [this](snapshot::DeviceKind kind, std::shared_ptr<IrqLine>* irq) {
    if (next_gsi_ > kLastGsi) throw VmmError("machine: too many devices (out of interrupt lines)");
    snapshot::DeviceLayout layout;
    layout.kind = kind;
    layout.gsi = next_gsi_++;
    layout.mmio_base = next_mmio_base_;
    next_mmio_base_ += kVirtioMmioWindow;
    *irq = std::make_shared<IrqfdLine>(vm_, layout.gsi);
    irq_lines_.push_back(*irq);
    return layout;
  };
  for (size_t i = 0; i < config.disks.size(); ++i) {
    DiskSlotConfig& disk = config.disks[i];
    std::shared_ptr<IrqLine> irq;
    snapshot::DeviceLayout layout = next_slot(snapshot::DeviceKind::kBlock, &irq);
    layout.read_only = disk.read_only;
    layout.serial = disk.serial;
    auto device = virtio::MakeVirtioBlock(std::move(disk.file), disk.read_only, disk.serial);
    AddVirtioDevice(std::make_shared<virtio::MmioTransport>(device, *memory_, irq), std::move(layout));
  }
  if (config.vsock) {
    VsockConfig& vsock = *config.vsock;
    UniqueFd listener = std::move(vsock.listener);
    if (!listener.valid()) {
      listener = virtio::ListenUnixSocket(vsock.uds_path);
      vsock_path_to_remove_.path = vsock.uds_path;
    }
    std::shared_ptr<IrqLine> irq;
    snapshot::DeviceLayout layout = next_slot(snapshot::DeviceKind::kVsock, &irq);
    layout.guest_cid = vsock.guest_cid;
    auto device = virtio::MakeVirtioVsock(vsock.guest_cid, std::move(listener), event_loop_);
    AddVirtioDevice(std::make_shared<virtio::MmioTransport>(device, *memory_, irq), std::move(layout));
  }
  if (config.rng) {
    std::shared_ptr<IrqLine> irq;
    snapshot::DeviceLayout layout = next_slot(snapshot::DeviceKind::kRng, &irq);
    AddVirtioDevice(std::make_shared<virtio::MmioTransport>(virtio::MakeVirtioRng(), *memory_, irq),
                    std::move(layout));
  }
}

void Machine::Start() {
  if (!threads_.empty()) throw VmmError("machine: already started");
  InstallVcpuKickSignalHandler();
  event_loop_.Start();
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    control_.ThreadStarted();  // counted before the thread runs, so Pause() waits for it
    threads_.emplace_back([this, i] { VcpuThreadMain(i); });
  }
}

void Machine::Pause() {
  control_.RequestPause();
  KickVcpus();
  control_.WaitUntilPaused();
  paused_ = true;
}

void Machine::Resume() {
  paused_ = false;
  control_.Resume();
}

void Machine::Stop(const MachineExit& exit) {
  ReportExit(exit);
  JoinVcpus();
}

void Machine::VcpuThreadMain(size_t index) {
  try {
    const VcpuExit exit = vcpus_[index]->Run(pio_bus_, mmio_bus_, control_);
    if (exit.kind != VcpuExitKind::kStopRequested) {
      ReportExit({ExitReasonFor(exit.kind), exit.detail});
    }
  } catch (const std::exception& error) {
    ReportExit({ExitReason::kVmmFault, std::string("vcpu ") + std::to_string(index) + ": " + error.what()});
  }
  control_.ThreadFinished();
}

void Machine::ReportExit(const MachineExit& exit) {
  {
    std::lock_guard<std::mutex> lock(exit_mutex_);
    if (exit_reported_) return;
    exit_reported_ = true;
  }
  control_.RequestStop();
  KickVcpus();
  if (on_exit_) on_exit_(exit);
}

void Machine::KickVcpus() {
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    vcpus_[i]->RequestImmediateExit();
    // A thread that finished but is not joined yet still has a valid handle.
    if (i < threads_.size() && threads_[i].joinable())
      pthread_kill(threads_[i].native_handle(), kVcpuKickSignal);
  }
}

void Machine::JoinVcpus() {
  for (std::thread& thread : threads_) {
    if (thread.joinable() && thread.get_id() != std::this_thread::get_id()) thread.join();
  }
}

}  // namespace smolvm
