// Where the boot structures live in guest-physical memory (all below 1 MiB, out of the way of
// the kernel, which loads at 1 MiB or higher).
#pragma once

#include <cstdint>

namespace smolvm {

constexpr uint64_t kGdtAddress = 0x500;
constexpr uint64_t kIdtAddress = 0x520;
constexpr uint64_t kPvhStartInfoAddress = 0x6000;
constexpr uint64_t kPvhModlistAddress = 0x6040;
constexpr uint64_t kPvhMemmapAddress = 0x6100;
constexpr uint64_t kPvhMemmapMaxEntries = 64;
constexpr uint64_t kZeroPageAddress = 0x7000;
constexpr uint64_t kBootStackPointer = 0x8ff0;
constexpr uint64_t kPml4Address = 0x9000;
constexpr uint64_t kPdptAddress = 0xa000;
constexpr uint64_t kPdAddress = 0xb000;  // four page directories: identity map of 4 GiB
constexpr uint64_t kIdentityMappedGiB = 4;
constexpr uint64_t kCmdlineAddress = 0x20000;
constexpr uint64_t kCmdlineMaxSize = 4096;  // including the terminating NUL
constexpr uint64_t kMpTableAddress = 0x9fc00;  // the last KiB of base memory, where Linux looks
constexpr uint64_t kEbdaStart = 0x9fc00;
constexpr uint64_t kHighMemoryStart = 0x100000;  // 1 MiB
constexpr uint64_t kBzImageLoadAddress = 0x100000;

constexpr uint64_t kIoapicAddress = 0xfec0'0000ULL;
constexpr uint64_t kLapicAddress = 0xfee0'0000ULL;

// virtio-mmio devices: one 4 KiB window each from here, inside the 32-bit MMIO hole.
constexpr uint64_t kVirtioMmioBase = 0xd000'0000ULL;
constexpr uint64_t kVirtioMmioWindow = 0x1000;
// GSIs for virtio devices: the IOAPIC has 24 pins; 0-4 are the timer, keyboard, cascade and
// COM ports.
constexpr uint32_t kFirstVirtioGsi = 5;
constexpr uint32_t kLastGsi = 23;

constexpr uint32_t kMaxVcpus = 32;  // the MP table must fit in the last KiB of base memory

}  // namespace smolvm
