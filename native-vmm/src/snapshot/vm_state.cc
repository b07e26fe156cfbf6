#include "snapshot/vm_state.h"

#include <sys/ioctl.h>

#include "kvm/vm.h"
#include "util/error.h"

namespace smolvm::snapshot {
namespace {

kvm_irqchip GetChip(const KvmVm& vm, uint32_t chip_id, const char* name) {
  kvm_irqchip chip{};
  chip.chip_id = chip_id;
  if (::ioctl(vm.fd(), KVM_GET_IRQCHIP, &chip) != 0)
    throw SysError(std::string("vm: KVM_GET_IRQCHIP (") + name + ")");
  return chip;
}

void SetChip(KvmVm& vm, const kvm_irqchip& chip, uint32_t chip_id, const char* name) {
  if (chip.chip_id != chip_id)
    throw VmmError(std::string("snapshot: irqchip ") + name + " has chip id " + std::to_string(chip.chip_id));
  if (::ioctl(vm.fd(), KVM_SET_IRQCHIP, &chip) != 0)
    throw SysError(std::string("vm: KVM_SET_IRQCHIP (") + name + ")");
}

}  // namespace

VmState CaptureVm(const KvmVm& vm, std::vector<std::string>& warnings) {
  VmState state;
  state.pic_master = GetChip(vm, KVM_IRQCHIP_PIC_MASTER, "PIC master");
  state.pic_slave = GetChip(vm, KVM_IRQCHIP_PIC_SLAVE, "PIC slave");
  state.ioapic = GetChip(vm, KVM_IRQCHIP_IOAPIC, "IOAPIC");
  state.has_pit = ::ioctl(vm.fd(), KVM_GET_PIT2, &state.pit) == 0;
  if (!state.has_pit) warnings.push_back(SysError("vm: KVM_GET_PIT2 refused, PIT not saved").what());
  state.has_clock = ::ioctl(vm.fd(), KVM_GET_CLOCK, &state.clock) == 0;
  if (!state.has_clock) warnings.push_back(SysError("vm: KVM_GET_CLOCK refused, kvmclock not saved").what());
  return state;
}

void ApplyVm(KvmVm& vm, const VmState& state, std::vector<std::string>& warnings) {
  SetChip(vm, state.pic_master, KVM_IRQCHIP_PIC_MASTER, "PIC master");
  SetChip(vm, state.pic_slave, KVM_IRQCHIP_PIC_SLAVE, "PIC slave");
  SetChip(vm, state.ioapic, KVM_IRQCHIP_IOAPIC, "IOAPIC");
  if (state.has_pit && ::ioctl(vm.fd(), KVM_SET_PIT2, &state.pit) != 0)
    warnings.push_back(SysError("vm: KVM_SET_PIT2 refused, PIT not restored").what());
  if (state.has_clock) {
    kvm_clock_data clock{};
    clock.clock = state.clock.clock;
    clock.flags = 0;  // not KVM_CLOCK_REALTIME: continue from the saved value, no jump
    if (::ioctl(vm.fd(), KVM_SET_CLOCK, &clock) != 0)
      warnings.push_back(SysError("vm: KVM_SET_CLOCK refused, kvmclock not restored").what());
  }
}

void EncodeVm(StateWriter& out, const VmState& state) {
  PutStruct(out, state.pic_master);
  PutStruct(out, state.pic_slave);
  PutStruct(out, state.ioapic);
  out.U8(state.has_pit ? 1 : 0);
  if (state.has_pit) PutStruct(out, state.pit);
  out.U8(state.has_clock ? 1 : 0);
  if (state.has_clock) PutStruct(out, state.clock);
}

VmState DecodeVm(StateReader& in) {
  VmState state;
  state.pic_master = GetStruct<kvm_irqchip>(in, "PIC master");
  state.pic_slave = GetStruct<kvm_irqchip>(in, "PIC slave");
  state.ioapic = GetStruct<kvm_irqchip>(in, "IOAPIC");
  state.has_pit = GetBool(in, "pit present");
  if (state.has_pit) state.pit = GetStruct<kvm_pit_state2>(in, "pit");
  state.has_clock = GetBool(in, "clock present");
  if (state.has_clock) state.clock = GetStruct<kvm_clock_data>(in, "clock");
  return state;
}

}  // namespace smolvm::snapshot
