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
#include "snapshot/machine_state.h"
#include "util/epoll_event_loop.h"
#include "util/fd.h"
#include "vm/loop_parking.h"

namespace smolvm {

class Serial;
class I8042;
namespace virtio {
class MmioTransport;
}

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

// What a restore starts from: the decoded state file and the memory file it names. The
// MachineConfig given with it supplies the host side only (kvm fd, serial output, the disks'
// files by slot, the vsock socket); its memory size, vCPU count, device layout and command
// line must agree with the snapshot's layout (snapshot::MachineLayout).
struct MachineRestore {
  snapshot::MachineSnapshot state;
  UniqueFd memory_file;
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
  // Restores a snapshot instead of booting: refuses one taken by another VMM build, on another
  // host kind or with another host CPUID; maps the memory file MAP_PRIVATE (lazy,
  // copy-on-write, shared with every other VM restored from it); rebuilds the devices with the
  // layout of the snapshot over the new host files and puts back the KVM, vCPU and device
  // state. `start` then continues the guest where it was paused. Throws VmmError.
  Machine(MachineConfig config, MachineRestore restore, std::function<void(const MachineExit&)> on_exit);
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
  const KvmSystem& system() const { return system_; }
  // Memory size, vCPUs, command line and the virtio devices in order (what a restore must match).
  snapshot::MachineLayout Layout() const;
  // What KVM refused while restoring (PVM refuses some ioctls and MSRs); empty after a boot.
  const std::vector<std::string>& restore_warnings() const { return restore_warnings_; }

  // Everything but guest memory, from a paused (or never started) machine; refusals of
  // optional state go to `warnings`. Throws VmmError while vCPUs run.
  snapshot::MachineSnapshot CaptureState(std::vector<std::string>& warnings) const;
  // Holds the device event loop still (see vm/loop_parking.h) while the returned object lives;
  // null when the loop is not running. Take it after Pause(), before CaptureState and the
  // memory file, and drop it before Resume().
  std::unique_ptr<EventLoopParking> ParkDeviceLoop();
  // The file behind the disk slot with this serial was rewritten in place: take its new size
  // and tell the guest (virtio-blk config change). Returns the capacity in bytes. Throws
  // VmmError for an unknown serial or a file that cannot be sized.
  uint64_t RefreshDisk(const std::string& serial);

 private:
  // The parts a boot and a restore share: KVM, memory slots, irqchip, devices, vCPUs.
  // `restoring` (may be null): the identity of the snapshot, checked against this host before
  // anything else is built.
  Machine(MachineConfig& config, std::unique_ptr<GuestMemory> memory,
          std::function<void(const MachineExit&)> on_exit, const snapshot::HostIdentity* restoring);
  void ApplyRestore(const MachineRestore& restore);
  void AddVirtioDevices(MachineConfig& config);
  void AddVirtioDevice(std::shared_ptr<virtio::MmioTransport> transport,
                       snapshot::DeviceLayout layout);
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
  std::shared_ptr<Serial> serial_;
  std::shared_ptr<I8042> i8042_;
  std::vector<std::shared_ptr<virtio::MmioTransport>> transports_;
  std::vector<snapshot::DeviceLayout> device_layout_;  // parallel to transports_
  std::vector<std::string> restore_warnings_;
  bool paused_ = false;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
  RunControl control_;
  std::vector<std::thread> threads_;
  std::string cmdline_;
  std::string boot_description_;
  uint32_t next_gsi_;
  uint64_t next_mmio_base_;
};

}  // namespace smolvm
