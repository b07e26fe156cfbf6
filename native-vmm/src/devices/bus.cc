#include "devices/bus.h"

#include <cstring>

namespace smolvm {

bool Bus::Insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t len) {
  if (!device || len == 0) return false;
  if (base + len < base) return false;  // wraps around the address space
  // The first range at or after base must start after our end...
  auto next = ranges_.lower_bound(base);
  if (next != ranges_.end() && next->first < base + len) return false;
  // ...and the range before base must end at or before it.
  if (next != ranges_.begin()) {
    auto previous = std::prev(next);
    if (previous->first + previous->second.len > base) return false;
  }
  ranges_.emplace(base, Range{len, std::move(device)});
  return true;
}

const Bus::Range* Bus::Find(uint64_t addr, uint64_t* offset) const {
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return nullptr;
  --it;
  const uint64_t delta = addr - it->first;
  if (delta >= it->second.len) return nullptr;
  *offset = delta;
  return &it->second;
}

bool Bus::Read(uint64_t addr, uint8_t* data, uint32_t len) const {
  uint64_t offset = 0;
  const Range* range = Find(addr, &offset);
  if (range == nullptr) {
    std::memset(data, 0xff, len);
    return false;
  }
  range->device->Read(offset, data, len);
  return true;
}

bool Bus::Write(uint64_t addr, const uint8_t* data, uint32_t len) const {
  uint64_t offset = 0;
  const Range* range = Find(addr, &offset);
  if (range == nullptr) return false;
  range->device->Write(offset, data, len);
  return true;
}

}  // namespace smolvm
