// One microVM: guest memory, the KVM VM and its vCPUs, the device buses (serial, i8042, port
// sinks, virtio-mmio devices), the device event loop, and the vCPU threads. The per-VM process
// (vmm_main) and later the snapshot code drive it; it knows nothing of the control protocol.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "boot/linux_boot.h"
#include "devices/bus.h"
#include "devices/irq.h"
#include "kvm/kvm_system.h"
#include "kvm/run_control.h"
#include "kvm/vcpu.h"
#include "kvm/vm.h"
#include "memory/guest_memory.h"
#include "util/epoll_event_loop.h"
#include "util/fd.h"

namespace smolvm {

struct DiskSlotConfig {
  UniqueFd file;
  bool read_only = false;
  std::string serial;  // virtio-blk serial (≤ 20 bytes), how the guest tells slots apart
};

struct VsockConfig {
  uint64_t guest_cid = 3;
  UniqueFd listener;       // a listening unix socket handed in, or...
  std::string uds_path;    // ...a path the VMM listens on itself (and removes at the end)
};

struct MachineConfig {
  uint64_t memory_bytes = 0;
  uint32_t vcpu_count = 1;
  UniqueFd kernel;
  UniqueFd initramfs;        // optional
  std::string cmdline;       // the VMM appends the virtio_mmio.device=... declarations
  UniqueFd serial_output;    // optional: COM1 output
  BootProtocol boot_protocol = BootProtocol::kAuto;
  std::vector<DiskSlotConfig> disks;
  std::optional<VsockConfig> vsock;
  bool rng = true;           // virtio-rng from the host's getrandom()
  int kvm_fd = -1;           // /dev/kvm handed in by a jailer, else opened here
};

enum class ExitReason {
  kGuestShutdown,   // the guest powered off
  kGuestReset,      // the guest rebooted (i8042 reset, triple fault, reset event)
  kGuestHalt,       // a vCPU halted with nothing to wake it (no in-kernel LAPIC)
  kGuestCrash,      // the guest reported a crash
  kInternalError,   // KVM could not run the guest (internal error, unhandled exit)
  kEntryFailed,     // VM entry failed
  kVmmFault,        // the VMM itself failed
  kStopped,         // asked to stop by the controller
};

const char* ExitReasonName(ExitReason reason);  // "guest_shutdown", "guest_reset", ...

struct MachineExit {
  ExitReason reason;
  std::string detail;
};

class Machine {
 public:
  // Builds everything and loads the guest (nothing runs yet). `on_exit` is called once, from
  // whatever thread saw the guest end (a vCPU thread, usually): it must only hand the news on
  // (e.g. write an eventfd), never call back into the Machine. Throws VmmError.
  Machine(MachineConfig config, std::function<void(const MachineExit&)> on_exit);
  ~Machine();  // stops the vCPUs and the event loop
  Machine(const Machine&) = delete;
  Machine& operator=(const Machine&) = delete;

  void Start();   // starts the vCPU threads
  void Pause();   // returns once every vCPU is parked
  void Resume();
  // Ends the VM from the controller: reports `exit` (unless the guest ended first) and joins
  // the vCPU threads. Not from a vCPU thread or inside on_exit.
  void Stop(const MachineExit& exit);

  const std::string& boot_description() const { return boot_description_; }
  const std::string& kernel_cmdline() const { return cmdline_; }
  const GuestMemory& memory() const { return *memory_; }

 private:
  void AddVirtioDevices(MachineConfig& config);
  void AddVirtioDevice(std::shared_ptr<BusDevice> transport, uint32_t gsi, uint64_t base);
  void VcpuThreadMain(size_t index);
  void ReportExit(const MachineExit& exit);
  void KickVcpus();
  void JoinVcpus();

  std::function<void(const MachineExit&)> on_exit_;
  std::mutex exit_mutex_;
  bool exit_reported_ = false;

  KvmSystem system_;
  std::unique_ptr<GuestMemory> memory_;
  KvmVm vm_;
  EpollEventLoop event_loop_;
  Bus pio_bus_;
  Bus mmio_bus_;
  UniqueFd serial_output_;
  struct PathRemover {  // removes the vsock socket path the VMM created, even on a failed set-up
    std::string path;
    ~PathRemover();
  } vsock_path_to_remove_;
  std::vector<std::shared_ptr<IrqLine>> irq_lines_;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
  RunControl control_;
  std::vector<std::thread> threads_;
  std::string cmdline_;
  std::string boot_description_;
  uint32_t next_gsi_;
  uint64_t next_mmio_base_;
};

}  // namespace smolvm
