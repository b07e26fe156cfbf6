#include "devices/output_sink.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/log.h"

namespace smolvm {
namespace {

constexpr int kPipeBytes = 1 << 20;  // fs.pipe-max-size's default

}  // namespace

OutputSink::OutputSink(int fd, std::string device) : fd_(fd), device_(std::move(device)) {
  if (fd_ < 0) return;
  const int flags = ::fcntl(fd_, F_GETFL);
  if (flags < 0 || ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK) != 0)
    LogWarning(device_ + ": cannot make the output non-blocking: " + std::strerror(errno));
  // A pipe holds 64 KiB by default: room for a second or so of a busy reader (its pages are
  // only allocated when used). Not a pipe, or above the system's limit: it stays as it is.
  struct stat status {};
  if (::fstat(fd_, &status) == 0 && S_ISFIFO(status.st_mode)) ::fcntl(fd_, F_SETPIPE_SZ, kPipeBytes);
}

void OutputSink::Write(const uint8_t* data, size_t len) {
  if (fd_ < 0 || broken_ || len == 0) return;
  size_t done = 0;
  int error = 0;
  if (pending_drops_ > 0 && !WriteNotice()) error = EAGAIN;
  while (error == 0 && done < len) {
    const ssize_t written = ::write(fd_, data + done, len - done);
    if (written > 0) {
      done += static_cast<size_t>(written);
    } else if (written < 0 && errno == EINTR) {
      continue;
    } else {
      error = written < 0 ? errno : EAGAIN;
    }
  }
  if (done == len) return;
  if (error == EPIPE || error == EBADF) {
    broken_ = true;  // the reader is gone for good (the shim died): nothing to count
    return;
  }
  // EAGAIN (the reader lags), or e.g. ENOSPC of a file: the guest must not stall.
  pending_drops_ += len - done;
  dropped_total_ += len - done;
  if (!drop_logged_) {
    drop_logged_ = true;
    LogWarning(device_ + ": the host output is full (its reader lags): dropping guest output; the output says how much");
  }
}

bool OutputSink::WriteNotice() {
  const std::string notice = "\n[smolvm-vmm: " + std::to_string(pending_drops_) + " bytes of " +
                             device_ + " output dropped: the host's reader was too slow]\n";
  // Shorter than PIPE_BUF: a pipe takes it whole or not at all.
  ssize_t written;
  do {
    written = ::write(fd_, notice.data(), notice.size());
  } while (written < 0 && errno == EINTR);
  if (written != static_cast<ssize_t>(notice.size())) return false;
  pending_drops_ = 0;
  return true;
}

}  // namespace smolvm
