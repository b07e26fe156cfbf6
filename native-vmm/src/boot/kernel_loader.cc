#include "boot/kernel_loader.h"

#include <elf.h>

#include <cstring>
#include <vector>

#include "boot/layout.h"
#include "util/error.h"

namespace smolvm {
namespace {

constexpr uint32_t kXenElfnotePhys32Entry = 18;
constexpr uint16_t kMaxProgramHeaders = 128;
constexpr uint64_t kMaxNoteSegment = 64 * 1024;
constexpr uint32_t kBootFlag = 0xaa55;
constexpr uint32_t kHdrSMagic = 0x53726448;  // "HdrS"
constexpr uint16_t kMinBootProtocolFor64BitEntry = 0x020c;
constexpr uint16_t kXlfKernel64 = 1 << 0;

uint64_t Align4(uint64_t value) { return (value + 3) & ~uint64_t{3}; }

// Walks the notes of one PT_NOTE segment looking for Xen's PHYS32_ENTRY.
std::optional<uint32_t> FindPvhEntry(const ImageFile& kernel, const Elf64_Phdr& note) {
  if (note.p_filesz == 0 || note.p_filesz > kMaxNoteSegment) return std::nullopt;
  std::vector<uint8_t> bytes(note.p_filesz);
  kernel.ReadExact(note.p_offset, bytes.data(), bytes.size());
  uint64_t offset = 0;
  while (bytes.size() - offset >= sizeof(Elf64_Nhdr)) {
    Elf64_Nhdr header;
    std::memcpy(&header, bytes.data() + offset, sizeof(header));
    offset += sizeof(header);
    const uint64_t name_size = Align4(header.n_namesz);
    const uint64_t desc_size = Align4(header.n_descsz);
    if (name_size > bytes.size() - offset) break;
    const uint8_t* name = bytes.data() + offset;
    offset += name_size;
    if (desc_size > bytes.size() - offset) break;
    const uint8_t* desc = bytes.data() + offset;
    offset += desc_size;
    if (header.n_type == kXenElfnotePhys32Entry && header.n_namesz == 4 &&
        std::memcmp(name, "Xen", 4) == 0 && header.n_descsz >= 4) {
      uint32_t entry = 0;
      std::memcpy(&entry, desc, 4);
      return entry;
    }
  }
  return std::nullopt;
}

}  // namespace

LoadedKernel LoadKernel(const GuestMemory& memory, const ImageFile& kernel) {
  uint8_t magic[4] = {};
  kernel.ReadExact(0, magic, sizeof(magic));
  if (std::memcmp(magic, ELFMAG, SELFMAG) == 0) return LoadElfKernel(memory, kernel);
  if (kernel.size() >= 0x206) {
    uint32_t header = 0;
    kernel.ReadExact(0x202, &header, sizeof(header));
    if (header == kHdrSMagic) return LoadBzImage(memory, kernel);
  }
  throw VmmError(kernel.what() + ": neither an ELF vmlinux nor a bzImage (no ELF magic, no HdrS)");
}

LoadedKernel LoadElfKernel(const GuestMemory& memory, const ImageFile& kernel) {
  const std::string& what = kernel.what();
  Elf64_Ehdr elf{};
  kernel.ReadExact(0, &elf, sizeof(elf));
  if (std::memcmp(elf.e_ident, ELFMAG, SELFMAG) != 0) throw VmmError(what + ": no ELF magic");
  if (elf.e_ident[EI_CLASS] != ELFCLASS64 || elf.e_ident[EI_DATA] != ELFDATA2LSB)
    throw VmmError(what + ": not a 64-bit little-endian ELF");
  if (elf.e_machine != EM_X86_64) throw VmmError(what + ": ELF machine is not x86-64");
  if (elf.e_type != ET_EXEC) throw VmmError(what + ": ELF is not an executable (ET_EXEC)");
  if (elf.e_phentsize != sizeof(Elf64_Phdr))
    throw VmmError(what + ": unexpected ELF program header size " + std::to_string(elf.e_phentsize));
  if (elf.e_phnum == 0 || elf.e_phnum > kMaxProgramHeaders)
    throw VmmError(what + ": ELF has " + std::to_string(elf.e_phnum) + " program headers");

  std::vector<Elf64_Phdr> headers(elf.e_phnum);
  kernel.ReadExact(elf.e_phoff, headers.data(), headers.size() * sizeof(Elf64_Phdr));

  LoadedKernel loaded{};
  loaded.format = KernelFormat::kElf;
  loaded.entry64 = elf.e_entry;
  bool any_load = false;
  for (const Elf64_Phdr& header : headers) {
    if (header.p_type == PT_NOTE && !loaded.pvh_entry) {
      loaded.pvh_entry = FindPvhEntry(kernel, header);
      continue;
    }
    if (header.p_type != PT_LOAD || header.p_memsz == 0) continue;
    if (header.p_filesz > header.p_memsz)
      throw VmmError(what + ": PT_LOAD segment with file size above memory size");
    if (header.p_paddr < kHighMemoryStart)
      throw VmmError(what + ": PT_LOAD segment at " + std::to_string(header.p_paddr) +
                     " is below 1 MiB, where the boot structures live");
    if (!memory.IsValidRange(header.p_paddr, header.p_memsz))
      throw VmmError(what + ": PT_LOAD segment [" + std::to_string(header.p_paddr) + ", +" +
                     std::to_string(header.p_memsz) + ") does not fit in guest RAM");
    kernel.CopyToGuest(memory, header.p_offset, header.p_filesz, header.p_paddr);
    // The rest of the segment (.bss) is zero.
    uint8_t* bss = memory.Slice(header.p_paddr + header.p_filesz, header.p_memsz - header.p_filesz);
    if (bss != nullptr) std::memset(bss, 0, header.p_memsz - header.p_filesz);
    const uint64_t end = header.p_paddr + header.p_memsz;  // no overflow: range was validated
    if (end > loaded.end) loaded.end = end;
    any_load = true;
  }
  if (!any_load) throw VmmError(what + ": ELF has no PT_LOAD segment");
  if (!memory.IsValidRange(loaded.entry64, 1) &&
      !(loaded.pvh_entry && memory.IsValidRange(*loaded.pvh_entry, 1)))
    throw VmmError(what + ": ELF entry point is outside guest RAM");
  return loaded;
}

LoadedKernel LoadBzImage(const GuestMemory& memory, const ImageFile& kernel) {
  const std::string& what = kernel.what();
  setup_header header{};
  constexpr uint64_t kHeaderOffset = 0x1f1;
  kernel.ReadExact(kHeaderOffset, &header, sizeof(header));
  if (header.boot_flag != kBootFlag) throw VmmError(what + ": bzImage boot flag is not 0xAA55");
  if (header.header != kHdrSMagic) throw VmmError(what + ": bzImage has no HdrS signature");
  if (header.version < kMinBootProtocolFor64BitEntry || !(header.xloadflags & kXlfKernel64))
    throw VmmError(what + ": bzImage has no 64-bit entry (boot protocol " +
                   std::to_string(header.version >> 8) + "." + std::to_string(header.version & 0xff) +
                   ", needs 2.12 with XLF_KERNEL_64)");
  const uint64_t setup_sectors = header.setup_sects == 0 ? 4 : header.setup_sects;
  const uint64_t kernel_offset = (setup_sectors + 1) * 512;
  if (kernel_offset >= kernel.size()) throw VmmError(what + ": bzImage has no protected-mode part");
  const uint64_t kernel_size = kernel.size() - kernel_offset;
  // The kernel decompresses in place and needs init_size bytes from its load address.
  const uint64_t footprint = header.init_size > kernel_size ? header.init_size : kernel_size;
  if (!memory.IsValidRange(kBzImageLoadAddress, footprint))
    throw VmmError(what + ": bzImage needs " + std::to_string(footprint) +
                   " bytes from 1 MiB, more than guest RAM holds");
  kernel.CopyToGuest(memory, kernel_offset, kernel_size, kBzImageLoadAddress);

  LoadedKernel loaded{};
  loaded.format = KernelFormat::kBzImage;
  loaded.entry64 = kBzImageLoadAddress + 0x200;  // startup_64 sits 512 bytes in
  loaded.end = kBzImageLoadAddress + footprint;
  loaded.setup = header;
  return loaded;
}

}  // namespace smolvm
