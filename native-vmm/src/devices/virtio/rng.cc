#include "devices/virtio/rng.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

namespace smolvm::virtio {

std::shared_ptr<VirtioRng> MakeVirtioRng() { return std::make_shared<VirtioRng>(); }

void VirtioRng::ReadConfig(uint64_t, uint8_t* data, uint32_t len) { memset(data, 0, len); }

void VirtioRng::ProcessQueueLocked(uint32_t index) {
  if (index != 0) return;
  Queue& queue = queues_[0];
  bool used = false;
  while (std::optional<DescriptorChain> chain = queue.Pop()) {
    SegmentCursor out(*memory_, chain->writable);
    uint64_t filled = 0;
    for (const iovec& span : out.PeekSpans(kRngMaxBytesPerRequest)) {
      auto* host = static_cast<uint8_t*>(span.iov_base);
      size_t done = 0;
      while (done < span.iov_len) {
        ssize_t n = getrandom(host + done, span.iov_len - done, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          Log(std::string("virtio-rng: getrandom: ") + strerror(errno));
          break;
        }
        done += static_cast<size_t>(n);
      }
      filled += done;
      if (done < span.iov_len) break;
    }
    queue.AddUsed(chain->head, static_cast<uint32_t>(filled));
    used = true;
  }
  if (used) InterruptIfWanted(queue);
}

}  // namespace smolvm::virtio
