#include "memory/guest_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "util/error.h"

namespace smolvm {
namespace {

constexpr uint64_t kPageSize = 4096;
// 1 TiB: far beyond any microVM, small enough that no size computation can overflow.
constexpr uint64_t kMaxMemorySize = 1ULL << 40;

void CheckSize(uint64_t size) {
  if (size == 0 || size % kPageSize != 0 || size > kMaxMemorySize)
    throw VmmError("guest memory: size " + std::to_string(size) +
                   " must be a non-zero multiple of 4096 up to 1 TiB");
}

}  // namespace

std::unique_ptr<GuestMemory> GuestMemory::Create(uint64_t size) {
  CheckSize(size);
  std::unique_ptr<GuestMemory> memory(new GuestMemory());  // private constructor
  memory->fd_.reset(::memfd_create("smolvm-guest-ram", MFD_CLOEXEC));
  if (!memory->fd_.valid()) throw SysError("guest memory: memfd_create");
  if (::ftruncate(memory->fd_.get(), static_cast<off_t>(size)) != 0)
    throw SysError("guest memory: ftruncate to " + std::to_string(size) + " bytes");
  void* mapping = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                         memory->fd_.get(), 0);
  if (mapping == MAP_FAILED) throw SysError("guest memory: mmap of " + std::to_string(size) + " bytes");
  memory->mapping_ = static_cast<uint8_t*>(mapping);
  memory->size_ = size;
  memory->LayOutRegions();
  return memory;
}

std::unique_ptr<GuestMemory> GuestMemory::MapPrivate(int fd, uint64_t size) {
  CheckSize(size);
  std::unique_ptr<GuestMemory> memory(new GuestMemory());
  memory->fd_.reset(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!memory->fd_.valid()) throw SysError("guest memory: dup of memory file fd");
  const off_t file_size = ::lseek(memory->fd_.get(), 0, SEEK_END);
  if (file_size < 0) throw SysError("guest memory: size of memory file");
  if (static_cast<uint64_t>(file_size) < size)
    throw VmmError("guest memory: memory file holds " + std::to_string(file_size) +
                   " bytes, less than the " + std::to_string(size) + " bytes of guest RAM");
  void* mapping = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE,
                         memory->fd_.get(), 0);
  if (mapping == MAP_FAILED) throw SysError("guest memory: mmap (private) of memory file");
  memory->mapping_ = static_cast<uint8_t*>(mapping);
  memory->size_ = size;
  memory->LayOutRegions();
  return memory;
}

GuestMemory::~GuestMemory() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

void GuestMemory::LayOutRegions() {
  const uint64_t low_size = size_ < kMmioHoleStart ? size_ : kMmioHoleStart;
  regions_.push_back(MemoryRegion{0, low_size, 0, mapping_});
  if (size_ > low_size) {
    regions_.push_back(
        MemoryRegion{kMmioHoleEnd, size_ - low_size, low_size, mapping_ + low_size});
  }
}

uint8_t* GuestMemory::Slice(GuestAddress addr, uint64_t len) const {
  for (const MemoryRegion& region : regions_) {
    if (addr < region.guest_base) continue;
    const uint64_t offset = addr - region.guest_base;
    // Written so that no sum can overflow: offset <= size, then len <= size - offset.
    if (offset > region.size) continue;
    if (len > region.size - offset) continue;
    if (offset == region.size && len != 0) continue;
    return region.host + offset;
  }
  return nullptr;
}

bool GuestMemory::IsValidRange(GuestAddress addr, uint64_t len) const {
  return Slice(addr, len) != nullptr;
}

bool GuestMemory::Read(GuestAddress addr, void* dst, uint64_t len) const {
  const uint8_t* source = Slice(addr, len);
  if (source == nullptr) return false;
  if (len != 0) std::memcpy(dst, source, len);
  return true;
}

bool GuestMemory::Write(GuestAddress addr, const void* src, uint64_t len) const {
  uint8_t* target = Slice(addr, len);
  if (target == nullptr) return false;
  if (len != 0) std::memcpy(target, src, len);
  return true;
}

}  // namespace smolvm
