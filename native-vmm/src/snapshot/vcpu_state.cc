#include "snapshot/vcpu_state.h"

#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "kvm/vcpu.h"
#include "util/error.h"

namespace smolvm::snapshot {
namespace {

constexpr uint32_t kMaxCpuidEntries = 1024;
constexpr uint32_t kMaxMsrs = 4096;

std::string Name(const Vcpu& vcpu) { return "vcpu " + std::to_string(vcpu.index()); }

template <typename T>
void GetRequired(const Vcpu& vcpu, unsigned long request, const char* name, T* value) {
  if (::ioctl(vcpu.fd(), request, value) != 0) throw SysError(Name(vcpu) + ": " + name);
}

template <typename T>
bool GetOptional(const Vcpu& vcpu, unsigned long request, const char* name, T* value,
                 std::vector<std::string>& warnings) {
  if (::ioctl(vcpu.fd(), request, value) == 0) return true;
  warnings.push_back(SysError(Name(vcpu) + ": " + name + " refused, not saved").what());
  return false;
}

template <typename T>
void SetRequired(Vcpu& vcpu, unsigned long request, const char* name, const T* value) {
  if (::ioctl(vcpu.fd(), request, value) != 0) throw SysError(Name(vcpu) + ": " + name);
}

template <typename T>
void SetOptional(Vcpu& vcpu, unsigned long request, const char* name, const T* value,
                 std::vector<std::string>& warnings) {
  if (::ioctl(vcpu.fd(), request, value) != 0)
    warnings.push_back(SysError(Name(vcpu) + ": " + name + " refused, not restored").what());
}

std::vector<kvm_cpuid_entry2> GetCpuid(const Vcpu& vcpu, std::vector<std::string>& warnings) {
  for (uint32_t capacity = 64; capacity <= kMaxCpuidEntries; capacity *= 2) {
    kvm_abi::CpuidRequest request(capacity);
    request.header()->nent = capacity;
    if (::ioctl(vcpu.fd(), kvm_abi::kGetCpuid2, request.arg()) == 0) {
      const uint32_t count = std::min(request.header()->nent, capacity);
      return std::vector<kvm_cpuid_entry2>(request.entries(), request.entries() + count);
    }
    if (errno != E2BIG) break;
  }
  warnings.push_back(SysError(Name(vcpu) + ": KVM_GET_CPUID2 refused, CPUID not saved").what());
  return {};
}

// KVM_GET_MSRS / KVM_SET_MSRS stop at the first MSR they refuse and return how many they
// handled: go on past each refusal, one batch at a time, and report what was refused.
template <bool kSet>
std::vector<kvm_msr_entry> TransferMsrs(const Vcpu& vcpu, std::vector<kvm_msr_entry> entries,
                                        std::vector<uint32_t>* refused) {
  std::vector<kvm_msr_entry> done;
  size_t next = 0;
  while (next < entries.size()) {
    const size_t count = entries.size() - next;
    kvm_abi::MsrsRequest request(count);
    request.header()->nmsrs = static_cast<uint32_t>(count);
    std::memcpy(request.entries(), entries.data() + next, count * sizeof(kvm_msr_entry));
    const int result = ::ioctl(vcpu.fd(), kSet ? kvm_abi::kSetMsrs : kvm_abi::kGetMsrs, request.arg());
    const size_t handled = result < 0 ? 0 : std::min(static_cast<size_t>(result), count);
    done.insert(done.end(), request.entries(), request.entries() + handled);
    next += handled;
    if (next < entries.size()) {
      refused->push_back(entries[next].index);
      ++next;
    }
  }
  return done;
}

std::string MsrList(const std::vector<uint32_t>& indices) {
  std::string text;
  for (uint32_t index : indices) {
    if (!text.empty()) text += ",";
    text += "0x" + Hex64(index).substr(8);
  }
  return text;
}

}  // namespace

VcpuState CaptureVcpu(const Vcpu& vcpu, const std::vector<uint32_t>& msr_index_list,
                      std::vector<std::string>& warnings) {
  // KVM_GET_MP_STATE first: it makes the LAPIC accept pending INIT/SIPI, which changes the
  // state read by the calls after it. Events last: the other reads may change them.
  VcpuState state;
  state.index = vcpu.index();
  GetRequired(vcpu, KVM_GET_MP_STATE, "KVM_GET_MP_STATE", &state.mp_state);
  GetRequired(vcpu, KVM_GET_REGS, "KVM_GET_REGS", &state.regs);
  GetRequired(vcpu, KVM_GET_SREGS, "KVM_GET_SREGS", &state.sregs);
  GetRequired(vcpu, KVM_GET_FPU, "KVM_GET_FPU", &state.fpu);
  state.has_xsave = GetOptional(vcpu, kvm_abi::kGetXsave, "KVM_GET_XSAVE", &state.xsave, warnings);
  state.has_xcrs = GetOptional(vcpu, KVM_GET_XCRS, "KVM_GET_XCRS", &state.xcrs, warnings);
  state.has_debugregs = GetOptional(vcpu, KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS", &state.debugregs, warnings);
  GetRequired(vcpu, KVM_GET_LAPIC, "KVM_GET_LAPIC", &state.lapic);
  const int tsc_khz = ::ioctl(vcpu.fd(), KVM_GET_TSC_KHZ, 0);
  if (tsc_khz > 0) {
    state.tsc_khz = static_cast<uint32_t>(tsc_khz);
  } else {
    warnings.push_back(SysError(Name(vcpu) + ": KVM_GET_TSC_KHZ refused").what());
  }
  state.cpuid = GetCpuid(vcpu, warnings);

  std::vector<kvm_msr_entry> wanted;
  for (uint32_t index : msr_index_list) {
    kvm_msr_entry entry{};
    entry.index = index;
    wanted.push_back(entry);
  }
  std::vector<uint32_t> refused;
  state.msrs = TransferMsrs<false>(vcpu, std::move(wanted), &refused);
  if (!refused.empty())
    warnings.push_back(Name(vcpu) + ": " + std::to_string(refused.size()) +
                       " listed MSRs not readable, not saved: " + MsrList(refused));
  state.has_events = GetOptional(vcpu, KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", &state.events, warnings);
  return state;
}

void ApplyVcpu(Vcpu& vcpu, const VcpuState& state, std::vector<std::string>& warnings) {
  if (state.index != vcpu.index())
    throw VmmError("snapshot holds vcpu " + std::to_string(state.index) + " for " + Name(vcpu));
  if (state.tsc_khz != 0) {
    const int current = ::ioctl(vcpu.fd(), KVM_GET_TSC_KHZ, 0);
    if (current > 0 && static_cast<uint32_t>(current) != state.tsc_khz &&
        ::ioctl(vcpu.fd(), KVM_SET_TSC_KHZ, static_cast<unsigned long>(state.tsc_khz)) != 0)
      warnings.push_back(SysError(Name(vcpu) + ": TSC runs at " + std::to_string(current) +
                                  " kHz, snapshot at " + std::to_string(state.tsc_khz) +
                                  " kHz; KVM_SET_TSC_KHZ refused")
                             .what());
  }
  // Without a saved CPUID the vCPU keeps what the machine derived from the host's (the same
  // host CPUID, as the identity check made sure).
  if (!state.cpuid.empty()) {
    kvm_abi::CpuidRequest request(state.cpuid.size());
    request.header()->nent = static_cast<uint32_t>(state.cpuid.size());
    std::memcpy(request.entries(), state.cpuid.data(), state.cpuid.size() * sizeof(kvm_cpuid_entry2));
    if (::ioctl(vcpu.fd(), kvm_abi::kSetCpuid2, request.arg()) != 0)
      warnings.push_back(SysError(Name(vcpu) + ": KVM_SET_CPUID2 of the saved CPUID refused").what());
  }
  SetRequired(vcpu, KVM_SET_MP_STATE, "KVM_SET_MP_STATE", &state.mp_state);
  SetRequired(vcpu, KVM_SET_REGS, "KVM_SET_REGS", &state.regs);
  SetRequired(vcpu, KVM_SET_SREGS, "KVM_SET_SREGS", &state.sregs);
  if (state.has_xsave) {
    SetRequired(vcpu, kvm_abi::kSetXsave, "KVM_SET_XSAVE", &state.xsave);
  } else {
    SetRequired(vcpu, KVM_SET_FPU, "KVM_SET_FPU", &state.fpu);
  }
  if (state.has_xcrs) SetOptional(vcpu, KVM_SET_XCRS, "KVM_SET_XCRS", &state.xcrs, warnings);
  if (state.has_debugregs)
    SetOptional(vcpu, KVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS", &state.debugregs, warnings);
  SetRequired(vcpu, KVM_SET_LAPIC, "KVM_SET_LAPIC", &state.lapic);
  std::vector<uint32_t> refused;
  TransferMsrs<true>(vcpu, state.msrs, &refused);
  if (!refused.empty())
    warnings.push_back(Name(vcpu) + ": " + std::to_string(refused.size()) +
                       " saved MSRs refused, not restored: " + MsrList(refused));
  if (state.has_events)
    SetOptional(vcpu, KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", &state.events, warnings);
}

void EncodeVcpu(StateWriter& out, const VcpuState& state) {
  out.U32(state.index);
  PutStruct(out, state.mp_state);
  PutStruct(out, state.regs);
  PutStruct(out, state.sregs);
  PutStruct(out, state.fpu);
  out.U8(state.has_xsave ? 1 : 0);
  if (state.has_xsave) PutStruct(out, state.xsave);
  out.U8(state.has_xcrs ? 1 : 0);
  if (state.has_xcrs) PutStruct(out, state.xcrs);
  out.U8(state.has_debugregs ? 1 : 0);
  if (state.has_debugregs) PutStruct(out, state.debugregs);
  PutStruct(out, state.lapic);
  out.U32(state.tsc_khz);
  out.U32(static_cast<uint32_t>(state.cpuid.size()));
  for (const kvm_cpuid_entry2& entry : state.cpuid) PutStruct(out, entry);
  out.U32(static_cast<uint32_t>(state.msrs.size()));
  for (const kvm_msr_entry& entry : state.msrs) {
    out.U32(entry.index);
    out.U64(entry.data);
  }
  out.U8(state.has_events ? 1 : 0);
  if (state.has_events) PutStruct(out, state.events);
}

VcpuState DecodeVcpu(StateReader& in) {
  VcpuState state;
  state.index = in.U32();
  state.mp_state = GetStruct<kvm_mp_state>(in, "mp_state");
  state.regs = GetStruct<kvm_regs>(in, "regs");
  state.sregs = GetStruct<kvm_sregs>(in, "sregs");
  state.fpu = GetStruct<kvm_fpu>(in, "fpu");
  state.has_xsave = GetBool(in, "xsave present");
  if (state.has_xsave) state.xsave = GetStruct<kvm_abi::Xsave>(in, "xsave");
  state.has_xcrs = GetBool(in, "xcrs present");
  if (state.has_xcrs) state.xcrs = GetStruct<kvm_xcrs>(in, "xcrs");
  state.has_debugregs = GetBool(in, "debugregs present");
  if (state.has_debugregs) state.debugregs = GetStruct<kvm_debugregs>(in, "debugregs");
  state.lapic = GetStruct<kvm_lapic_state>(in, "lapic");
  state.tsc_khz = in.U32();
  const uint32_t cpuid_count = in.U32();
  if (cpuid_count > kMaxCpuidEntries) in.Fail(std::to_string(cpuid_count) + " CPUID entries is too many");
  for (uint32_t i = 0; i < cpuid_count; ++i) state.cpuid.push_back(GetStruct<kvm_cpuid_entry2>(in, "cpuid entry"));
  const uint32_t msr_count = in.U32();
  if (msr_count > kMaxMsrs) in.Fail(std::to_string(msr_count) + " MSRs is too many");
  for (uint32_t i = 0; i < msr_count; ++i) {
    kvm_msr_entry entry{};
    entry.index = in.U32();
    entry.data = in.U64();
    state.msrs.push_back(entry);
  }
  state.has_events = GetBool(in, "vcpu events present");
  if (state.has_events) state.events = GetStruct<kvm_vcpu_events>(in, "vcpu events");
  return state;
}

}  // namespace smolvm::snapshot
