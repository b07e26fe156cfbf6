// Loads a Linux x86-64 kernel into guest RAM: a vmlinux ELF (PT_LOAD segments; the PVH entry
// from its XEN_ELFNOTE_PHYS32_ENTRY note when present) or a bzImage (setup header, protected-
// mode part at 1 MiB, 64-bit entry). Every header field is checked against the file and RAM.
#pragma once

#include <asm/bootparam.h>

#include <cstdint>
#include <optional>

#include "boot/image_file.h"
#include "memory/guest_memory.h"

namespace smolvm {

enum class KernelFormat { kElf, kBzImage };

struct LoadedKernel {
  KernelFormat format;
  uint64_t entry64 = 0;                // 64-bit boot protocol entry (long mode, RSI = zero page)
  std::optional<uint32_t> pvh_entry;   // 32-bit PVH entry (protected mode, EBX = start info)
  uint64_t end = 0;                    // first guest address after the loaded image
  std::optional<setup_header> setup;   // bzImage only: its setup header as read from the file
};

// Detects the format (ELF magic, or "HdrS" at 0x202) and loads it. Throws VmmError.
LoadedKernel LoadKernel(const GuestMemory& memory, const ImageFile& kernel);

LoadedKernel LoadElfKernel(const GuestMemory& memory, const ImageFile& kernel);
LoadedKernel LoadBzImage(const GuestMemory& memory, const ImageFile& kernel);

}  // namespace smolvm
