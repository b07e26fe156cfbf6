// Bounds-checked reads from a kernel or initramfs file given as an fd: every offset and length
// comes from a file header that may be corrupt, so each read is checked against the size.
#pragma once

#include <cstdint>
#include <string>

#include "memory/guest_memory.h"

namespace smolvm {

class ImageFile {
 public:
  // `what` names the file in errors ("kernel", "initramfs"). Does not take ownership of fd.
  ImageFile(int fd, std::string what);

  uint64_t size() const { return size_; }
  const std::string& what() const { return what_; }
  // Reads exactly `len` bytes at `offset`; throws VmmError naming the file when the range is
  // outside the file or the read fails.
  void ReadExact(uint64_t offset, void* buffer, uint64_t len) const;
  // Copies [offset, offset + len) of the file into guest RAM at `guest_address`.
  void CopyToGuest(const GuestMemory& memory, uint64_t offset, uint64_t len,
                   GuestAddress guest_address) const;

 private:
  int fd_;
  std::string what_;
  uint64_t size_ = 0;
};

}  // namespace smolvm
