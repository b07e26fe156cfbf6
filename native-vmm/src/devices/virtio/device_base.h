// What every queue-driven virtio device shares: one lock over its state, activation, the
// guard that turns a GuestError into a failed device (and never into a crashed VMM), reset,
// and save/restore of queue positions around the device's own state.
#pragma once

#include <memory>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

#include "devices/virtio/queue.h"
#include "devices/virtio/state_codec.h"
#include "devices/virtio/virtio_device.h"

namespace smolvm::virtio {

class QueueDeviceBase : public VirtioDevice {
 public:
  uint64_t features() const override { return features_; }
  size_t num_queues() const override { return queue_max_sizes_.size(); }
  uint16_t queue_max_size(size_t index) const override {
    return index < queue_max_sizes_.size() ? queue_max_sizes_[index] : 0;
  }
  // Does not look at the queues yet: the transport notifies every ready queue after a driver
  // activation (buffers posted before DRIVER_OK), but not after a restore.
  void Activate(const GuestMemory& memory, std::vector<Queue> queues, uint64_t acked_features,
                std::shared_ptr<Interrupt> interrupt) override;
  bool active() const override;
  void NotifyQueue(uint32_t index) override;
  void Reset() override;
  std::vector<uint8_t> SaveState() const override;
  void RestoreState(const std::vector<uint8_t>& state) override;

  // True once the guest broke the protocol; the device ignores it until reset.
  bool failed() const;

 protected:
  QueueDeviceBase(std::vector<uint16_t> queue_max_sizes, uint64_t features)
      : queue_max_sizes_(std::move(queue_max_sizes)),
        features_(features | FeatureBit(kFeatureVersion1)) {}

  // Hooks, all called with mutex_ held.
  virtual void ProcessQueueLocked(uint32_t index) = 0;
  // Throw VmmError to refuse activation (e.g. a required queue is not ready).
  virtual void OnActivateLocked() {}
  virtual void OnResetLocked() {}
  virtual void SaveDeviceStateLocked(StateWriter& /*out*/) const {}
  virtual void RestoreDeviceStateLocked(StateReader& /*in*/) {}

  // Runs `work` under the lock when the device is active and healthy; a GuestError fails the
  // device. For back-end threads (event loop) as well as queue notifications.
  template <typename Work>
  void RunGuarded(Work&& work) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!active_ || failed_) return;
    try {
      work();
    } catch (const GuestError& e) {
      FailLocked(e.what());
    } catch (const std::exception& e) {
      // A host-side failure (epoll, allocation) while serving this device: stop the device,
      // never unwind into the vCPU's exit handler.
      FailLocked(std::string("internal error: ") + e.what());
    }
  }
  // Stops the device (guest protocol violation or internal failure) and tells the driver
  // (DEVICE_NEEDS_RESET + config-change interrupt).
  void FailLocked(const std::string& why);
  // Raises the used-buffer interrupt unless the driver suppressed it for `queue`.
  void InterruptIfWanted(const Queue& queue);
  bool active_locked() const { return active_ && !failed_; }

  mutable std::mutex mutex_;
  const GuestMemory* memory_ = nullptr;
  std::vector<Queue> queues_;
  std::shared_ptr<Interrupt> interrupt_;
  uint64_t acked_features_ = 0;

 private:
  std::vector<uint16_t> queue_max_sizes_;
  uint64_t features_;
  bool active_ = false;
  bool failed_ = false;
};

}  // namespace smolvm::virtio
