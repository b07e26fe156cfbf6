// IrqLine implementations over KVM: an irqfd (an eventfd write injects an edge without a
// syscall into the VM fd; usable from any thread) and KVM_IRQ_LINE (raise + lower).
#pragma once

#include <cstdint>

#include "devices/irq.h"
#include "kvm/vm.h"
#include "util/fd.h"

namespace smolvm {

class IrqfdLine : public IrqLine {
 public:
  // Creates the eventfd and registers it for `gsi`; unregisters on destruction.
  IrqfdLine(KvmVm& vm, uint32_t gsi);
  ~IrqfdLine() override;
  IrqfdLine(const IrqfdLine&) = delete;
  IrqfdLine& operator=(const IrqfdLine&) = delete;

  void Trigger() override;
  uint32_t gsi() const { return gsi_; }
  int event_fd() const { return event_fd_.get(); }

 private:
  KvmVm& vm_;
  uint32_t gsi_;
  UniqueFd event_fd_;
};

class KvmIrqLine : public IrqLine {
 public:
  KvmIrqLine(KvmVm& vm, uint32_t gsi) : vm_(vm), gsi_(gsi) {}
  void Trigger() override;  // an edge: level 1 then 0

 private:
  KvmVm& vm_;
  uint32_t gsi_;
};

}  // namespace smolvm
