// Where a device's output to the host goes (the serial port, virtio-console): an fd the shim
// reads into a capped log. Written non-blocking from vCPU threads: a reader that lags must
// never stop a vCPU. What does not fit is dropped and counted; once output fits again, a notice
// with the count goes first, so the log says what is missing. Not thread-safe: the owning
// device serializes its calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace smolvm {

class OutputSink {
 public:
  // `fd` may be -1 (output discarded); the owner keeps it open while the sink lives. It is made
  // non-blocking (O_NONBLOCK on its open file description). `device` names it in messages.
  OutputSink(int fd, std::string device);

  // Writes `data`, or as much of it as fits now; the rest is dropped and counted.
  void Write(const uint8_t* data, size_t len);

  uint64_t dropped_bytes() const { return dropped_total_; }

 private:
  bool WriteNotice();

  int fd_;
  std::string device_;
  bool broken_ = false;         // EPIPE/EBADF: nobody will ever read it, stop trying
  uint64_t pending_drops_ = 0;  // dropped since the last notice
  uint64_t dropped_total_ = 0;
  bool drop_logged_ = false;    // the VMM log says it once, the output itself every time
};

}  // namespace smolvm
