// One KVM virtual machine: its memory slots, the in-kernel irqchip (PIC + IOAPIC + LAPICs) and
// PIT, and the irqfd/ioeventfd plumbing that lets devices signal without a VM exit.
#pragma once

#include <cstdint>
#include <optional>

#include "kvm/kvm_system.h"
#include "memory/guest_memory.h"
#include "util/fd.h"

namespace smolvm {

// Guest-physical addresses KVM needs on Intel hosts (VMX real-mode support): three pages for
// the TSS and one for the identity map, inside the 32-bit MMIO hole just below the BIOS area.
constexpr uint64_t kIdentityMapAddress = 0xfffb'c000ULL;
constexpr uint64_t kTssAddress = 0xfffb'd000ULL;

class KvmVm {
 public:
  // KVM_CREATE_VM. Throws VmmError.
  explicit KvmVm(const KvmSystem& system);

  int fd() const { return fd_.get(); }
  const KvmSystem& system() const { return system_; }

  // One memory slot per region of `memory`.
  void MapGuestMemory(const GuestMemory& memory);
  void SetUserMemoryRegion(uint32_t slot, uint64_t guest_base, uint64_t size, void* host,
                           uint32_t flags = 0);
  // KVM_CREATE_IRQCHIP then KVM_CREATE_PIT2 (call before creating vCPUs); on Intel hosts also
  // KVM_SET_TSS_ADDR and KVM_SET_IDENTITY_MAP_ADDR.
  void CreateIrqchipAndPit();

  // KVM_IRQ_LINE on a GSI of the in-kernel IOAPIC/PIC.
  void SetIrqLine(uint32_t gsi, bool level);
  // KVM_IRQFD: writing to `event_fd` injects an edge on `gsi`.
  void RegisterIrqfd(int event_fd, uint32_t gsi);
  void UnregisterIrqfd(int event_fd, uint32_t gsi);
  // KVM_IOEVENTFD: a guest write of `len` bytes at `addr` (PIO or MMIO) signals `event_fd`
  // instead of exiting; optionally only when the written value equals `datamatch`.
  void RegisterIoeventfd(int event_fd, uint64_t addr, uint32_t len, bool pio,
                         std::optional<uint64_t> datamatch = std::nullopt);
  void UnregisterIoeventfd(int event_fd, uint64_t addr, uint32_t len, bool pio,
                           std::optional<uint64_t> datamatch = std::nullopt);

 private:
  const KvmSystem& system_;
  UniqueFd fd_;
};

}  // namespace smolvm
