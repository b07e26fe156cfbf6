// One virtual CPU: its mmap'd kvm_run, CPUID/MSR/LAPIC set-up, register access and the run
// loop that dispatches port I/O and MMIO exits to the buses. Every exit the VMM does not
// handle ends the loop with a reason that says what happened; nothing leaves it spinning.
#pragma once

#include <linux/kvm.h>

#include <csignal>

#include <cstdint>
#include <string>

#include "devices/bus.h"
#include "kvm/run_control.h"
#include "kvm/vm.h"
#include "util/fd.h"

namespace smolvm {

enum class VcpuExitKind {
  kStopRequested,   // RunControl asked the thread to leave
  kHalt,            // KVM_EXIT_HLT (only without an in-kernel LAPIC)
  kTripleFault,     // KVM_EXIT_SHUTDOWN: x86 shutdown state (triple fault), a reset request
  kSystemShutdown,  // KVM_EXIT_SYSTEM_EVENT shutdown
  kSystemReset,     // KVM_EXIT_SYSTEM_EVENT reset
  kSystemCrash,     // KVM_EXIT_SYSTEM_EVENT crash
  kInternalError,   // KVM_EXIT_INTERNAL_ERROR
  kFailEntry,       // KVM_EXIT_FAIL_ENTRY
  kUnhandled,       // an exit reason the VMM does not implement
  kRunFailed,       // the KVM_RUN ioctl itself failed
};

struct VcpuExit {
  VcpuExitKind kind;
  std::string detail;  // human-readable: registers, error codes, the exit reason
};

const char* VcpuExitKindName(VcpuExitKind kind);

class Vcpu {
 public:
  // KVM_CREATE_VCPU with id `index` (also its APIC id) and the mapping of its kvm_run.
  Vcpu(KvmVm& vm, uint32_t index);
  ~Vcpu();
  Vcpu(const Vcpu&) = delete;
  Vcpu& operator=(const Vcpu&) = delete;

  uint32_t index() const { return index_; }
  int fd() const { return fd_.get(); }

  // CPUID from KVM_GET_SUPPORTED_CPUID (hypervisor leaves 0x40000000+ kept) with this vCPU's
  // APIC id in leaves 1, 0xb and 0x1f and a flat topology of `vcpu_count` CPUs. Returns an
  // empty string, or why the host's KVM refused (the vCPU then keeps KVM's default CPUID).
  std::string ConfigureCpuid(uint32_t vcpu_count);
  // Boot values for the MSRs the host lists in KVM_GET_MSR_INDEX_LIST; refusals are tolerated.
  // Returns how many were refused.
  int ConfigureMsrs();
  // LAPIC LINT0 = ExtINT (the PIC), LINT1 = NMI, as firmware leaves them.
  void ConfigureLapic();
  // x87/SSE state as after reset (FCW 0x37f, MXCSR 0x1f80).
  void ConfigureFpu();

  kvm_regs GetRegs() const;
  void SetRegs(const kvm_regs& regs);
  kvm_sregs GetSregs() const;
  void SetSregs(const kvm_sregs& sregs);

  // The run loop (call on the vCPU's own thread). Returns when the guest or `control` ends it.
  VcpuExit Run(const Bus& pio_bus, const Bus& mmio_bus, RunControl& control);
  // Makes a KVM_RUN in progress (or the next one) return at once; pair with a signal to the
  // vCPU thread so that a blocked KVM_RUN (a halted guest) returns too.
  void RequestImmediateExit();

 private:
  std::string DescribeState() const;  // RIP/RSP/CR0/... for error details
  bool HandleIo(const Bus& pio_bus);
  void HandleMmio(const Bus& mmio_bus);

  KvmVm& vm_;
  uint32_t index_;
  UniqueFd fd_;
  kvm_run* run_ = nullptr;
  size_t run_size_ = 0;
};

// Installs the no-op handler of the signal used to kick vCPU threads out of KVM_RUN
// (SIGUSR1, without SA_RESTART). Call once before starting vCPU threads.
void InstallVcpuKickSignalHandler();
constexpr int kVcpuKickSignal = SIGUSR1;

}  // namespace smolvm
