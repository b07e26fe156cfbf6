#include "boot/boot_cpu.h"

#include "boot/layout.h"
#include "util/error.h"

namespace smolvm {
namespace {

constexpr uint64_t kCr0ProtectionEnable = 1ULL << 0;
constexpr uint64_t kCr0ExtensionType = 1ULL << 4;
constexpr uint64_t kCr0Paging = 1ULL << 31;
constexpr uint64_t kCr4Pae = 1ULL << 5;
constexpr uint64_t kEferLme = 1ULL << 8;
constexpr uint64_t kEferLma = 1ULL << 10;
constexpr uint64_t kPagePresentWritable = 0x3;
constexpr uint64_t kPageHuge = 0x80;

constexpr uint16_t kCodeSelector = 0x08;
constexpr uint16_t kDataSelector = 0x10;
constexpr uint16_t kTssSelector = 0x18;

// A GDT descriptor from flags (access byte + flags nibble), base and 20-bit limit.
uint64_t GdtEntry(uint16_t flags, uint32_t base, uint32_t limit) {
  return ((static_cast<uint64_t>(base) & 0xff000000ULL) << 32) |
         ((static_cast<uint64_t>(flags) & 0xf0ffULL) << 40) |
         ((static_cast<uint64_t>(limit) & 0x000f0000ULL) << 32) |
         ((static_cast<uint64_t>(base) & 0x00ffffffULL) << 16) |
         (static_cast<uint64_t>(limit) & 0x0000ffffULL);
}

kvm_segment SegmentFromGdt(uint64_t entry, uint16_t selector) {
  kvm_segment segment{};
  segment.base = static_cast<uint32_t>(((entry >> 16) & 0xffffff) | ((entry >> 32) & 0xff000000));
  uint32_t limit = static_cast<uint32_t>((entry & 0xffff) | ((entry >> 32) & 0xf0000));
  segment.g = static_cast<uint8_t>((entry >> 55) & 1);
  if (segment.g) limit = (limit << 12) | 0xfff;
  segment.limit = limit;
  segment.selector = selector;
  segment.type = static_cast<uint8_t>((entry >> 40) & 0xf);
  segment.s = static_cast<uint8_t>((entry >> 44) & 1);
  segment.dpl = static_cast<uint8_t>((entry >> 45) & 3);
  segment.present = static_cast<uint8_t>((entry >> 47) & 1);
  segment.avl = static_cast<uint8_t>((entry >> 52) & 1);
  segment.l = static_cast<uint8_t>((entry >> 53) & 1);
  segment.db = static_cast<uint8_t>((entry >> 54) & 1);
  segment.unusable = segment.present ? 0 : 1;
  return segment;
}

void WriteGdt(const GuestMemory& memory, const uint64_t (&gdt)[4], kvm_sregs& sregs) {
  if (!memory.Write(kGdtAddress, gdt, sizeof(gdt)) || !memory.WriteObj<uint64_t>(kIdtAddress, 0))
    throw VmmError("boot: GDT does not fit in guest RAM");
  sregs.gdt.base = kGdtAddress;
  sregs.gdt.limit = sizeof(gdt) - 1;
  sregs.idt.base = kIdtAddress;
  sregs.idt.limit = sizeof(uint64_t) - 1;
  sregs.cs = SegmentFromGdt(gdt[1], kCodeSelector);
  const kvm_segment data = SegmentFromGdt(gdt[2], kDataSelector);
  sregs.ds = data;
  sregs.es = data;
  sregs.fs = data;
  sregs.gs = data;
  sregs.ss = data;
  sregs.tr = SegmentFromGdt(gdt[3], kTssSelector);
}

void WriteIdentityPageTables(const GuestMemory& memory) {
  bool ok = memory.WriteObj<uint64_t>(kPml4Address, kPdptAddress | kPagePresentWritable);
  for (uint64_t gib = 0; gib < kIdentityMappedGiB; ++gib) {
    const uint64_t pd = kPdAddress + gib * 0x1000;
    ok = ok && memory.WriteObj<uint64_t>(kPdptAddress + gib * 8, pd | kPagePresentWritable);
    for (uint64_t i = 0; i < 512; ++i) {
      const uint64_t physical = (gib << 30) | (i << 21);
      ok = ok && memory.WriteObj<uint64_t>(pd + i * 8, physical | kPagePresentWritable | kPageHuge);
    }
  }
  if (!ok) throw VmmError("boot: page tables do not fit in guest RAM");
}

}  // namespace

void SetupLongModeEntry(const GuestMemory& memory, Vcpu& vcpu, uint64_t entry,
                        uint64_t zero_page) {
  const uint64_t gdt[4] = {
      0,
      GdtEntry(0xa09b, 0, 0xfffff),  // 64-bit code
      GdtEntry(0xc093, 0, 0xfffff),  // data
      GdtEntry(0x808b, 0, 0xfffff),  // TSS
  };
  kvm_sregs sregs = vcpu.GetSregs();
  WriteGdt(memory, gdt, sregs);
  WriteIdentityPageTables(memory);
  sregs.cr3 = kPml4Address;
  sregs.cr4 |= kCr4Pae;
  sregs.cr0 |= kCr0ProtectionEnable | kCr0ExtensionType | kCr0Paging;
  sregs.efer |= kEferLme | kEferLma;
  vcpu.SetSregs(sregs);

  kvm_regs regs{};
  regs.rflags = 0x2;
  regs.rip = entry;
  regs.rsp = kBootStackPointer;
  regs.rbp = kBootStackPointer;
  regs.rsi = zero_page;
  vcpu.SetRegs(regs);
}

void SetupPvhEntry(const GuestMemory& memory, Vcpu& vcpu, uint32_t entry, uint32_t start_info) {
  const uint64_t gdt[4] = {
      0,
      GdtEntry(0xc09b, 0, 0xfffff),  // 32-bit code
      GdtEntry(0xc093, 0, 0xfffff),  // data
      GdtEntry(0x008b, 0, 0x67),     // TSS
  };
  kvm_sregs sregs = vcpu.GetSregs();
  WriteGdt(memory, gdt, sregs);
  sregs.cr0 = (sregs.cr0 | kCr0ProtectionEnable | kCr0ExtensionType) & ~kCr0Paging;
  sregs.cr4 = 0;
  sregs.efer = 0;
  vcpu.SetSregs(sregs);

  kvm_regs regs{};
  regs.rflags = 0x2;
  regs.rip = entry;
  regs.rbx = start_info;
  vcpu.SetRegs(regs);
}

}  // namespace smolvm
