#include "snapshot/memory_file.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <vector>

#include "memory/guest_memory.h"
#include "snapshot/codec.h"
#include "util/error.h"

namespace smolvm::snapshot {
namespace {

constexpr uint64_t kPage = 4096;

bool PageIsZero(const uint8_t* page) {
  const auto* words = reinterpret_cast<const uint64_t*>(page);
  for (size_t i = 0; i < kPage / sizeof(uint64_t); ++i)
    if (words[i] != 0) return false;
  return true;
}

void PwriteAll(int fd, const uint8_t* data, uint64_t len, uint64_t offset) {
  while (len > 0) {
    const ssize_t n = ::pwrite(fd, data, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw SysError("memory file: write at offset " + std::to_string(offset));
    data += n;
    len -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

// Marks in `candidate` (one flag per page of [file_offset, file_offset + size)) the pages
// that the backing file holds data for (SEEK_DATA/SEEK_HOLE; a file system without them
// reports everything as data, which is merely slower).
void MarkFileData(int fd, uint64_t file_offset, uint64_t size, std::vector<uint8_t>& candidate) {
  const uint64_t end = file_offset + size;
  uint64_t position = file_offset;
  while (position < end) {
    const off_t data = ::lseek(fd, static_cast<off_t>(position), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) return;  // only holes from here on
      std::fill(candidate.begin(), candidate.end(), 1);
      return;
    }
    if (static_cast<uint64_t>(data) >= end) return;
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) hole = static_cast<off_t>(end);
    const uint64_t first = (static_cast<uint64_t>(data) - file_offset) / kPage;
    const uint64_t last = std::min<uint64_t>((static_cast<uint64_t>(hole) - file_offset + kPage - 1) / kPage,
                                             candidate.size());
    for (uint64_t page = first; page < last; ++page) candidate[page] = 1;
    position = static_cast<uint64_t>(hole);
  }
}

std::vector<uint8_t> Trailer(uint64_t memory_bytes, const SnapshotId& id) {
  StateWriter out;
  for (char c : kMemoryTrailerMagic) out.U8(static_cast<uint8_t>(c));
  out.U32(kMemoryTrailerVersion);
  out.U64(memory_bytes);
  out.Bytes(std::vector<uint8_t>(id.begin(), id.end()));
  std::vector<uint8_t> bytes = out.Take();
  bytes.resize(kMemoryTrailerBytes, 0);
  return bytes;
}

}  // namespace

MemoryFileStats WriteMemoryFile(const GuestMemory& memory, int fd, const SnapshotId& id) {
  MemoryFileStats stats;
  if (::ftruncate(fd, 0) != 0 ||
      ::ftruncate(fd, static_cast<off_t>(memory.size() + kMemoryTrailerBytes)) != 0)
    throw SysError("memory file: truncate to " + std::to_string(memory.size() + kMemoryTrailerBytes) + " bytes");
  for (const MemoryRegion& region : memory.regions()) {
    const uint64_t pages = region.size / kPage;
    // Candidates: pages resident in our mapping (written or read by the guest, or private
    // copies of a restored VM) and pages the backing file has data for.
    std::vector<uint8_t> candidate(pages, 0);
    std::vector<unsigned char> resident(pages, 0);
    if (::mincore(region.host, region.size, resident.data()) != 0) {
      std::fill(candidate.begin(), candidate.end(), 1);
    } else {
      for (uint64_t page = 0; page < pages; ++page) candidate[page] = resident[page] & 1;
    }
    MarkFileData(memory.fd(), region.file_offset, region.size, candidate);
    uint64_t page = 0;
    while (page < pages) {
      if (!candidate[page] || PageIsZero(region.host + page * kPage)) {
        ++page;
        continue;
      }
      uint64_t run_end = page + 1;
      while (run_end < pages && candidate[run_end] && !PageIsZero(region.host + run_end * kPage)) ++run_end;
      const uint64_t bytes = (run_end - page) * kPage;
      PwriteAll(fd, region.host + page * kPage, bytes, region.file_offset + page * kPage);
      stats.data_bytes += bytes;
      page = run_end;
    }
  }
  const std::vector<uint8_t> trailer = Trailer(memory.size(), id);
  PwriteAll(fd, trailer.data(), trailer.size(), memory.size());
  stats.file_bytes = memory.size() + kMemoryTrailerBytes;
  return stats;
}

void CheckMemoryFile(int fd, uint64_t memory_bytes, const SnapshotId& id) {
  struct stat status {};
  if (::fstat(fd, &status) != 0) throw SysError("memory file: fstat");
  if (!S_ISREG(status.st_mode)) throw VmmError("memory file: not a regular file");
  const uint64_t expected = memory_bytes + kMemoryTrailerBytes;
  if (static_cast<uint64_t>(status.st_size) != expected)
    throw VmmError("memory file: " + std::to_string(status.st_size) + " bytes, expected " +
                   std::to_string(expected) + " (" + std::to_string(memory_bytes) +
                   " bytes of guest RAM and the trailer)");
  std::vector<uint8_t> trailer(kMemoryTrailerBytes);
  size_t done = 0;
  while (done < trailer.size()) {
    const ssize_t n = ::pread(fd, trailer.data() + done, trailer.size() - done,
                              static_cast<off_t>(memory_bytes + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw SysError("memory file: read of the trailer");
    done += static_cast<size_t>(n);
  }
  if (trailer != Trailer(memory_bytes, id))
    throw VmmError("memory file: does not belong to this state file (its trailer names another "
                   "snapshot, or it is not a smolvm memory file)");
}

}  // namespace smolvm::snapshot
