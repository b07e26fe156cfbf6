// The bootstrap vCPU's state at the kernel entry: 64-bit long mode (identity page tables, a
// flat GDT, RSI = zero page) or PVH's 32-bit protected mode (paging off, EBX = start info).
#pragma once

#include <cstdint>

#include "kvm/vcpu.h"
#include "memory/guest_memory.h"

namespace smolvm {

// Writes the GDT and identity page tables (4 GiB, 2 MiB pages) and enters long mode at `entry`.
void SetupLongModeEntry(const GuestMemory& memory, Vcpu& vcpu, uint64_t entry,
                        uint64_t zero_page);
// Writes a flat 32-bit GDT and enters protected mode at `entry` with EBX = `start_info`.
void SetupPvhEntry(const GuestMemory& memory, Vcpu& vcpu, uint32_t entry, uint32_t start_info);

}  // namespace smolvm
