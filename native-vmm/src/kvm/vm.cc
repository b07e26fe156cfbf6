#include "kvm/vm.h"

#include <sys/ioctl.h>

#include "util/error.h"

namespace smolvm {

KvmVm::KvmVm(const KvmSystem& system) : system_(system) {
  fd_.reset(::ioctl(system.fd(), KVM_CREATE_VM, 0));
  if (!fd_.valid()) throw SysError("kvm: KVM_CREATE_VM");
}

void KvmVm::MapGuestMemory(const GuestMemory& memory) {
  uint32_t slot = 0;
  for (const MemoryRegion& region : memory.regions())
    SetUserMemoryRegion(slot++, region.guest_base, region.size, region.host);
}

void KvmVm::SetUserMemoryRegion(uint32_t slot, uint64_t guest_base, uint64_t size, void* host,
                                uint32_t flags) {
  kvm_userspace_memory_region region{};
  region.slot = slot;
  region.flags = flags;
  region.guest_phys_addr = guest_base;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<uint64_t>(host);
  if (::ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region) != 0)
    throw SysError("kvm: KVM_SET_USER_MEMORY_REGION (slot " + std::to_string(slot) + ")");
}

void KvmVm::CreateIrqchipAndPit() {
  if (system_.IsIntelHost()) {
    // VMX needs these for real-mode emulation; SVM and PVM do not use them.
    uint64_t identity_map = kIdentityMapAddress;
    if (::ioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &identity_map) != 0)
      throw SysError("kvm: KVM_SET_IDENTITY_MAP_ADDR");
    if (::ioctl(fd_.get(), KVM_SET_TSS_ADDR, kTssAddress) != 0)
      throw SysError("kvm: KVM_SET_TSS_ADDR");
  }
  if (::ioctl(fd_.get(), KVM_CREATE_IRQCHIP, 0) != 0) throw SysError("kvm: KVM_CREATE_IRQCHIP");
  kvm_pit_config pit{};
  pit.flags = KVM_PIT_SPEAKER_DUMMY;  // port 0x61 handled in the kernel, no exits
  if (::ioctl(fd_.get(), KVM_CREATE_PIT2, &pit) != 0) throw SysError("kvm: KVM_CREATE_PIT2");
}

void KvmVm::SetIrqLine(uint32_t gsi, bool level) {
  kvm_irq_level irq{};
  irq.irq = gsi;
  irq.level = level ? 1 : 0;
  if (::ioctl(fd_.get(), KVM_IRQ_LINE, &irq) != 0)
    throw SysError("kvm: KVM_IRQ_LINE (gsi " + std::to_string(gsi) + ")");
}

void KvmVm::RegisterIrqfd(int event_fd, uint32_t gsi) {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(event_fd);
  irqfd.gsi = gsi;
  if (::ioctl(fd_.get(), KVM_IRQFD, &irqfd) != 0)
    throw SysError("kvm: KVM_IRQFD (gsi " + std::to_string(gsi) + ")");
}

void KvmVm::UnregisterIrqfd(int event_fd, uint32_t gsi) {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(event_fd);
  irqfd.gsi = gsi;
  irqfd.flags = KVM_IRQFD_FLAG_DEASSIGN;
  if (::ioctl(fd_.get(), KVM_IRQFD, &irqfd) != 0)
    throw SysError("kvm: KVM_IRQFD deassign (gsi " + std::to_string(gsi) + ")");
}

namespace {

kvm_ioeventfd MakeIoeventfd(int event_fd, uint64_t addr, uint32_t len, bool pio,
                            std::optional<uint64_t> datamatch) {
  kvm_ioeventfd ioeventfd{};
  ioeventfd.fd = event_fd;
  ioeventfd.addr = addr;
  ioeventfd.len = len;
  if (pio) ioeventfd.flags |= KVM_IOEVENTFD_FLAG_PIO;
  if (datamatch) {
    ioeventfd.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    ioeventfd.datamatch = *datamatch;
  }
  return ioeventfd;
}

}  // namespace

void KvmVm::RegisterIoeventfd(int event_fd, uint64_t addr, uint32_t len, bool pio,
                              std::optional<uint64_t> datamatch) {
  kvm_ioeventfd ioeventfd = MakeIoeventfd(event_fd, addr, len, pio, datamatch);
  if (::ioctl(fd_.get(), KVM_IOEVENTFD, &ioeventfd) != 0)
    throw SysError("kvm: KVM_IOEVENTFD at " + std::to_string(addr));
}

void KvmVm::UnregisterIoeventfd(int event_fd, uint64_t addr, uint32_t len, bool pio,
                                std::optional<uint64_t> datamatch) {
  kvm_ioeventfd ioeventfd = MakeIoeventfd(event_fd, addr, len, pio, datamatch);
  ioeventfd.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
  if (::ioctl(fd_.get(), KVM_IOEVENTFD, &ioeventfd) != 0)
    throw SysError("kvm: KVM_IOEVENTFD deassign at " + std::to_string(addr));
}

}  // namespace smolvm
