// EventLoop implemented with epoll on a thread of its own. Callbacks run on that thread;
// Add/Modify/Remove may be called from any thread, including from inside a callback.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "util/event_loop.h"
#include "util/fd.h"

namespace smolvm {

class EpollEventLoop : public EventLoop {
 public:
  // Throws VmmError when epoll or the wake-up eventfd cannot be created.
  EpollEventLoop();
  ~EpollEventLoop() override;  // stops and joins the thread
  EpollEventLoop(const EpollEventLoop&) = delete;
  EpollEventLoop& operator=(const EpollEventLoop&) = delete;

  void Start();  // starts the loop thread (idempotent)
  void Stop();   // asks the thread to finish and joins it (idempotent; not from a callback)

  void Add(int fd, uint32_t events, Callback callback) override;
  void Modify(int fd, uint32_t events) override;
  void Remove(int fd) override;

 private:
  void Run();

  UniqueFd epoll_fd_;
  UniqueFd wake_fd_;  // eventfd: written by Stop() to end epoll_wait
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::mutex mutex_;
  // shared_ptr so a callback that removes itself keeps running on its own copy.
  std::unordered_map<int, std::shared_ptr<Callback>> callbacks_;
};

}  // namespace smolvm
