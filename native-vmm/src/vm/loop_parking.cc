#include "vm/loop_parking.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>

#include "util/error.h"

namespace smolvm {

EventLoopParking::EventLoopParking(EventLoop& loop, int timeout_ms)
    : shared_(std::make_shared<Shared>()), loop_(loop), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!wake_.valid()) throw SysError("snapshot: eventfd to park the device loop");
  const int fd = wake_.get();
  std::shared_ptr<Shared> shared = shared_;
  EventLoop* target = &loop_;
  loop_.Add(fd, EPOLLIN, [shared, target, fd](uint32_t) {
    std::unique_lock<std::mutex> lock(shared->mutex);
    if (shared->released) return;  // the waiter gave up and removed us already
    target->Remove(fd);
    shared->parked = true;
    shared->changed.notify_all();
    shared->changed.wait(lock, [&] { return shared->released; });
  });
  const uint64_t one = 1;
  if (::write(fd, &one, sizeof(one)) != sizeof(one)) {
    loop_.Remove(fd);
    throw SysError("snapshot: wake the device loop");
  }
  std::unique_lock<std::mutex> lock(shared_->mutex);
  if (!shared_->changed.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return shared_->parked; })) {
    shared_->released = true;
    lock.unlock();
    loop_.Remove(fd);
    throw VmmError("snapshot: the device event loop did not become idle within " +
                   std::to_string(timeout_ms) + " ms");
  }
}

EventLoopParking::~EventLoopParking() {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  shared_->released = true;
  shared_->changed.notify_all();
}

}  // namespace smolvm
