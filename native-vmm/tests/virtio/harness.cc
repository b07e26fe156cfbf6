#include "harness.h"

#include <cstring>
#include <stdexcept>

#include "devices/virtio/virtio_device.h"

namespace vtest {

using namespace smolvm::virtio;

GuestQueue::GuestQueue(const GuestMemory& memory, GuestAddress base, uint16_t queue_size)
    : size(queue_size),
      desc(base),
      avail(base + 16ULL * queue_size),
      used((base + 16ULL * queue_size + 6 + 2ULL * queue_size + 3) & ~3ULL),
      memory_(memory) {
  for (uint16_t i = queue_size; i > 0; --i) free_.push_back(static_cast<uint16_t>(i - 1));
  std::vector<uint8_t> zeros(used + 6 + 8ULL * queue_size - base, 0);
  memory.Write(base, zeros.data(), zeros.size());
}

void GuestQueue::WriteDesc(uint16_t index, uint64_t addr, uint32_t len, uint16_t flags,
                           uint16_t next) {
  GuestAddress at = desc + 16ULL * index;
  memory_.WriteObj(at, addr);
  memory_.WriteObj(at + 8, len);
  memory_.WriteObj(at + 12, flags);
  memory_.WriteObj(at + 14, next);
}

void GuestQueue::Publish(uint16_t head) {
  memory_.WriteObj<uint16_t>(avail + 4 + 2ULL * (avail_idx_ % size), head);
  ++avail_idx_;
  memory_.WriteObj<uint16_t>(avail + 2, avail_idx_);
}

void GuestQueue::SetAvailIdx(uint16_t value) {
  avail_idx_ = value;
  memory_.WriteObj<uint16_t>(avail + 2, value);
}

void GuestQueue::SetNoInterrupt(bool on) { memory_.WriteObj<uint16_t>(avail, on ? 1 : 0); }

uint16_t GuestQueue::Add(const std::vector<Buf>& bufs) {
  if (bufs.empty() || bufs.size() > free_.size())
    throw std::runtime_error("test queue: no room for a chain of " + std::to_string(bufs.size()));
  std::vector<uint16_t> indices;
  for (size_t i = 0; i < bufs.size(); ++i) {
    indices.push_back(free_.back());
    free_.pop_back();
  }
  for (size_t i = 0; i < bufs.size(); ++i) {
    const bool last = i + 1 == bufs.size();
    uint16_t flags = static_cast<uint16_t>((last ? 0 : kDescFlagNext) |
                                           (bufs[i].writable ? kDescFlagWrite : 0));
    WriteDesc(indices[i], bufs[i].addr, bufs[i].len, flags, last ? 0 : indices[i + 1]);
  }
  chains_[indices[0]] = indices;
  Publish(indices[0]);
  return indices[0];
}

std::optional<UsedEntry> GuestQueue::PopUsed() {
  uint16_t used_idx = *memory_.ReadObj<uint16_t>(used + 2);
  if (used_idx == last_used_) return std::nullopt;
  UsedEntry entry{*memory_.ReadObj<uint32_t>(used + 4 + 8ULL * (last_used_ % size)),
                  *memory_.ReadObj<uint32_t>(used + 8 + 8ULL * (last_used_ % size))};
  ++last_used_;
  auto it = chains_.find(static_cast<uint16_t>(entry.id));
  if (it != chains_.end()) {
    for (uint16_t index : it->second) free_.push_back(index);
    chains_.erase(it);
  }
  return entry;
}

Harness::Harness(std::shared_ptr<VirtioDevice> dev, uint64_t memory_size)
    : device(std::move(dev)),
      memory(GuestMemory::Create(memory_size)),
      irq(std::make_shared<CountingIrq>()),
      transport(std::make_unique<MmioTransport>(device, *memory, irq)) {}

uint32_t Harness::Read32(uint64_t offset) {
  uint32_t value = 0;
  transport->Read(offset, reinterpret_cast<uint8_t*>(&value), 4);
  return value;
}

void Harness::Write32(uint64_t offset, uint32_t value) {
  transport->Write(offset, reinterpret_cast<const uint8_t*>(&value), 4);
}

uint64_t Harness::ReadConfig64(uint64_t offset) {
  uint64_t value = 0;
  transport->Read(mmio::kConfig + offset, reinterpret_cast<uint8_t*>(&value), 8);
  return value;
}

void Harness::SetupQueue(uint32_t index, uint16_t queue_size, GuestAddress desc,
                         GuestAddress avail, GuestAddress used) {
  Write32(mmio::kQueueSel, index);
  Write32(mmio::kQueueNum, queue_size);
  Write32(mmio::kQueueDescLow, static_cast<uint32_t>(desc));
  Write32(mmio::kQueueDescHigh, static_cast<uint32_t>(desc >> 32));
  Write32(mmio::kQueueDriverLow, static_cast<uint32_t>(avail));
  Write32(mmio::kQueueDriverHigh, static_cast<uint32_t>(avail >> 32));
  Write32(mmio::kQueueDeviceLow, static_cast<uint32_t>(used));
  Write32(mmio::kQueueDeviceHigh, static_cast<uint32_t>(used >> 32));
  Write32(mmio::kQueueReady, 1);
}

uint32_t Harness::Init(uint16_t queue_size, uint64_t refuse_features) {
  Write32(mmio::kStatus, 0);
  Write32(mmio::kStatus, kStatusAcknowledge);
  Write32(mmio::kStatus, kStatusAcknowledge | kStatusDriver);
  Write32(mmio::kDeviceFeaturesSel, 0);
  uint64_t features = Read32(mmio::kDeviceFeatures);
  Write32(mmio::kDeviceFeaturesSel, 1);
  features |= uint64_t{Read32(mmio::kDeviceFeatures)} << 32;
  features &= ~refuse_features;
  Write32(mmio::kDriverFeaturesSel, 0);
  Write32(mmio::kDriverFeatures, static_cast<uint32_t>(features));
  Write32(mmio::kDriverFeaturesSel, 1);
  Write32(mmio::kDriverFeatures, static_cast<uint32_t>(features >> 32));
  Write32(mmio::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  if (!(Read32(mmio::kStatus) & kStatusFeaturesOk)) return Read32(mmio::kStatus);
  queues.clear();
  for (uint32_t i = 0; i < device->num_queues(); ++i) {
    Write32(mmio::kQueueSel, i);
    uint16_t max = static_cast<uint16_t>(Read32(mmio::kQueueNumMax));
    uint16_t n = queue_size ? queue_size : max;
    auto q = std::make_unique<GuestQueue>(*memory, 0x10000ULL * (i + 1), n);
    SetupQueue(i, n, q->desc, q->avail, q->used);
    queues.push_back(std::move(q));
  }
  Write32(mmio::kStatus,
          kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  return Read32(mmio::kStatus);
}

void Harness::Notify(uint32_t queue) { Write32(mmio::kQueueNotify, queue); }

GuestAddress Harness::Alloc(uint64_t len) {
  GuestAddress at = next_alloc_;
  next_alloc_ = (next_alloc_ + len + 15) & ~15ULL;
  if (next_alloc_ > memory->size()) throw std::runtime_error("test guest memory exhausted");
  return at;
}

void Harness::Fill(GuestAddress addr, const void* data, uint64_t len) {
  if (!memory->Write(addr, data, len)) throw std::runtime_error("test Fill outside RAM");
}

std::vector<uint8_t> Harness::Peek(GuestAddress addr, uint64_t len) {
  std::vector<uint8_t> out(len);
  if (!memory->Read(addr, out.data(), len)) throw std::runtime_error("test Peek outside RAM");
  return out;
}

}  // namespace vtest
