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
    : on_exit_(std::move(on_exit)),
      system_(config.kvm_fd),
      memory_(GuestMemory::Create(CheckedMemorySize(config.memory_bytes))),
      vm_(system_),
      serial_output_(std::move(config.serial_output)),
      cmdline_(config.cmdline),
      next_gsi_(kFirstVirtioGsi),
      next_mmio_base_(kVirtioMmioBase) {
  if (config.vcpu_count == 0 || config.vcpu_count > kMaxVcpus)
    throw VmmError("machine: vcpus must be 1.." + std::to_string(kMaxVcpus));
  if (!config.kernel.valid()) throw VmmError("machine: no kernel");

  vm_.MapGuestMemory(*memory_);
  vm_.CreateIrqchipAndPit();

  // Legacy devices on the port bus.
  auto serial_irq = std::make_shared<IrqfdLine>(vm_, kCom1Gsi);
  irq_lines_.push_back(serial_irq);
  pio_bus_.Insert(std::make_shared<Serial>(serial_irq, serial_output_.get()), kCom1Base, kCom1Size);
  pio_bus_.Insert(std::make_shared<I8042>([this] {
                    ReportExit({ExitReason::kGuestReset, "the guest reset the machine through the i8042 (0xFE on port 0x64)"});
                  }),
                  kI8042DataPort, kI8042CommandPort - kI8042DataPort + 1);
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

void Machine::AddVirtioDevice(std::shared_ptr<BusDevice> transport, uint32_t gsi, uint64_t base) {
  if (!mmio_bus_.Insert(std::move(transport), base, kVirtioMmioWindow))
    throw VmmError("machine: virtio MMIO window overlaps another device");
  cmdline_ += " " + virtio::MmioTransport::KernelCmdlineArg(base, gsi);
}

void Machine::AddVirtioDevices(MachineConfig& config) {
  auto next_slot = [this](std::shared_ptr<IrqLine>* irq) {
    if (next_gsi_ > kLastGsi) throw VmmError("machine: too many devices (out of interrupt lines)");
    const uint32_t gsi = next_gsi_++;
    const uint64_t base = next_mmio_base_;
    next_mmio_base_ += kVirtioMmioWindow;
    *irq = std::make_shared<IrqfdLine>(vm_, gsi);
    irq_lines_.push_back(*irq);
    return std::make_pair(gsi, base);
  };
  for (size_t i = 0; i < config.disks.size(); ++i) {
    DiskSlotConfig& disk = config.disks[i];
    std::shared_ptr<IrqLine> irq;
    auto [gsi, base] = next_slot(&irq);
    auto device = virtio::MakeVirtioBlock(std::move(disk.file), disk.read_only, disk.serial);
    AddVirtioDevice(std::make_shared<virtio::MmioTransport>(device, *memory_, irq), gsi, base);
  }
  if (config.vsock) {
    VsockConfig& vsock = *config.vsock;
    UniqueFd listener = std::move(vsock.listener);
    if (!listener.valid()) {
      listener = virtio::ListenUnixSocket(vsock.uds_path);
      vsock_path_to_remove_.path = vsock.uds_path;
    }
    std::shared_ptr<IrqLine> irq;
    auto [gsi, base] = next_slot(&irq);
    auto device = virtio::MakeVirtioVsock(vsock.guest_cid, std::move(listener), event_loop_);
    AddVirtioDevice(std::make_shared<virtio::MmioTransport>(device, *memory_, irq), gsi, base);
  }
  if (config.rng) {
    std::shared_ptr<IrqLine> irq;
    auto [gsi, base] = next_slot(&irq);
    AddVirtioDevice(std::make_shared<virtio::MmioTransport>(virtio::MakeVirtioRng(), *memory_, irq),
                    gsi, base);
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
}

void Machine::Resume() { control_.Resume(); }

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
