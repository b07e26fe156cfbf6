// The device side of virtio, apart from any transport: the VirtioDevice interface a device
// implements (type, features, config space, activation, queue notifications, reset,
// save/restore) and the Interrupt the transport hands to a device so it can signal the guest.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "devices/irq.h"
#include "util/error.h"

namespace smolvm {
class GuestMemory;
}

namespace smolvm::virtio {

// Device ids (virtio 1.1 §5).
constexpr uint32_t kDeviceIdBlock = 2;
constexpr uint32_t kDeviceIdConsole = 3;
constexpr uint32_t kDeviceIdRng = 4;
constexpr uint32_t kDeviceIdVsock = 19;

// Device status bits (§2.1).
constexpr uint32_t kStatusAcknowledge = 1;
constexpr uint32_t kStatusDriver = 2;
constexpr uint32_t kStatusDriverOk = 4;
constexpr uint32_t kStatusFeaturesOk = 8;
constexpr uint32_t kStatusDeviceNeedsReset = 0x40;
constexpr uint32_t kStatusFailed = 0x80;

// Transport-independent feature bits (§6).
constexpr unsigned kFeatureIndirectDesc = 28;  // not offered
constexpr unsigned kFeatureEventIdx = 29;      // not offered
constexpr unsigned kFeatureVersion1 = 32;      // always offered and required

constexpr uint64_t FeatureBit(unsigned bit) { return uint64_t{1} << bit; }

// Interrupt status bits (virtio-mmio InterruptStatus).
constexpr uint32_t kInterruptUsedBuffer = 1;
constexpr uint32_t kInterruptConfigChange = 2;

// A guest broke the virtio contract (bad descriptor, range outside RAM, loop, ...). Thrown by
// queue code, caught by the device, which then fails itself (DEVICE_NEEDS_RESET): the guest
// loses this device, the VMM carries on.
class GuestError : public VmmError {
 public:
  explicit GuestError(const std::string& what) : VmmError(what) {}
};

// Where device diagnostics go (default: util/log.h LogWarning). Tests capture them.
using LogSink = std::function<void(const std::string& line)>;
void SetLogSink(LogSink sink);
void Log(const std::string& line);

// The interrupt state of one device, shared by the transport (which reads and acknowledges it
// on guest register accesses, from a vCPU thread) and the device (which raises it from any
// thread). Lock-free: no lock order to get wrong between transport and device.
class Interrupt {
 public:
  explicit Interrupt(std::shared_ptr<IrqLine> line) : line_(std::move(line)) {}

  // A used buffer was added to a queue.
  void SignalUsedBuffer() { Raise(kInterruptUsedBuffer); }
  // The device configuration changed: the generation moves so the driver re-reads it.
  void SignalConfigChange() {
    generation_.fetch_add(1, std::memory_order_acq_rel);
    Raise(kInterruptConfigChange);
  }
  // The guest broke the protocol: the device stops and asks for a reset (§2.1.1).
  void SignalDeviceFailure(const std::string& reason);

  uint32_t status() const { return status_.load(std::memory_order_acquire); }
  void Acknowledge(uint32_t bits) { status_.fetch_and(~bits, std::memory_order_acq_rel); }
  uint32_t config_generation() const { return generation_.load(std::memory_order_acquire); }
  bool needs_reset() const { return needs_reset_.load(std::memory_order_acquire); }
  std::string failure_reason() const;

  // Device reset by the driver: pending interrupts and the failure are forgotten.
  void ClearForReset();
  // Snapshot restore.
  void RestoreRegisters(uint32_t status, uint32_t generation, bool needs_reset);

 private:
  void Raise(uint32_t bit) {
    status_.fetch_or(bit, std::memory_order_acq_rel);
    if (line_) line_->Trigger();
  }
  std::shared_ptr<IrqLine> line_;
  std::atomic<uint32_t> status_{0};
  std::atomic<uint32_t> generation_{0};
  std::atomic<bool> needs_reset_{false};
  mutable std::mutex reason_mutex_;
  std::string failure_reason_;
};

class Queue;

// Device logic, transport-agnostic. Implementations guard their own state: the transport
// calls in from vCPU threads, back ends (unix sockets) from the event loop thread.
class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;

  virtual uint32_t device_id() const = 0;
  virtual const char* name() const = 0;
  // Features the device offers; includes FeatureBit(kFeatureVersion1).
  virtual uint64_t features() const = 0;
  virtual size_t num_queues() const = 0;
  virtual uint16_t queue_max_size(size_t index) const = 0;

  // Device-specific configuration space (offset 0 = transport's config window start).
  // Out-of-range reads return zeros; out-of-range or read-only writes are ignored.
  virtual void ReadConfig(uint64_t offset, uint8_t* data, uint32_t len) = 0;
  virtual void WriteConfig(uint64_t offset, const uint8_t* data, uint32_t len) = 0;

  // The driver set DRIVER_OK. `queues` has num_queues() entries (some may be not ready).
  // `memory` outlives the activation (until Reset or destruction). Throws VmmError when the
  // device cannot run with this setup; the transport then sets DEVICE_NEEDS_RESET.
  virtual void Activate(const GuestMemory& memory, std::vector<Queue> queues,
                        uint64_t acked_features, std::shared_ptr<Interrupt> interrupt) = 0;
  virtual bool active() const = 0;
  // The driver wrote `index` to QueueNotify (or its ioeventfd fired).
  virtual void NotifyQueue(uint32_t index) = 0;
  // The driver wrote 0 to Status: drop queues and in-flight work, back to the initial state.
  virtual void Reset() = 0;

  // Snapshot of the device's own state, including queue positions when active. Restore is
  // called after Activate (when the snapshot was taken active) with the saved bytes; it throws
  // VmmError on a malformed or foreign blob.
  virtual std::vector<uint8_t> SaveState() const = 0;
  virtual void RestoreState(const std::vector<uint8_t>& state) = 0;
};

}  // namespace smolvm::virtio
