// The VM-wide KVM state: the in-kernel irqchip (PIC master and slave, IOAPIC), the PIT and the
// kvmclock. Captured while every vCPU is parked; applied right after KVM_CREATE_IRQCHIP and
// KVM_CREATE_PIT2 on the restoring side.
#pragma once

#include <linux/kvm.h>

#include <string>
#include <vector>

#include "snapshot/codec.h"

namespace smolvm {
class KvmVm;
}

namespace smolvm::snapshot {

constexpr uint32_t kVmSectionVersion = 1;

struct VmState {
  kvm_irqchip pic_master{};
  kvm_irqchip pic_slave{};
  kvm_irqchip ioapic{};
  bool has_pit = false;
  kvm_pit_state2 pit{};
  bool has_clock = false;
  kvm_clock_data clock{};
};

// The irqchip is essential (VmmError when refused); PIT and clock are reported in `warnings`.
VmState CaptureVm(const KvmVm& vm, std::vector<std::string>& warnings);
// The kvmclock continues from the saved value (no jump by the time the snapshot lay on disk:
// the guest agent fixes the wall clock after a restore).
void ApplyVm(KvmVm& vm, const VmState& state, std::vector<std::string>& warnings);

void EncodeVm(StateWriter& out, const VmState& state);
VmState DecodeVm(StateReader& in);

}  // namespace smolvm::snapshot
