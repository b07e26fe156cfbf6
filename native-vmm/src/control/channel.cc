#include "control/channel.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "util/error.h"

namespace smolvm {

ControlChannel::ControlChannel(UniqueFd socket) : socket_(std::move(socket)) {
  const int flags = ::fcntl(socket_.get(), F_GETFL);
  if (flags < 0 || ::fcntl(socket_.get(), F_SETFL, flags | O_NONBLOCK) != 0)
    throw SysError("control: making the control socket non-blocking");
}

bool ControlChannel::ReadAvailable(std::vector<ControlMessage>& out) {
  for (;;) {
    uint8_t data[16384];
    alignas(cmsghdr) uint8_t control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
    iovec io{data, sizeof(data)};
    msghdr message{};
    message.msg_iov = &io;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof(control);
    const ssize_t got = ::recvmsg(socket_.get(), &message, MSG_CMSG_CLOEXEC);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      if (errno == ECONNRESET) return false;
      throw SysError("control: recvmsg");
    }
    for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr;
         header = CMSG_NXTHDR(&message, header)) {
      if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof(int));
        pending_fds_.emplace_back(fd);  // owned from here, closed if the message is bad
      }
    }
    if (message.msg_flags & MSG_CTRUNC)
      throw VmmError("control: more than " + std::to_string(kMaxFdsPerMessage) +
                     " file descriptors on one message");
    if (pending_fds_.size() > kMaxFdsPerMessage)
      throw VmmError("control: more than " + std::to_string(kMaxFdsPerMessage) +
                     " file descriptors on one message");
    if (got == 0) return false;
    buffer_.insert(buffer_.end(), data, data + got);
    ExtractMessages(out);
  }
}

void ControlChannel::ExtractMessages(std::vector<ControlMessage>& out) {
  size_t offset = 0;
  while (buffer_.size() - offset >= 4) {
    const uint32_t length = static_cast<uint32_t>(buffer_[offset]) |
                            (static_cast<uint32_t>(buffer_[offset + 1]) << 8) |
                            (static_cast<uint32_t>(buffer_[offset + 2]) << 16) |
                            (static_cast<uint32_t>(buffer_[offset + 3]) << 24);
    if (length > kMaxControlMessageBytes)
      throw VmmError("control: message of " + std::to_string(length) + " bytes exceeds the " +
                     std::to_string(kMaxControlMessageBytes) + "-byte limit");
    if (buffer_.size() - offset - 4 < length) break;
    const std::string_view text(reinterpret_cast<const char*>(buffer_.data() + offset + 4), length);
    ControlMessage message;
    message.body = Json::Parse(text);
    if (!message.body.is_object()) throw VmmError("control: a message must be a JSON object");
    // Descriptors received so far arrived with this message's bytes (the sender attaches them
    // to the first byte of the frame they belong to).
    message.fds = std::move(pending_fds_);
    pending_fds_.clear();
    out.push_back(std::move(message));
    offset += 4 + length;
  }
  buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(offset));
}

bool ControlChannel::Send(const Json& body, const std::vector<int>& fds, int timeout_ms) {
  const std::string text = body.Serialize();
  if (text.size() > kMaxControlMessageBytes || fds.size() > kMaxFdsPerMessage) return false;
  std::string frame(4, '\0');
  const uint32_t length = static_cast<uint32_t>(text.size());
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  frame += text;

  std::lock_guard<std::mutex> lock(send_mutex_);
  size_t sent = 0;
  bool fds_sent = fds.empty();
  while (sent < frame.size()) {
    iovec io{frame.data() + sent, frame.size() - sent};
    msghdr message{};
    message.msg_iov = &io;
    message.msg_iovlen = 1;
    alignas(cmsghdr) uint8_t control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)] = {};
    if (!fds_sent) {
      message.msg_control = control;
      message.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* header = CMSG_FIRSTHDR(&message);
      header->cmsg_level = SOL_SOCKET;
      header->cmsg_type = SCM_RIGHTS;
      header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(header), fds.data(), sizeof(int) * fds.size());
    }
    const ssize_t written = ::sendmsg(socket_.get(), &message, MSG_NOSIGNAL);
    if (written < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        pollfd waiting{socket_.get(), POLLOUT, 0};
        const int ready = ::poll(&waiting, 1, timeout_ms);
        if (ready <= 0) return false;  // stalled peer: give up rather than block the VMM
        continue;
      }
      return false;
    }
    fds_sent = true;
    sent += static_cast<size_t>(written);
  }
  return true;
}

}  // namespace smolvm
