// Parks an event loop thread inside one of its own callbacks for as long as this object
// lives. A snapshot needs every thread that touches guest memory or device state still: the
// vCPUs park in RunControl, the device back ends (vsock sockets, ioeventfds) run on the event
// loop thread, which parks here, so that a host client writing to a vsock socket cannot move a
// queue between the device state and the memory being written out.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>

#include "util/event_loop.h"
#include "util/fd.h"

namespace smolvm {

class EventLoopParking {
 public:
  // Blocks until the loop thread is parked; throws VmmError when it does not park within
  // `timeout_ms` (a callback stuck elsewhere), leaving the loop as it was.
  EventLoopParking(EventLoop& loop, int timeout_ms);
  ~EventLoopParking();  // lets the loop thread go on
  EventLoopParking(const EventLoopParking&) = delete;
  EventLoopParking& operator=(const EventLoopParking&) = delete;

 private:
  struct Shared {
    std::mutex mutex;
    std::condition_variable changed;
    bool parked = false;
    bool released = false;
  };
  std::shared_ptr<Shared> shared_;
  EventLoop& loop_;
  UniqueFd wake_;
};

}  // namespace smolvm
