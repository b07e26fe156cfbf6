#include "kvm/irq_line.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "util/error.h"
#include "util/log.h"

namespace smolvm {

IrqfdLine::IrqfdLine(KvmVm& vm, uint32_t gsi)
    : vm_(vm), gsi_(gsi), event_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!event_fd_.valid()) throw SysError("irq: eventfd for gsi " + std::to_string(gsi));
  vm_.RegisterIrqfd(event_fd_.get(), gsi_);
}

IrqfdLine::~IrqfdLine() {
  try {
    vm_.UnregisterIrqfd(event_fd_.get(), gsi_);
  } catch (const VmmError& error) {
    LogWarning(error.what());
  }
}

void IrqfdLine::Trigger() {
  const uint64_t one = 1;
  // EAGAIN means the counter is saturated: an interrupt is pending anyway.
  while (::write(event_fd_.get(), &one, sizeof(one)) < 0 && errno == EINTR) {
  }
}

void KvmIrqLine::Trigger() {
  vm_.SetIrqLine(gsi_, true);
  vm_.SetIrqLine(gsi_, false);
}

}  // namespace smolvm
