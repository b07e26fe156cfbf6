// Puts a Linux guest in guest RAM ready to run: kernel, initramfs (at the top of low RAM),
// command line, memory map (RAM around the 32-bit MMIO hole), the boot information the chosen
// entry expects (PVH hvm_start_info or the boot_params zero page), the MP table, and the
// bootstrap vCPU's registers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvm/vcpu.h"
#include "memory/guest_memory.h"

namespace smolvm {

enum class BootProtocol {
  kAuto,     // PVH when the ELF has a PHYS32_ENTRY note, else the 64-bit entry
  kPvh,      // 32-bit PVH entry (ELF with the Xen note only)
  kLinux64,  // 64-bit boot protocol entry
};

struct LinuxBootConfig {
  int kernel_fd = -1;
  int initramfs_fd = -1;  // -1: none
  std::string cmdline;
  uint32_t vcpu_count = 1;
  uint32_t last_gsi = 15;  // the MP table routes IRQs 0..last_gsi
  BootProtocol protocol = BootProtocol::kAuto;
};

struct E820Entry {
  uint64_t address;
  uint64_t size;
  uint32_t type;  // 1 RAM, 2 reserved
};

// The guest's memory map: RAM below the EBDA, the EBDA/MP table reserved, RAM from 1 MiB to
// the MMIO hole (or the end of RAM), RAM from 4 GiB.
std::vector<E820Entry> GuestMemoryMap(const GuestMemory& memory);

// Loads everything and sets the bootstrap vCPU's registers. Returns a one-line description of
// the entry taken ("pvh entry 0x... ", "64-bit entry ..."). Throws VmmError naming what was wrong.
std::string BootLinux(const GuestMemory& memory, Vcpu& bootstrap_vcpu, const LinuxBootConfig& config);

}  // namespace smolvm
