#include "boot/image_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "util/error.h"

namespace smolvm {

ImageFile::ImageFile(int fd, std::string what) : fd_(fd), what_(std::move(what)) {
  struct stat status {};
  if (::fstat(fd_, &status) != 0) throw SysError(what_ + ": fstat");
  if (!S_ISREG(status.st_mode) && !S_ISBLK(status.st_mode))
    throw VmmError(what_ + ": not a regular file");
  size_ = static_cast<uint64_t>(status.st_size);
}

void ImageFile::ReadExact(uint64_t offset, void* buffer, uint64_t len) const {
  if (offset > size_ || len > size_ - offset)
    throw VmmError(what_ + ": truncated (needs bytes up to " + std::to_string(offset) + "+" +
                   std::to_string(len) + ", file has " + std::to_string(size_) + ")");
  auto* target = static_cast<uint8_t*>(buffer);
  uint64_t done = 0;
  while (done < len) {
    const ssize_t got = ::pread(fd_, target + done, len - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw SysError(what_ + ": read");
    if (got == 0) throw VmmError(what_ + ": unexpected end of file");
    done += static_cast<uint64_t>(got);
  }
}

void ImageFile::CopyToGuest(const GuestMemory& memory, uint64_t offset, uint64_t len,
                            GuestAddress guest_address) const {
  uint8_t* target = memory.Slice(guest_address, len);
  if (target == nullptr)
    throw VmmError(what_ + ": " + std::to_string(len) + " bytes at guest address " +
                   std::to_string(guest_address) + " do not fit in guest RAM");
  ReadExact(offset, target, len);
}

}  // namespace smolvm
