#include "devices/virtio/queue.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>

#include "devices/virtio/virtio_device.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "virtio rings are little-endian");

namespace smolvm::virtio {
namespace {

struct Descriptor {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(Descriptor) == 16);

struct UsedElement {
  uint32_t id;
  uint32_t len;
};
static_assert(sizeof(UsedElement) == 8);

constexpr uint64_t kRingHeader = 4;  // flags + idx

uint64_t DescTableBytes(uint16_t size) { return 16ULL * size; }
uint64_t AvailRingBytes(uint16_t size) { return kRingHeader + 2ULL * size + 2; }
uint64_t UsedRingBytes(uint16_t size) { return kRingHeader + 8ULL * size + 2; }

std::string Hex(uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

SegmentCursor::SegmentCursor(const GuestMemory& memory, const std::vector<Segment>& segments)
    : memory_(&memory), segments_(&segments) {
  for (const Segment& s : segments) remaining_ += s.len;
}

std::vector<iovec> SegmentCursor::PeekSpans(uint64_t max_len) const {
  std::vector<iovec> spans;
  uint64_t want = std::min(max_len, remaining_);
  size_t index = index_;
  uint32_t offset = offset_;
  while (want > 0 && index < segments_->size()) {
    const Segment& s = (*segments_)[index];
    uint64_t n = std::min<uint64_t>(want, s.len - offset);
    if (n > 0) {
      uint8_t* host = memory_->Slice(s.addr + offset, n);
      // Segments were range-checked; a null slice means the buffer straddles two regions.
      if (host == nullptr)
        throw GuestError("buffer at " + Hex(s.addr) + " straddles guest memory regions");
      spans.push_back(iovec{host, static_cast<size_t>(n)});
      want -= n;
    }
    ++index;
    offset = 0;
  }
  return spans;
}

void SegmentCursor::Advance(uint64_t len) {
  if (len > remaining_) throw GuestError("buffer too short by " + std::to_string(len - remaining_) + " bytes");
  remaining_ -= len;
  consumed_ += len;
  while (len > 0) {
    const Segment& s = (*segments_)[index_];
    uint64_t n = std::min<uint64_t>(len, s.len - offset_);
    len -= n;
    offset_ += static_cast<uint32_t>(n);
    if (offset_ == s.len) {
      ++index_;
      offset_ = 0;
    }
  }
}

void SegmentCursor::Read(void* dst, uint64_t len) {
  if (len > remaining_)
    throw GuestError("device-readable buffer holds " + std::to_string(remaining_) +
                     " bytes, need " + std::to_string(len));
  auto* out = static_cast<uint8_t*>(dst);
  for (const iovec& span : PeekSpans(len)) {
    memcpy(out, span.iov_base, span.iov_len);
    out += span.iov_len;
  }
  Advance(len);
}

void SegmentCursor::Write(const void* src, uint64_t len) {
  if (len > remaining_)
    throw GuestError("device-writable buffer holds " + std::to_string(remaining_) +
                     " bytes, need " + std::to_string(len));
  const auto* in = static_cast<const uint8_t*>(src);
  for (const iovec& span : PeekSpans(len)) {
    memcpy(span.iov_base, in, span.iov_len);
    in += span.iov_len;
  }
  Advance(len);
}

std::string Queue::Check(const GuestMemory& memory, const QueueConfig& config,
                         uint16_t max_size) {
  const uint16_t size = config.size;
  if (size == 0) return "queue size is 0";
  if (size > max_size)
    return "queue size " + std::to_string(size) + " exceeds maximum " + std::to_string(max_size);
  if ((size & (size - 1)) != 0) return "queue size " + std::to_string(size) + " is not a power of 2";
  if (config.desc % 16 != 0) return "descriptor table " + Hex(config.desc) + " not 16-byte aligned";
  if (config.avail % 2 != 0) return "available ring " + Hex(config.avail) + " not 2-byte aligned";
  if (config.used % 4 != 0) return "used ring " + Hex(config.used) + " not 4-byte aligned";
  if (!memory.IsValidRange(config.desc, DescTableBytes(size)))
    return "descriptor table " + Hex(config.desc) + " is not inside guest RAM";
  if (memory.Slice(config.avail, AvailRingBytes(size)) == nullptr)
    return "available ring " + Hex(config.avail) + " is not inside guest RAM";
  if (memory.Slice(config.used, UsedRingBytes(size)) == nullptr)
    return "used ring " + Hex(config.used) + " is not inside guest RAM";
  return "";
}

Queue::Queue(const GuestMemory& memory, const QueueConfig& config)
    : memory_(&memory), config_(config) {
  uint8_t* avail = memory.Slice(config.avail, AvailRingBytes(config.size));
  uint8_t* used = memory.Slice(config.used, UsedRingBytes(config.size));
  if (avail == nullptr || used == nullptr) throw GuestError("queue rings outside guest RAM");
  avail_flags_ = reinterpret_cast<uint16_t*>(avail);
  avail_idx_ = reinterpret_cast<uint16_t*>(avail + 2);
  used_idx_ = reinterpret_cast<uint16_t*>(used + 2);
}

uint16_t Queue::LoadAvailIndex() const {
  // Acquire: ring entries and descriptors the driver wrote before publishing idx are visible.
  return __atomic_load_n(avail_idx_, __ATOMIC_ACQUIRE);
}

bool Queue::HasAvailable() const {
  if (!ready()) return false;
  uint16_t pending = static_cast<uint16_t>(LoadAvailIndex() - next_avail_);
  if (pending > config_.size)
    throw GuestError("available index moved by " + std::to_string(pending) +
                     ", more than the queue size " + std::to_string(config_.size));
  return pending != 0;
}

std::optional<DescriptorChain> Queue::Pop() {
  if (!HasAvailable()) return std::nullopt;
  GuestAddress slot = config_.avail + kRingHeader + 2ULL * (next_avail_ % config_.size);
  std::optional<uint16_t> head = memory_->ReadObj<uint16_t>(slot);
  if (!head) throw GuestError("available ring slot outside guest RAM");
  if (*head >= config_.size)
    throw GuestError("available ring names descriptor " + std::to_string(*head) +
                     ", queue size is " + std::to_string(config_.size));
  DescriptorChain chain = WalkChain(*head);
  ++next_avail_;
  return chain;
}

DescriptorChain Queue::WalkChain(uint16_t head) const {
  DescriptorChain chain;
  chain.head = head;
  uint16_t index = head;
  unsigned count = 0;
  for (;;) {
    // A chain cannot hold more descriptors than the table: more means a loop.
    if (++count > config_.size)
      throw GuestError("descriptor chain from " + std::to_string(head) +
                       " is longer than the queue size " + std::to_string(config_.size) +
                       " (a loop)");
    // One copy out of guest memory: the guest may rewrite the descriptor meanwhile.
    std::optional<Descriptor> desc = memory_->ReadObj<Descriptor>(config_.desc + 16ULL * index);
    if (!desc) throw GuestError("descriptor table outside guest RAM");
    const std::string where = "descriptor " + std::to_string(index);
    if (desc->flags & kDescFlagIndirect)
      throw GuestError(where + ": indirect descriptors were not negotiated");
    if (desc->len > 0) {
      if (!memory_->IsValidRange(desc->addr, desc->len))
        throw GuestError(where + ": buffer " + Hex(desc->addr) + "+" + std::to_string(desc->len) +
                         " is not inside guest RAM");
      if (desc->flags & kDescFlagWrite) {
        chain.writable.push_back(Segment{desc->addr, desc->len});
        chain.writable_len += desc->len;
      } else {
        if (!chain.writable.empty())
          throw GuestError(where + ": device-readable buffer after a device-writable one");
        chain.readable.push_back(Segment{desc->addr, desc->len});
        chain.readable_len += desc->len;
      }
    }
    if (!(desc->flags & kDescFlagNext)) break;
    if (desc->next >= config_.size)
      throw GuestError(where + ": next index " + std::to_string(desc->next) +
                       " out of range (queue size " + std::to_string(config_.size) + ")");
    index = desc->next;
  }
  return chain;
}

void Queue::AddUsed(uint16_t head, uint32_t written) {
  GuestAddress slot = config_.used + kRingHeader + 8ULL * (next_used_ % config_.size);
  if (!memory_->WriteObj(slot, UsedElement{head, written}))
    throw GuestError("used ring slot outside guest RAM");
  ++next_used_;
  // Release: the element (and the buffer contents) are visible before the new index.
  __atomic_store_n(used_idx_, next_used_, __ATOMIC_RELEASE);
}

bool Queue::ShouldInterrupt() const {
  // Full fence: our used-index store must be ordered before we read the driver's flags, or
  // both sides can decide the other will act and an interrupt is lost.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return (__atomic_load_n(avail_flags_, __ATOMIC_ACQUIRE) & kAvailFlagNoInterrupt) == 0;
}

}  // namespace smolvm::virtio
