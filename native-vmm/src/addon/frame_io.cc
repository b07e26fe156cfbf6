#include "addon/frame_io.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace smolvm::addon {

std::optional<std::string> FrameReader::Next() {
  if (buffer_.size() < 4) return std::nullopt;
  const auto* header = reinterpret_cast<const unsigned char*>(buffer_.data());
  const uint32_t length = static_cast<uint32_t>(header[0]) | static_cast<uint32_t>(header[1]) << 8 |
                          static_cast<uint32_t>(header[2]) << 16 | static_cast<uint32_t>(header[3]) << 24;
  if (length > kMaxFrameBytes) {
    throw std::runtime_error("smolvm-vmm sent a frame of " + std::to_string(length) +
                             " bytes, over the " + std::to_string(kMaxFrameBytes) + "-byte limit");
  }
  if (buffer_.size() < 4 + static_cast<size_t>(length)) return std::nullopt;
  std::string json = buffer_.substr(4, length);
  buffer_.erase(0, 4 + static_cast<size_t>(length));
  return json;
}

std::string EncodeFrame(const std::string& json) {
  if (json.size() > kMaxFrameBytes) {
    throw std::runtime_error("request of " + std::to_string(json.size()) + " bytes exceeds the " +
                             std::to_string(kMaxFrameBytes) + "-byte frame limit");
  }
  const auto length = static_cast<uint32_t>(json.size());
  std::string frame(4, '\0');
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return frame + json;
}

SendStatus SendSome(int socket_fd, OutgoingFrame& frame) {
  while (frame.sent < frame.bytes.size()) {
    iovec chunk{frame.bytes.data() + frame.sent, frame.bytes.size() - frame.sent};
    msghdr message{};
    message.msg_iov = &chunk;
    message.msg_iovlen = 1;
    std::vector<char> control;
    const bool with_fds = frame.sent == 0 && !frame.fds.empty();
    if (with_fds) {
      const size_t payload = frame.fds.size() * sizeof(int);
      control.assign(CMSG_SPACE(payload), 0);
      message.msg_control = control.data();
      message.msg_controllen = control.size();
      cmsghdr* header = CMSG_FIRSTHDR(&message);
      header->cmsg_level = SOL_SOCKET;
      header->cmsg_type = SCM_RIGHTS;
      header->cmsg_len = CMSG_LEN(payload);
      auto* slots = reinterpret_cast<int*>(CMSG_DATA(header));
      for (size_t i = 0; i < frame.fds.size(); ++i) slots[i] = frame.fds[i].get();
    }
    const ssize_t written = ::sendmsg(socket_fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (written < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return SendStatus::kWouldBlock;
      throw std::runtime_error(std::string("sending to smolvm-vmm failed: ") + std::strerror(errno));
    }
    frame.sent += static_cast<size_t>(written);
    // The kernel holds its own references now: ours can go.
    if (with_fds) frame.fds.clear();
  }
  return SendStatus::kDone;
}

}  // namespace smolvm::addon
