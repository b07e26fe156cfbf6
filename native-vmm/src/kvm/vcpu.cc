#include "kvm/vcpu.h"

#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <vector>

#include "kvm/kvm_abi.h"
#include "util/error.h"

namespace smolvm {
namespace {

// MSRs given boot values (when the host lists them): the SYSCALL/SYSENTER set cleared, fast
// strings on, MTRRs enabled with write-back as the default type.
struct MsrBootValue {
  uint32_t index;
  uint64_t value;
};
constexpr MsrBootValue kBootMsrs[] = {
    {0x174, 0},                      // IA32_SYSENTER_CS
    {0x175, 0},                      // IA32_SYSENTER_ESP
    {0x176, 0},                      // IA32_SYSENTER_EIP
    {0xc0000081, 0},                 // STAR
    {0xc0000082, 0},                 // LSTAR
    {0xc0000083, 0},                 // CSTAR
    {0xc0000084, 0},                 // SYSCALL_MASK
    {0xc0000102, 0},                 // KERNEL_GS_BASE
    {0x10, 0},                       // TSC
    {0x1a0, 1},                      // IA32_MISC_ENABLE: fast strings
    {0x2ff, (1u << 11) | 6},         // MTRRdefType: enabled, write-back
};

constexpr uint32_t kLapicLvtLint0 = 0x350;
constexpr uint32_t kLapicLvtLint1 = 0x360;
constexpr uint32_t kDeliveryModeExtInt = 0x7;
constexpr uint32_t kDeliveryModeNmi = 0x4;

uint32_t SetDeliveryMode(uint32_t lvt, uint32_t mode) {
  return (lvt & ~0x700u) | (mode << 8);
}

std::string Hex(uint64_t value) {
  char text[24];
  std::snprintf(text, sizeof(text), "0x%llx", static_cast<unsigned long long>(value));
  return text;
}

const char* InternalErrorName(uint32_t suberror) {
  switch (suberror) {
    case KVM_INTERNAL_ERROR_EMULATION: return "instruction emulation failed";
    case KVM_INTERNAL_ERROR_SIMUL_EX: return "exception while delivering an exception";
    case KVM_INTERNAL_ERROR_DELIVERY_EV: return "event delivery failed";
    case KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: return "unexpected hardware exit reason";
    default: return "unknown internal error";
  }
}

uint32_t BitsFor(uint32_t count) {
  uint32_t bits = 0;
  while ((1u << bits) < count) ++bits;
  return bits;
}

void OnKickSignal(int) {}  // only interrupts KVM_RUN

}  // namespace

const char* VcpuExitKindName(VcpuExitKind kind) {
  switch (kind) {
    case VcpuExitKind::kStopRequested: return "stop requested";
    case VcpuExitKind::kHalt: return "halt";
    case VcpuExitKind::kTripleFault: return "triple fault";
    case VcpuExitKind::kSystemShutdown: return "system shutdown";
    case VcpuExitKind::kSystemReset: return "system reset";
    case VcpuExitKind::kSystemCrash: return "system crash";
    case VcpuExitKind::kInternalError: return "internal error";
    case VcpuExitKind::kFailEntry: return "entry failed";
    case VcpuExitKind::kUnhandled: return "unhandled exit";
    case VcpuExitKind::kRunFailed: return "KVM_RUN failed";
  }
  return "unknown";
}

void InstallVcpuKickSignalHandler() {
  struct sigaction action {};
  action.sa_handler = OnKickSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
  if (::sigaction(kVcpuKickSignal, &action, nullptr) != 0)
    throw SysError("vcpu: sigaction for the kick signal");
}

Vcpu::Vcpu(KvmVm& vm, uint32_t index) : vm_(vm), index_(index) {
  fd_.reset(::ioctl(vm.fd(), KVM_CREATE_VCPU, static_cast<unsigned long>(index)));
  if (!fd_.valid()) throw SysError("vcpu " + std::to_string(index) + ": KVM_CREATE_VCPU");
  run_size_ = static_cast<size_t>(vm.system().VcpuMmapSize());
  void* mapping = ::mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (mapping == MAP_FAILED) throw SysError("vcpu " + std::to_string(index) + ": mmap kvm_run");
  run_ = static_cast<kvm_run*>(mapping);
}

Vcpu::~Vcpu() {
  if (run_ != nullptr) ::munmap(run_, run_size_);
}

std::string Vcpu::ConfigureCpuid(uint32_t vcpu_count) {
  std::vector<kvm_cpuid_entry2> entries = vm_.system().SupportedCpuid();
  if (entries.empty()) return "no supported CPUID from the host (" + vm_.system().cpuid_error() + ")";
  const uint32_t apic_id = index_;
  for (kvm_cpuid_entry2& entry : entries) {
    switch (entry.function) {
      case 0x1:
        // EBX[31:24] initial APIC id, EBX[23:16] logical processors per package.
        entry.ebx = (entry.ebx & 0x0000ffffu) | (apic_id << 24) |
                    ((vcpu_count > 255 ? 255 : vcpu_count) << 16);
        if (vcpu_count > 1) entry.edx |= 1u << 28;  // HTT: the count above is meaningful
        entry.ecx |= 1u << 31;                      // running under a hypervisor
        break;
      case 0xb:
      case 0x1f:
        // Flat topology: level 0 (SMT) one thread per core, level 1 (core) all vCPUs.
        if (entry.index == 0) {
          entry.eax = 0;
          entry.ebx = 1;
          entry.ecx = (1u << 8) | 0;
        } else if (entry.index == 1) {
          entry.eax = BitsFor(vcpu_count);
          entry.ebx = vcpu_count;
          entry.ecx = (2u << 8) | 1;
        } else {
          entry.eax = 0;
          entry.ebx = 0;
          entry.ecx = entry.index;
        }
        entry.edx = apic_id;  // x2APIC id
        break;
      default:
        break;  // everything else, including 0x40000000 (KVM's signature), passes through
    }
  }
  kvm_abi::CpuidRequest cpuid(entries.size());
  cpuid.header()->nent = static_cast<uint32_t>(entries.size());
  std::memcpy(cpuid.entries(), entries.data(), entries.size() * sizeof(kvm_cpuid_entry2));
  if (::ioctl(fd_.get(), kvm_abi::kSetCpuid2, cpuid.arg()) != 0)
    return SysError("vcpu " + std::to_string(index_) + ": KVM_SET_CPUID2").what();
  return "";
}

int Vcpu::ConfigureMsrs() {
  const std::vector<uint32_t>& listed = vm_.system().MsrIndexList();
  int refused = 0;
  for (const MsrBootValue& msr : kBootMsrs) {
    bool is_listed = false;
    for (uint32_t index : listed) is_listed = is_listed || index == msr.index;
    if (!is_listed) continue;
    kvm_abi::MsrsRequest one(1);
    one.header()->nmsrs = 1;
    one.entries()[0].index = msr.index;
    one.entries()[0].data = msr.value;
    // KVM_SET_MSRS returns how many it set: 0 means this MSR was refused, which a PVM or
    // nested host may do for MSRs it lists; the guest then sees the host's default.
    if (::ioctl(fd_.get(), kvm_abi::kSetMsrs, one.arg()) != 1) ++refused;
  }
  return refused;
}

void Vcpu::ConfigureLapic() {
  kvm_lapic_state lapic{};
  if (::ioctl(fd_.get(), KVM_GET_LAPIC, &lapic) != 0)
    throw SysError("vcpu " + std::to_string(index_) + ": KVM_GET_LAPIC");
  uint32_t lint0 = 0, lint1 = 0;
  std::memcpy(&lint0, lapic.regs + kLapicLvtLint0, 4);
  std::memcpy(&lint1, lapic.regs + kLapicLvtLint1, 4);
  lint0 = SetDeliveryMode(lint0, kDeliveryModeExtInt);
  lint1 = SetDeliveryMode(lint1, kDeliveryModeNmi);
  std::memcpy(lapic.regs + kLapicLvtLint0, &lint0, 4);
  std::memcpy(lapic.regs + kLapicLvtLint1, &lint1, 4);
  if (::ioctl(fd_.get(), KVM_SET_LAPIC, &lapic) != 0)
    throw SysError("vcpu " + std::to_string(index_) + ": KVM_SET_LAPIC");
}

void Vcpu::ConfigureFpu() {
  kvm_fpu fpu{};
  fpu.fcw = 0x37f;
  fpu.mxcsr = 0x1f80;
  if (::ioctl(fd_.get(), KVM_SET_FPU, &fpu) != 0)
    throw SysError("vcpu " + std::to_string(index_) + ": KVM_SET_FPU");
}

kvm_regs Vcpu::GetRegs() const {
  kvm_regs regs{};
  if (::ioctl(fd_.get(), KVM_GET_REGS, &regs) != 0)
    throw SysError("vcpu " + std::to_string(index_) + ": KVM_GET_REGS");
  return regs;
}

void Vcpu::SetRegs(const kvm_regs& regs) {
  if (::ioctl(fd_.get(), KVM_SET_REGS, &regs) != 0)
    throw SysError("vcpu " + std::to_string(index_) + ": KVM_SET_REGS");
}

kvm_sregs Vcpu::GetSregs() const {
  kvm_sregs sregs{};
  if (::ioctl(fd_.get(), KVM_GET_SREGS, &sregs) != 0)
    throw SysError("vcpu " + std::to_string(index_) + ": KVM_GET_SREGS");
  return sregs;
}

void Vcpu::SetSregs(const kvm_sregs& sregs) {
  if (::ioctl(fd_.get(), KVM_SET_SREGS, &sregs) != 0)
    throw SysError("vcpu " + std::to_string(index_) + ": KVM_SET_SREGS");
}

void Vcpu::RequestImmediateExit() {
  __atomic_store_n(&run_->immediate_exit, 1, __ATOMIC_SEQ_CST);
}

std::string Vcpu::DescribeState() const {
  kvm_regs regs{};
  kvm_sregs sregs{};
  if (::ioctl(fd_.get(), KVM_GET_REGS, &regs) != 0 ||
      ::ioctl(fd_.get(), KVM_GET_SREGS, &sregs) != 0)
    return "(registers unavailable)";
  return "rip=" + Hex(regs.rip) + " rsp=" + Hex(regs.rsp) + " rflags=" + Hex(regs.rflags) +
         " cs=" + Hex(sregs.cs.selector) + " cr0=" + Hex(sregs.cr0) + " cr3=" + Hex(sregs.cr3) +
         " cr4=" + Hex(sregs.cr4) + " efer=" + Hex(sregs.efer);
}

bool Vcpu::HandleIo(const Bus& pio_bus) {
  const auto& io = run_->io;
  const uint64_t bytes = static_cast<uint64_t>(io.size) * io.count;
  // The data area lies inside the kvm_run mapping; check rather than trust it.
  if (io.size == 0 || io.size > 8 || io.data_offset > run_size_ || bytes > run_size_ - io.data_offset)
    return false;
  uint8_t* data = reinterpret_cast<uint8_t*>(run_) + io.data_offset;
  for (uint32_t i = 0; i < io.count; ++i, data += io.size) {
    if (io.direction == KVM_EXIT_IO_OUT) {
      pio_bus.Write(io.port, data, io.size);
    } else {
      pio_bus.Read(io.port, data, io.size);  // unclaimed ports read as all-ones
    }
  }
  return true;
}

void Vcpu::HandleMmio(const Bus& mmio_bus) {
  auto& mmio = run_->mmio;
  const uint32_t len = mmio.len > sizeof(mmio.data) ? sizeof(mmio.data) : mmio.len;
  if (mmio.is_write) {
    mmio_bus.Write(mmio.phys_addr, mmio.data, len);
  } else {
    mmio_bus.Read(mmio.phys_addr, mmio.data, len);  // unclaimed MMIO reads as all-ones
  }
}

VcpuExit Vcpu::Run(const Bus& pio_bus, const Bus& mmio_bus, RunControl& control) {
  // KVM finishes a port I/O or MMIO instruction (the IN's register, the RIP past an OUT) only
  // on the next KVM_RUN: until then the registers are mid-instruction, and a snapshot taken
  // there would replay or lose it. Before parking for a pause, complete it without running
  // any further guest instruction (KVM_RUN with immediate_exit set returns EINTR right after).
  bool operation_pending = false;
  for (;;) {
    const RunControl::Step step = control.Checkpoint(operation_pending);
    if (step == RunControl::Step::kStop) return {VcpuExitKind::kStopRequested, ""};
    if (step == RunControl::Step::kCompleteFirst) {
      __atomic_store_n(&run_->immediate_exit, 1, __ATOMIC_SEQ_CST);
      const int result = ::ioctl(fd_.get(), KVM_RUN, 0);
      const int saved_errno = errno;
      __atomic_store_n(&run_->immediate_exit, 0, __ATOMIC_SEQ_CST);
      if (result != 0 && saved_errno != EINTR && saved_errno != EAGAIN)
        return {VcpuExitKind::kRunFailed, std::string("vcpu ") + std::to_string(index_) +
                                              ": KVM_RUN completing an I/O exit: " +
                                              std::strerror(saved_errno)};
      operation_pending = false;
      if (result != 0) continue;
      // Not expected with immediate_exit set, but an exit is an exit: handled below.
    } else if (::ioctl(fd_.get(), KVM_RUN, 0) != 0) {
      operation_pending = false;  // KVM completes a pending operation before it checks signals
      if (errno == EINTR || errno == EAGAIN) {
        // Kicked (pause/stop) or a signal: clear the request and look at the controls again.
        __atomic_store_n(&run_->immediate_exit, 0, __ATOMIC_SEQ_CST);
        continue;
      }
      return {VcpuExitKind::kRunFailed,
              std::string("vcpu ") + std::to_string(index_) + ": KVM_RUN: " + std::strerror(errno)};
    }
    operation_pending = false;
    switch (run_->exit_reason) {
      case KVM_EXIT_IO:
        if (!HandleIo(pio_bus))
          return {VcpuExitKind::kUnhandled, "malformed KVM_EXIT_IO data area"};
        operation_pending = true;
        break;
      case KVM_EXIT_MMIO:
        HandleMmio(mmio_bus);
        operation_pending = true;
        break;
      case KVM_EXIT_INTR:
        break;
      case KVM_EXIT_HLT:
        return {VcpuExitKind::kHalt, "vcpu " + std::to_string(index_) + " halted: " + DescribeState()};
      case KVM_EXIT_SHUTDOWN:
        return {VcpuExitKind::kTripleFault,
                "vcpu " + std::to_string(index_) + " entered shutdown (triple fault): " + DescribeState()};
      case KVM_EXIT_SYSTEM_EVENT:
        switch (run_->system_event.type) {
          case KVM_SYSTEM_EVENT_SHUTDOWN:
            return {VcpuExitKind::kSystemShutdown, "guest requested shutdown"};
          case KVM_SYSTEM_EVENT_RESET:
            return {VcpuExitKind::kSystemReset, "guest requested reset"};
          case KVM_SYSTEM_EVENT_CRASH:
            return {VcpuExitKind::kSystemCrash, "guest reported a crash"};
          default:
            return {VcpuExitKind::kUnhandled,
                    "unhandled KVM_EXIT_SYSTEM_EVENT type " + std::to_string(run_->system_event.type)};
        }
      case KVM_EXIT_INTERNAL_ERROR: {
        const auto& internal = run_->internal;
        std::string detail = "vcpu " + std::to_string(index_) + ": KVM internal error " +
                             std::to_string(internal.suberror) + " (" +
                             InternalErrorName(internal.suberror) + ")";
        const uint32_t words = internal.ndata > 16 ? 16 : internal.ndata;
        if (words > 0) {
          detail += ", data";
          for (uint32_t i = 0; i < words; ++i) detail += " " + Hex(internal.data[i]);
        }
        return {VcpuExitKind::kInternalError, detail + "; " + DescribeState()};
      }
      case KVM_EXIT_FAIL_ENTRY:
        return {VcpuExitKind::kFailEntry,
                "vcpu " + std::to_string(index_) + ": VM entry failed, hardware reason " +
                    Hex(run_->fail_entry.hardware_entry_failure_reason) + " on host cpu " +
                    std::to_string(run_->fail_entry.cpu) + "; " + DescribeState()};
      default:
        return {VcpuExitKind::kUnhandled, "vcpu " + std::to_string(index_) +
                                              ": unhandled KVM exit reason " +
                                              std::to_string(run_->exit_reason) + "; " + DescribeState()};
    }
  }
}

}  // namespace smolvm
