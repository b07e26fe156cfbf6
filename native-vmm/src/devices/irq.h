// An interrupt line into the guest (a GSI of the in-kernel IOAPIC). The KVM layer implements
// it with an irqfd (edge) or KVM_IRQ_LINE; tests implement it with a counter.
#pragma once

namespace smolvm {

class IrqLine {
 public:
  virtual ~IrqLine() = default;
  virtual void Trigger() = 0;
};

}  // namespace smolvm
