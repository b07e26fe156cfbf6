// The guest driver side for device tests: guest RAM (the real GuestMemory), a counting IRQ
// line, the MMIO transport driven through its registers like Linux's virtio_mmio does, and
// split queues built in guest memory with raw access for hostile cases.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "devices/irq.h"
#include "devices/virtio/mmio.h"
#include "devices/virtio/queue.h"
#include "memory/guest_memory.h"

namespace vtest {

using smolvm::GuestAddress;
using smolvm::GuestMemory;

class CountingIrq : public smolvm::IrqLine {
 public:
  void Trigger() override { ++count; }
  std::atomic<int> count{0};
};

struct UsedEntry {
  uint32_t id;
  uint32_t len;
};

class GuestQueue {
 public:
  GuestQueue(const GuestMemory& memory, GuestAddress base, uint16_t size);

  struct Buf {
    GuestAddress addr;
    uint32_t len;
    bool writable;
  };
  // Builds a well-formed chain from free descriptors and makes it available. Returns the head.
  uint16_t Add(const std::vector<Buf>& bufs);
  // Raw access for hostile tests.
  void WriteDesc(uint16_t index, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next);
  void Publish(uint16_t head);
  void SetAvailIdx(uint16_t value);
  void SetNoInterrupt(bool on);
  std::optional<UsedEntry> PopUsed();
  uint16_t free_descriptors() const { return static_cast<uint16_t>(free_.size()); }

  const uint16_t size;
  const GuestAddress desc, avail, used;

 private:
  const GuestMemory& memory_;
  uint16_t avail_idx_ = 0;
  uint16_t last_used_ = 0;
  std::vector<uint16_t> free_;
  std::map<uint16_t, std::vector<uint16_t>> chains_;  // head -> descriptors in flight
};

class Harness {
 public:
  explicit Harness(std::shared_ptr<smolvm::virtio::VirtioDevice> device,
                   uint64_t memory_size = 16ULL << 20);

  uint32_t Read32(uint64_t offset);
  void Write32(uint64_t offset, uint32_t value);
  uint64_t ReadConfig64(uint64_t offset);

  // The Linux driver's init sequence; queue sizes default to each queue's maximum. Returns
  // the device status afterwards.
  uint32_t Init(uint16_t queue_size = 0, uint64_t refuse_features = 0);
  // Programs one queue at an arbitrary place (hostile setups).
  void SetupQueue(uint32_t index, uint16_t size, GuestAddress desc, GuestAddress avail,
                  GuestAddress used);
  void Notify(uint32_t queue);
  bool NeedsReset() { return (Read32(smolvm::virtio::mmio::kStatus) & 0x40) != 0; }
  std::string FailureReason() { return transport->interrupt()->failure_reason(); }

  // Bump allocator for guest data buffers (from 1 MiB up).
  GuestAddress Alloc(uint64_t len);
  void Fill(GuestAddress addr, const void* data, uint64_t len);
  std::vector<uint8_t> Peek(GuestAddress addr, uint64_t len);

  std::shared_ptr<smolvm::virtio::VirtioDevice> device;
  std::unique_ptr<GuestMemory> memory;
  std::shared_ptr<CountingIrq> irq;
  std::unique_ptr<smolvm::virtio::MmioTransport> transport;
  std::vector<std::unique_ptr<GuestQueue>> queues;

 private:
  GuestAddress next_alloc_ = 1ULL << 20;
};

}  // namespace vtest
