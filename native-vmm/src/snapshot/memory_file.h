// The memory file: guest RAM as one flat image (file offset = offset in the guest's memfd, so
// RAM above the MMIO hole follows the low RAM directly), written sparse (all-zero pages stay
// holes), then a one-page trailer naming the snapshot it belongs to. Restore maps the first
// memory_bytes MAP_PRIVATE: pages load lazily, copy-on-write, shared by every VM restored
// from the file. Never rewrite a memory file in place while VMs use it (write a new file and
// rename it over, as the `path` form of the snapshot request does).
#pragma once

#include <cstdint>

#include "snapshot/snapshot_file.h"

namespace smolvm {
class GuestMemory;
}

namespace smolvm::snapshot {

constexpr char kMemoryTrailerMagic[8] = {'S', 'M', 'O', 'L', 'V', 'M', 'M', 'F'};
constexpr uint32_t kMemoryTrailerVersion = 1;
constexpr uint64_t kMemoryTrailerBytes = 4096;

struct MemoryFileStats {
  uint64_t file_bytes = 0;  // memory size + trailer
  uint64_t data_bytes = 0;  // bytes of non-zero pages actually written
};

// Writes the guest's RAM (as the guest sees it: a restored VM's private copies included) to
// `fd`, which is truncated first. Reads only pages that can hold data (resident in the mapping
// or backed by data in the file), so untouched RAM costs nothing. Throws SysError.
MemoryFileStats WriteMemoryFile(const GuestMemory& memory, int fd, const SnapshotId& id);

// Checks that `fd` is a memory file of `memory_bytes` for snapshot `id`. Throws VmmError.
void CheckMemoryFile(int fd, uint64_t memory_bytes, const SnapshotId& id);

}  // namespace smolvm::snapshot
