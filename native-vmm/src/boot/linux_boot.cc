#include "boot/linux_boot.h"

#include <asm/bootparam.h>

#include <cstdio>
#include <cstring>

#include "boot/boot_cpu.h"
#include "boot/image_file.h"
#include "boot/kernel_loader.h"
#include "boot/layout.h"
#include "boot/mptable.h"
#include "util/error.h"

namespace smolvm {
namespace {

constexpr uint32_t kE820Ram = 1;
constexpr uint32_t kE820Reserved = 2;
constexpr uint64_t kPageSize = 4096;
constexpr uint32_t kHvmStartMagic = 0x336ec578;
constexpr uint8_t kLoaderTypeUndefined = 0xff;
constexpr uint8_t kLoadflagCanUseHeap = 0x80;
constexpr uint16_t kBootFlag = 0xaa55;
constexpr uint32_t kHdrSMagic = 0x53726448;

// Xen's PVH start-of-day structures (xen/include/public/arch-x86/hvm/start_info.h), version 1.
struct HvmStartInfo {
  uint32_t magic;
  uint32_t version;
  uint32_t flags;
  uint32_t nr_modules;
  uint64_t modlist_paddr;
  uint64_t cmdline_paddr;
  uint64_t rsdp_paddr;
  uint64_t memmap_paddr;
  uint32_t memmap_entries;
  uint32_t reserved;
};
struct HvmModlistEntry {
  uint64_t paddr;
  uint64_t size;
  uint64_t cmdline_paddr;
  uint64_t reserved;
};
struct HvmMemmapEntry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
  uint32_t reserved;
};
static_assert(sizeof(HvmStartInfo) == 56);
static_assert(sizeof(HvmModlistEntry) == 32);
static_assert(sizeof(HvmMemmapEntry) == 24);

std::string Hex(uint64_t value) {
  char text[24];
  std::snprintf(text, sizeof(text), "0x%llx", static_cast<unsigned long long>(value));
  return text;
}

struct Initramfs {
  uint64_t address = 0;
  uint64_t size = 0;
};

Initramfs LoadInitramfs(const GuestMemory& memory, int fd, uint64_t kernel_end,
                        uint64_t highest_allowed) {
  Initramfs initramfs;
  if (fd < 0) return initramfs;
  ImageFile file(fd, "initramfs");
  if (file.size() == 0) throw VmmError("initramfs: empty file");
  const uint64_t low_ram_end = memory.regions().front().size;
  uint64_t top = low_ram_end < highest_allowed ? low_ram_end : highest_allowed;
  if (file.size() > top || (top - file.size()) / kPageSize * kPageSize < kernel_end)
    throw VmmError("initramfs: " + std::to_string(file.size()) + " bytes do not fit in low RAM between the kernel's end (" +
                   Hex(kernel_end) + ") and " + Hex(top) + "; give the VM more memory");
  initramfs.address = (top - file.size()) / kPageSize * kPageSize;
  initramfs.size = file.size();
  file.CopyToGuest(memory, 0, file.size(), initramfs.address);
  return initramfs;
}

void WriteCmdline(const GuestMemory& memory, const std::string& cmdline, uint64_t limit) {
  if (cmdline.find('\0') != std::string::npos)
    throw VmmError("kernel command line contains a NUL byte");
  if (cmdline.size() + 1 > limit)
    throw VmmError("kernel command line is " + std::to_string(cmdline.size()) +
                   " bytes; this kernel accepts at most " + std::to_string(limit - 1));
  if (!memory.Write(kCmdlineAddress, cmdline.c_str(), cmdline.size() + 1))
    throw VmmError("kernel command line does not fit in guest RAM");
}

uint32_t BootPvh(const GuestMemory& memory, const Initramfs& initramfs,
                 const std::vector<E820Entry>& memory_map) {
  if (memory_map.size() > kPvhMemmapMaxEntries) throw VmmError("boot: memory map too long");
  HvmStartInfo info{};
  info.magic = kHvmStartMagic;
  info.version = 1;
  info.cmdline_paddr = kCmdlineAddress;
  info.memmap_paddr = kPvhMemmapAddress;
  info.memmap_entries = static_cast<uint32_t>(memory_map.size());
  for (size_t i = 0; i < memory_map.size(); ++i) {
    HvmMemmapEntry entry{memory_map[i].address, memory_map[i].size, memory_map[i].type, 0};
    if (!memory.WriteObj(kPvhMemmapAddress + i * sizeof(entry), entry))
      throw VmmError("boot: PVH memory map does not fit in guest RAM");
  }
  if (initramfs.size != 0) {
    HvmModlistEntry module{initramfs.address, initramfs.size, 0, 0};
    if (!memory.WriteObj(kPvhModlistAddress, module)) throw VmmError("boot: PVH module list");
    info.nr_modules = 1;
    info.modlist_paddr = kPvhModlistAddress;
  }
  if (!memory.WriteObj(kPvhStartInfoAddress, info)) throw VmmError("boot: PVH start info");
  return static_cast<uint32_t>(kPvhStartInfoAddress);
}

void WriteZeroPage(const GuestMemory& memory, const LoadedKernel& kernel, const Initramfs& initramfs,
                   const std::vector<E820Entry>& memory_map) {
  boot_params params{};
  if (kernel.setup) {
    params.hdr = *kernel.setup;
  } else {
    // A vmlinux has no setup header: fill in what the 64-bit entry reads.
    params.hdr.boot_flag = kBootFlag;
    params.hdr.header = kHdrSMagic;
    params.hdr.kernel_alignment = 0x1000000;
  }
  params.hdr.type_of_loader = kLoaderTypeUndefined;
  params.hdr.loadflags |= kLoadflagCanUseHeap;
  params.hdr.heap_end_ptr = 0xfe00;
  params.hdr.cmd_line_ptr = static_cast<uint32_t>(kCmdlineAddress);
  params.hdr.ramdisk_image = static_cast<uint32_t>(initramfs.address);
  params.hdr.ramdisk_size = static_cast<uint32_t>(initramfs.size);
  if (memory_map.size() > E820_MAX_ENTRIES_ZEROPAGE) throw VmmError("boot: memory map too long");
  params.e820_entries = static_cast<uint8_t>(memory_map.size());
  for (size_t i = 0; i < memory_map.size(); ++i) {
    params.e820_table[i].addr = memory_map[i].address;
    params.e820_table[i].size = memory_map[i].size;
    params.e820_table[i].type = memory_map[i].type;
  }
  if (!memory.WriteObj(kZeroPageAddress, params)) throw VmmError("boot: zero page does not fit in guest RAM");
}

}  // namespace

