// The framed control channel over a unix stream socket: each message is a 4-byte little-endian
// length and that many bytes of UTF-8 JSON (at most 1 MiB). File descriptors travel as
// SCM_RIGHTS ancillary data on any byte of a message and belong to the message whose bytes
// carried them. Receiving is non-blocking and incremental, so a slow or stalled peer can never
// block the VMM's main loop.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "control/json.h"
#include "util/fd.h"

namespace smolvm {

constexpr uint32_t kMaxControlMessageBytes = 1u << 20;
constexpr size_t kMaxFdsPerMessage = 32;

struct ControlMessage {
  Json body;
  std::vector<UniqueFd> fds;  // in the order they arrived
};

class ControlChannel {
 public:
  // Takes the socket and makes it non-blocking.
  explicit ControlChannel(UniqueFd socket);

  int fd() const { return socket_.get(); }

  // Reads what is available (call when the socket is readable). Complete messages are
  // appended to `out`. Returns false once the peer closed the connection. Throws VmmError for
  // a broken frame (oversized length, bad JSON, too many fds): the stream cannot be trusted
  // after that.
  bool ReadAvailable(std::vector<ControlMessage>& out);

  // Sends one message (thread-safe); gives up after `timeout_ms` of the peer not reading.
  // Returns false when it could not be sent (peer gone or stalled).
  bool Send(const Json& body, const std::vector<int>& fds = {}, int timeout_ms = 5000);

 private:
  void ExtractMessages(std::vector<ControlMessage>& out);

  UniqueFd socket_;
  std::vector<uint8_t> buffer_;
  std::vector<UniqueFd> pending_fds_;
  std::mutex send_mutex_;
};

}  // namespace smolvm
