// Guest physical memory: one memfd mapped into the VMM, split into regions around the 32-bit
// MMIO hole. Every access from device or boot code goes through the bounds-checked accessors
// here: a guest is hostile, and an address or length it chose must never reach outside the
// mapping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

#include "util/fd.h"

namespace smolvm {

using GuestAddress = uint64_t;

// Start of the 32-bit MMIO hole (devices, IOAPIC, LAPIC); RAM resumes at 4 GiB.
constexpr GuestAddress kMmioHoleStart = 0xC000'0000ULL;
constexpr GuestAddress kMmioHoleEnd = 0x1'0000'0000ULL;

struct MemoryRegion {
  GuestAddress guest_base;
  uint64_t size;
  uint64_t file_offset;  // offset of this region in the memfd
  uint8_t* host;         // start of the host mapping of this region
};

class GuestMemory {
 public:
  // memfd-backed RAM of `size` bytes (MAP_SHARED so snapshots can write the file out).
  // Throws VmmError (util/error.h) on failure.
  static std::unique_ptr<GuestMemory> Create(uint64_t size);
  // Maps an existing memory file MAP_PRIVATE (restore: lazy, copy-on-write).
  static std::unique_ptr<GuestMemory> MapPrivate(int fd, uint64_t size);

  ~GuestMemory();
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  const std::vector<MemoryRegion>& regions() const { return regions_; }
  uint64_t size() const { return size_; }
  int fd() const { return fd_.get(); }

  // True when [addr, addr + len) lies entirely in guest RAM (no overflow, no hole).
  bool IsValidRange(GuestAddress addr, uint64_t len) const;
  // Host pointer for [addr, addr + len) when it lies inside ONE region, else nullptr.
  uint8_t* Slice(GuestAddress addr, uint64_t len) const;

  // Copy in/out; false (nothing copied) when the range is not valid guest RAM.
  bool Read(GuestAddress addr, void* dst, uint64_t len) const;
  bool Write(GuestAddress addr, const void* src, uint64_t len) const;

  template <typename T>
  std::optional<T> ReadObj(GuestAddress addr) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    if (!Read(addr, &value, sizeof(T))) return std::nullopt;
    return value;
  }
  template <typename T>
  bool WriteObj(GuestAddress addr, const T& value) const {
    static_assert(std::is_trivially_copyable_v<T>);
    return Write(addr, &value, sizeof(T));
  }

 private:
  GuestMemory() = default;
  // Lays out the regions of `size` bytes of RAM around the MMIO hole over one mapping.
  void LayOutRegions();
  UniqueFd fd_;
  uint64_t size_ = 0;
  uint8_t* mapping_ = nullptr;  // one mapping of the whole file; regions point into it
  std::vector<MemoryRegion> regions_;
};

}  // namespace smolvm
