// The Intel MultiProcessor table (spec 1.4): without ACPI, this is how the guest finds its
// CPUs (with their APIC ids), the IOAPIC, and how ISA IRQs and virtio GSIs reach IOAPIC pins.
#pragma once

#include <cstdint>

#include "memory/guest_memory.h"

namespace smolvm {

// Writes the floating pointer and the configuration table at `address` (kMpTableAddress):
// processors 0..vcpu_count-1 (APIC id = index, 0 the bootstrap processor), bus 0 ISA, the
// IOAPIC (id vcpu_count), I/O interrupt entries for IRQs 0..last_gsi onto the same pins, and
// LINT0 ExtINT / LINT1 NMI. Returns the bytes written. Throws VmmError when it does not fit.
uint64_t WriteMpTable(const GuestMemory& memory, GuestAddress address, uint32_t vcpu_count,
                      uint32_t last_gsi);

}  // namespace smolvm
