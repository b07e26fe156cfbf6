// An EventLoop for tests that runs in the test's own thread: RunFor() dispatches epoll events
// until a deadline, so device back ends and the simulated guest take turns deterministically.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include "util/event_loop.h"
#include "util/fd.h"

namespace vtest {

class TestLoop : public smolvm::EventLoop {
 public:
  TestLoop() : epoll_(epoll_create1(EPOLL_CLOEXEC)) {}
  void Add(int fd, uint32_t events, Callback callback) override {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    bool known = callbacks_.count(fd) != 0;
    if (epoll_ctl(epoll_.get(), known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0)
      throw std::runtime_error("TestLoop: epoll_ctl add " + std::to_string(fd));
    callbacks_[fd] = std::make_shared<Callback>(std::move(callback));
  }
  void Modify(int fd, uint32_t events) override {
    if (callbacks_.count(fd) == 0) throw std::runtime_error("TestLoop: Modify of unknown fd");
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) != 0)
      throw std::runtime_error("TestLoop: epoll_ctl mod " + std::to_string(fd));
  }
  void Remove(int fd) override {
    if (callbacks_.erase(fd)) epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  }
  // Dispatches events for up to `ms` milliseconds; returns the number of callbacks run.
  int RunFor(int ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    int ran = 0;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now()).count();
      if (left < 0) return ran;
      ran += RunOnce(static_cast<int>(left));
    }
  }
  // One epoll_wait of at most `timeout_ms`.
  int RunOnce(int timeout_ms) {
    epoll_event events[16];
    int n = epoll_wait(epoll_.get(), events, 16, timeout_ms);
    int ran = 0;
    for (int i = 0; i < n; ++i) {
      auto it = callbacks_.find(events[i].data.fd);
      if (it == callbacks_.end()) continue;
      std::shared_ptr<Callback> cb = it->second;
      (*cb)(events[i].events);
      ++ran;
    }
    return ran;
  }
  size_t registered() const { return callbacks_.size(); }

 private:
  smolvm::UniqueFd epoll_;
  std::map<int, std::shared_ptr<Callback>> callbacks_;
};

}  // namespace vtest
