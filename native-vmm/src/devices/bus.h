// The device buses: port I/O and MMIO exits from a vCPU are dispatched by address to the
// device that owns the range. Devices guard their own state (a vCPU thread and the event loop
// thread may both reach a device).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

namespace smolvm {

class BusDevice {
 public:
  virtual ~BusDevice() = default;
  // `offset` is relative to the base the device was inserted at; len is 1, 2, 4 or 8.
  virtual void Read(uint64_t offset, uint8_t* data, uint32_t len) = 0;
  virtual void Write(uint64_t offset, const uint8_t* data, uint32_t len) = 0;
};

class Bus {
 public:
  // Fails (returns false) when the range overlaps an inserted one.
  bool Insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t len);
  // False when no device owns `addr` (reads then return all-ones).
  bool Read(uint64_t addr, uint8_t* data, uint32_t len) const;
  bool Write(uint64_t addr, const uint8_t* data, uint32_t len) const;

 private:
  struct Range {
    uint64_t len;
    std::shared_ptr<BusDevice> device;
  };
  std::map<uint64_t, Range> ranges_;  // by base
  const Range* Find(uint64_t addr, uint64_t* offset) const;
};

}  // namespace smolvm