std::vector<E820Entry> GuestMemoryMap(const GuestMemory& memory) {
  std::vector<E820Entry> map;
  const MemoryRegion& low = memory.regions().front();
  if (low.size <= kHighMemoryStart) throw VmmError("boot: guest RAM must be larger than 1 MiB");
  map.push_back({0, kEbdaStart, kE820Ram});
  map.push_back({kEbdaStart, 0xa0000 - kEbdaStart, kE820Reserved});
  map.push_back({kHighMemoryStart, low.size - kHighMemoryStart, kE820Ram});
  for (size_t i = 1; i < memory.regions().size(); ++i)
    map.push_back({memory.regions()[i].guest_base, memory.regions()[i].size, kE820Ram});
  return map;
}

std::string BootLinux(const GuestMemory& memory, Vcpu& bootstrap_vcpu, const LinuxBootConfig& config) {
  if (config.kernel_fd < 0) throw VmmError("boot: no kernel given");
  const std::vector<E820Entry> memory_map = GuestMemoryMap(memory);
  ImageFile kernel_file(config.kernel_fd, "kernel");
  const LoadedKernel kernel = LoadKernel(memory, kernel_file);

  bool use_pvh = false;
  switch (config.protocol) {
    case BootProtocol::kAuto:
      use_pvh = kernel.pvh_entry.has_value();
      break;
    case BootProtocol::kPvh:
      if (!kernel.pvh_entry)
        throw VmmError("kernel: PVH boot requested but the kernel has no XEN_ELFNOTE_PHYS32_ENTRY note");
      use_pvh = true;
      break;
    case BootProtocol::kLinux64:
      break;
  }

  uint64_t cmdline_limit = kCmdlineMaxSize;
  uint64_t initramfs_limit = kMmioHoleStart;
  if (kernel.setup) {
    if (kernel.setup->version >= 0x0206 && kernel.setup->cmdline_size != 0 &&
        kernel.setup->cmdline_size + 1ULL < cmdline_limit)
      cmdline_limit = kernel.setup->cmdline_size + 1ULL;
    if (kernel.setup->initrd_addr_max != 0) initramfs_limit = kernel.setup->initrd_addr_max + 1ULL;
  }
  WriteCmdline(memory, config.cmdline, cmdline_limit);
  const Initramfs initramfs = LoadInitramfs(memory, config.initramfs_fd, kernel.end, initramfs_limit);
  WriteMpTable(memory, kMpTableAddress, config.vcpu_count, config.last_gsi);

  if (use_pvh) {
    const uint32_t start_info = BootPvh(memory, initramfs, memory_map);
    SetupPvhEntry(memory, bootstrap_vcpu, *kernel.pvh_entry, start_info);
    return "PVH 32-bit entry at " + Hex(*kernel.pvh_entry);
  }
  if (!memory.IsValidRange(kernel.entry64, 1))
    throw VmmError("kernel: 64-bit entry point " + Hex(kernel.entry64) + " is outside guest RAM");
  WriteZeroPage(memory, kernel, initramfs, memory_map);
  SetupLongModeEntry(memory, bootstrap_vcpu, kernel.entry64, kZeroPageAddress);
  return std::string(kernel.format == KernelFormat::kBzImage ? "bzImage" : "ELF") +
         " 64-bit entry at " + Hex(kernel.entry64);
}

}  // namespace smolvm
