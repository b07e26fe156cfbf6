// Framing of the control protocol (src/control/protocol.md): a 4-byte little-endian length,
// then that many bytes of JSON; descriptors ride along as SCM_RIGHTS. This side of it is the
// controller's: split what the VMM sends into frames, send our frames with their fds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "util/fd.h"

namespace smolvm::addon {

constexpr size_t kMaxFrameBytes = 1 << 20;  // the protocol's limit, both ways
constexpr size_t kMaxFrameFds = 32;

// Accumulates bytes from the VMM and cuts complete frames out of them.
class FrameReader {
 public:
  void Append(const char* data, size_t size) { buffer_.append(data, size); }
  // The next complete frame's JSON text, or nullopt until more bytes arrive. Throws
  // std::runtime_error for a length over kMaxFrameBytes (the stream cannot be resynchronised).
  std::optional<std::string> Next();
  size_t buffered() const { return buffer_.size(); }

 private:
  std::string buffer_;
};

// One frame on its way to the VMM; the descriptors are ours (dups) until sent.
struct OutgoingFrame {
  int64_t request_id = 0;
  std::string bytes;  // header + JSON
  std::vector<UniqueFd> fds;
  size_t sent = 0;
};

std::string EncodeFrame(const std::string& json);

enum class SendStatus { kDone, kWouldBlock };

// Sends what the socket takes now; the fds go with the first byte. Throws std::runtime_error
// when the socket is broken (the VMM is gone).
SendStatus SendSome(int socket_fd, OutgoingFrame& frame);

}  // namespace smolvm::addon
