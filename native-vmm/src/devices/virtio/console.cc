#include "devices/virtio/console.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace smolvm::virtio {

std::shared_ptr<VirtioConsole> MakeVirtioConsole(UniqueFd output, UniqueFd input,
                                                 EventLoop* loop) {
  if (!output.valid()) throw VmmError("virtio-console: no output file descriptor");
  if (input.valid() && loop == nullptr)
    throw VmmError("virtio-console: an input fd needs an event loop");
  // Input is read from vCPU threads too (on a receive notify): it must never block.
  if (input.valid()) {
    int flags = fcntl(input.get(), F_GETFL);
    if (flags < 0 || fcntl(input.get(), F_SETFL, flags | O_NONBLOCK) != 0)
      throw SysError("virtio-console: making the input fd non-blocking");
  }
  return std::make_shared<VirtioConsole>(std::move(output), std::move(input), loop);
}

VirtioConsole::VirtioConsole(UniqueFd output, UniqueFd input, EventLoop* loop)
    : QueueDeviceBase({kConsoleQueueSize, kConsoleQueueSize}, 0),
      output_(std::move(output)),
      sink_(output_.get(), "virtio-console"),
      input_(std::move(input)),
      loop_(loop) {}

VirtioConsole::~VirtioConsole() {
  if (input_registered_) loop_->Remove(input_.get());
}

uint64_t VirtioConsole::dropped_bytes() {
  std::lock_guard<std::mutex> lock(mutex_);
  return sink_.dropped_bytes();
}

void VirtioConsole::ReadConfig(uint64_t, uint8_t* data, uint32_t len) {
  // No F_SIZE, no F_MULTIPORT: nothing in the config space is meaningful.
  memset(data, 0, len);
}

void VirtioConsole::ProcessQueueLocked(uint32_t index) {
  if (index == kConsoleTransmitQueue) TransmitLocked();
  if (index == kConsoleReceiveQueue) {
    ReceiveLocked();
    UpdateInputInterestLocked();
  }
}

void VirtioConsole::TransmitLocked() {
  Queue& queue = queues_[kConsoleTransmitQueue];
  bool used = false;
  while (std::optional<DescriptorChain> chain = queue.Pop()) {
    SegmentCursor in(*memory_, chain->readable);
    for (const iovec& span : in.PeekSpans(in.remaining()))
      sink_.Write(static_cast<const uint8_t*>(span.iov_base), span.iov_len);
    queue.AddUsed(chain->head, 0);
    used = true;
  }
  if (used) InterruptIfWanted(queue);
}

void VirtioConsole::ReceiveLocked() {
  if (!input_.valid() || input_eof_) return;
  Queue& queue = queues_[kConsoleReceiveQueue];
  if (!queue.ready()) return;
  bool used = false;
  while (std::optional<DescriptorChain> chain = queue.Pop()) {
    SegmentCursor out(*memory_, chain->writable);
    std::vector<iovec> spans = out.PeekSpans(out.remaining());
    if (spans.empty()) {  // a receive buffer with no room: give it back empty
      queue.AddUsed(chain->head, 0);
      used = true;
      continue;
    }
    ssize_t n = readv(input_.get(), spans.data(), static_cast<int>(spans.size()));
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      queue.UndoPop();
      break;
    }
    if (n <= 0) {
      input_eof_ = true;
      queue.UndoPop();
      break;
    }
    queue.AddUsed(chain->head, static_cast<uint32_t>(n));
    used = true;
  }
  if (used) InterruptIfWanted(queue);
}

void VirtioConsole::OnInputReady() {
  RunGuarded([&] {
    ReceiveLocked();
    UpdateInputInterestLocked();
  });
}

// Read input only while the driver has buffers for it: a level-triggered fd with nowhere to
// put its bytes would spin the event loop.
void VirtioConsole::UpdateInputInterestLocked() {
  if (!input_.valid()) return;
  bool want = active_locked() && !input_eof_ && queues_.size() > kConsoleReceiveQueue &&
              queues_[kConsoleReceiveQueue].HasAvailable();
  if (want == input_registered_) return;
  if (want) {
    std::weak_ptr<VirtioConsole> weak = weak_from_this();
    loop_->Add(input_.get(), EPOLLIN, [weak](uint32_t) {
      if (auto self = weak.lock()) self->OnInputReady();
    });
  } else {
    loop_->Remove(input_.get());
  }
  input_registered_ = want;
}

void VirtioConsole::OnResetLocked() {
  if (input_registered_) loop_->Remove(input_.get());
  input_registered_ = false;
}

}  // namespace smolvm::virtio
