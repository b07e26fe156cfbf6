// Split virtqueues (virtio 1.1 §2.6): the descriptor table, the available ring the driver
// fills and the used ring the device fills. The guest owns all three and may scribble on them
// at any time, so every descriptor is copied out of guest memory once and then validated
// (index, range inside RAM, wrap-around, chain length as loop guard, readable-before-writable
// order) before any device looks at it. A violation throws GuestError.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "memory/guest_memory.h"

namespace smolvm::virtio {

// Descriptor flags (§2.6.5).
constexpr uint16_t kDescFlagNext = 1;
constexpr uint16_t kDescFlagWrite = 2;
constexpr uint16_t kDescFlagIndirect = 4;
// Available ring flag: the driver does not want an interrupt for used buffers.
constexpr uint16_t kAvailFlagNoInterrupt = 1;

constexpr uint16_t kMaxQueueSize = 32768;

// What the driver programmed through the transport for one queue.
struct QueueConfig {
  uint16_t size = 0;
  bool ready = false;
  GuestAddress desc = 0;
  GuestAddress avail = 0;  // "driver area"
  GuestAddress used = 0;   // "device area"
};

// One validated guest buffer: [addr, addr + len) lies inside guest RAM.
struct Segment {
  GuestAddress addr;
  uint32_t len;
};

// A validated descriptor chain: the device-readable buffers, then the device-writable ones.
struct DescriptorChain {
  uint16_t head = 0;
  std::vector<Segment> readable;
  std::vector<Segment> writable;
  uint64_t readable_len = 0;
  uint64_t writable_len = 0;
};

// Walks a list of segments as one byte stream. Host spans come from GuestMemory::Slice, so
// they never reach outside guest RAM.
class SegmentCursor {
 public:
  SegmentCursor(const GuestMemory& memory, const std::vector<Segment>& segments);
  uint64_t remaining() const { return remaining_; }
  uint64_t consumed() const { return consumed_; }
  // Host iovecs for the next min(max_len, remaining()) bytes, without consuming them.
  std::vector<iovec> PeekSpans(uint64_t max_len) const;
  void Advance(uint64_t len);
  // Copy out of / into the stream; throws GuestError when fewer than len bytes remain.
  void Read(void* dst, uint64_t len);
  void Write(const void* src, uint64_t len);

 private:
  const GuestMemory* memory_;
  const std::vector<Segment>* segments_;
  size_t index_ = 0;       // current segment
  uint32_t offset_ = 0;    // offset inside it
  uint64_t remaining_ = 0;
  uint64_t consumed_ = 0;
};

class Queue {
 public:
  Queue() = default;  // a queue the driver left not ready
  // `config` must have passed Check(); `memory` must outlive the queue.
  Queue(const GuestMemory& memory, const QueueConfig& config);

  // "" when the driver's setup is usable, else what is wrong with it.
  static std::string Check(const GuestMemory& memory, const QueueConfig& config,
                           uint16_t max_size);

  bool ready() const { return memory_ != nullptr; }
  uint16_t size() const { return config_.size; }
  const QueueConfig& config() const { return config_; }

  // True when the driver has made at least one chain available. Throws GuestError on an
  // available index that moved by more than the queue size.
  bool HasAvailable() const;
  // The next available chain, validated; nullopt when none. Throws GuestError.
  std::optional<DescriptorChain> Pop();
  // Puts the last popped chain back (the device found nothing to put in it after all).
  void UndoPop() { --next_avail_; }
  // Returns the chain `head` to the driver with `written` bytes written into it.
  void AddUsed(uint16_t head, uint32_t written);
  // After a batch of AddUsed: whether the driver wants an interrupt.
  bool ShouldInterrupt() const;

  // The driver's current available index (guest-written: any value, only for comparisons).
  // Requires ready().
  uint16_t avail_index() const { return LoadAvailIndex(); }
  uint16_t next_avail() const { return next_avail_; }
  uint16_t next_used() const { return next_used_; }
  void SetPositions(uint16_t next_avail, uint16_t next_used) {
    next_avail_ = next_avail;
    next_used_ = next_used;
  }

 private:
  uint16_t LoadAvailIndex() const;
  DescriptorChain WalkChain(uint16_t head) const;

  const GuestMemory* memory_ = nullptr;
  QueueConfig config_;
  // Host pointers to the ring index words (checked inside one region at construction), read
  // and written atomically: the guest's vCPUs touch them concurrently.
  uint16_t* avail_flags_ = nullptr;
  uint16_t* avail_idx_ = nullptr;
  uint16_t* used_idx_ = nullptr;
  uint16_t next_avail_ = 0;
  uint16_t next_used_ = 0;
};

}  // namespace smolvm::virtio
