#include "util/epoll_event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <cstdint>

#include "util/error.h"
#include "util/log.h"

namespace smolvm {

EpollEventLoop::EpollEventLoop()
    : epoll_fd_(::epoll_create1(EPOLL_CLOEXEC)), wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!epoll_fd_.valid()) throw SysError("event loop: epoll_create1");
  if (!wake_fd_.valid()) throw SysError("event loop: eventfd");
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = wake_fd_.get();
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &event) != 0)
    throw SysError("event loop: epoll_ctl(ADD wake eventfd)");
}

EpollEventLoop::~EpollEventLoop() { Stop(); }

void EpollEventLoop::Start() {
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { Run(); });
}

void EpollEventLoop::Stop() {
  if (!thread_.joinable()) return;
  stopping_ = true;
  const uint64_t one = 1;
  ssize_t ignored = ::write(wake_fd_.get(), &one, sizeof(one));
  (void)ignored;
  thread_.join();
}

void EpollEventLoop::Add(int fd, uint32_t events, Callback callback) {
  std::lock_guard<std::mutex> lock(mutex_);
  epoll_event event{};
  event.events = events;
  event.data.fd = fd;
  const bool known = callbacks_.count(fd) != 0;
  if (::epoll_ctl(epoll_fd_.get(), known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &event) != 0)
    throw SysError("event loop: epoll_ctl(ADD fd " + std::to_string(fd) + ")");
  callbacks_[fd] = std::make_shared<Callback>(std::move(callback));
}

void EpollEventLoop::Modify(int fd, uint32_t events) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (callbacks_.count(fd) == 0)
    throw VmmError("event loop: Modify of fd " + std::to_string(fd) + " that was never added");
  epoll_event event{};
  event.events = events;
  event.data.fd = fd;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, fd, &event) != 0)
    throw SysError("event loop: epoll_ctl(MOD fd " + std::to_string(fd) + ")");
}

void EpollEventLoop::Remove(int fd) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (callbacks_.erase(fd) == 0) return;
  // Failure here means the fd was already closed, which removed it from the set anyway.
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

void EpollEventLoop::Run() {
  constexpr int kMaxEvents = 32;
  epoll_event events[kMaxEvents];
  while (!stopping_) {
    const int count = ::epoll_wait(epoll_fd_.get(), events, kMaxEvents, -1);
    if (count < 0) {
      if (errno == EINTR) continue;
      LogWarning(SysError("event loop: epoll_wait").what());
      return;
    }
    for (int i = 0; i < count && !stopping_; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_fd_.get()) continue;
      std::shared_ptr<Callback> callback;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = callbacks_.find(fd);
        if (it == callbacks_.end()) continue;  // removed by an earlier callback of this batch
        callback = it->second;
      }
      try {
        (*callback)(events[i].events);
      } catch (const std::exception& error) {
        // A device back end failing must not take the loop (and every other device) down.
        LogWarning(std::string("event loop: callback for fd ") + std::to_string(fd) +
                   " failed: " + error.what());
      }
    }
  }
}

}  // namespace smolvm
