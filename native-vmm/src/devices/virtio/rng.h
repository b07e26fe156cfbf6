// virtio-rng (virtio 1.1 §5.4): fills the driver's buffers from the host's getrandom().
#pragma once

#include <memory>

#include "devices/virtio/device_base.h"

namespace smolvm::virtio {

constexpr uint16_t kRngQueueSize = 256;
// A guest may post huge buffers; each request gets at most this much (the driver asks again).
constexpr uint64_t kRngMaxBytesPerRequest = 64 * 1024;

class VirtioRng : public QueueDeviceBase {
 public:
  VirtioRng() : QueueDeviceBase({kRngQueueSize}, 0) {}
  uint32_t device_id() const override { return kDeviceIdRng; }
  const char* name() const override { return "virtio-rng"; }
  void ReadConfig(uint64_t, uint8_t* data, uint32_t len) override;
  void WriteConfig(uint64_t, const uint8_t*, uint32_t) override {}

 private:
  void ProcessQueueLocked(uint32_t index) override;
};

std::shared_ptr<VirtioRng> MakeVirtioRng();

}  // namespace smolvm::virtio
