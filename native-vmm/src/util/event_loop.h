// The VMM's event loop thread (epoll): device back ends (vsock unix sockets, the control
// socket, ioeventfds) register fds and get callbacks on that thread.
#pragma once

#include <cstdint>
#include <functional>

namespace smolvm {

class EventLoop {
 public:
  using Callback = std::function<void(uint32_t epoll_events)>;
  virtual ~EventLoop() = default;
  // Registers `fd` for `events` (EPOLLIN, EPOLLOUT, ...); replaces an earlier registration.
  virtual void Add(int fd, uint32_t events, Callback callback) = 0;
  virtual void Modify(int fd, uint32_t events) = 0;
  virtual void Remove(int fd) = 0;
};

}  // namespace smolvm
