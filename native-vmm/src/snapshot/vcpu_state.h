// One vCPU's architectural state as KVM exposes it: MP state, registers, segment/control
// registers, FPU and XSAVE, XCRs, debug registers, LAPIC, the TSC frequency, its CPUID, every
// MSR of the host's index list that KVM lets us read (the TSC and kvmclock MSRs among them),
// and pending events. Captured from a parked vCPU, applied to a fresh one before its first run.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kvm/kvm_abi.h"
#include "snapshot/codec.h"

namespace smolvm {
class Vcpu;
}

namespace smolvm::snapshot {

constexpr uint32_t kVcpuSectionVersion = 1;

struct VcpuState {
  uint32_t index = 0;
  kvm_mp_state mp_state{};
  kvm_regs regs{};
  kvm_sregs sregs{};
  kvm_fpu fpu{};
  bool has_xsave = false;
  kvm_abi::Xsave xsave{};
  bool has_xcrs = false;
  kvm_xcrs xcrs{};
  bool has_debugregs = false;
  kvm_debugregs debugregs{};
  kvm_lapic_state lapic{};
  uint32_t tsc_khz = 0;  // 0: the host would not say
  std::vector<kvm_cpuid_entry2> cpuid;  // empty: the host would not say (restore re-derives it)
  std::vector<kvm_msr_entry> msrs;
  bool has_events = false;
  kvm_vcpu_events events{};
};

// Reads the state of a vCPU that is not running (parked or never started). The parts KVM
// must give (MP state, registers, LAPIC, FPU) throw VmmError when refused; the others are
// left out with a line in `warnings` (PVM refuses some ioctls and MSRs).
VcpuState CaptureVcpu(const Vcpu& vcpu, const std::vector<uint32_t>& msr_index_list,
                      std::vector<std::string>& warnings);

// Writes `state` into a fresh vCPU in the order KVM needs (CPUID first; LAPIC before the MSRs,
// whose TSC deadline depends on it; events last). Refusals of essential parts throw;
// refused MSRs and optional parts are reported in `warnings`.
void ApplyVcpu(Vcpu& vcpu, const VcpuState& state, std::vector<std::string>& warnings);

void EncodeVcpu(StateWriter& out, const VcpuState& state);
VcpuState DecodeVcpu(StateReader& in);

}  // namespace smolvm::snapshot
