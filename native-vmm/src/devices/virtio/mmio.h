// The virtio-mmio transport, version 2 (virtio 1.1 §4.2.2): the 4 KiB register window a
// device occupies on the MMIO bus, feature negotiation, queue setup, interrupt status and
// acknowledgement, device status with reset, and the device config window at 0x100. The
// device logic lives behind VirtioDevice; this class only speaks the register protocol.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "devices/bus.h"
#include "devices/irq.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio_device.h"
#include "memory/guest_memory.h"

namespace smolvm::virtio {

// Register offsets (§4.2.2).
namespace mmio {
constexpr uint64_t kMagicValue = 0x000;
constexpr uint64_t kVersion = 0x004;
constexpr uint64_t kDeviceId = 0x008;
constexpr uint64_t kVendorId = 0x00c;
constexpr uint64_t kDeviceFeatures = 0x010;
constexpr uint64_t kDeviceFeaturesSel = 0x014;
constexpr uint64_t kDriverFeatures = 0x020;
constexpr uint64_t kDriverFeaturesSel = 0x024;
constexpr uint64_t kQueueSel = 0x030;
constexpr uint64_t kQueueNumMax = 0x034;
constexpr uint64_t kQueueNum = 0x038;
constexpr uint64_t kQueueReady = 0x044;
constexpr uint64_t kQueueNotify = 0x050;
constexpr uint64_t kInterruptStatus = 0x060;
constexpr uint64_t kInterruptAck = 0x064;
constexpr uint64_t kStatus = 0x070;
constexpr uint64_t kQueueDescLow = 0x080;
constexpr uint64_t kQueueDescHigh = 0x084;
constexpr uint64_t kQueueDriverLow = 0x090;
constexpr uint64_t kQueueDriverHigh = 0x094;
constexpr uint64_t kQueueDeviceLow = 0x0a0;
constexpr uint64_t kQueueDeviceHigh = 0x0a4;
constexpr uint64_t kConfigGeneration = 0x0fc;
constexpr uint64_t kConfig = 0x100;

constexpr uint32_t kMagic = 0x74726976;  // "virt"
constexpr uint32_t kTransportVersion = 2;
constexpr uint32_t kVendor = 0x554d4551;  // "QEMU", what Linux expects of no vendor in particular
constexpr uint64_t kWindowSize = 0x1000;
}  // namespace mmio

class MmioTransport : public BusDevice {
 public:
  // `memory` must outlive the transport. `irq` is the device's interrupt line.
  MmioTransport(std::shared_ptr<VirtioDevice> device, const GuestMemory& memory,
                std::shared_ptr<IrqLine> irq);
  ~MmioTransport() override;

  // BusDevice: offsets inside the 4 KiB window. Registers take 4-byte accesses; the config
  // window any width. Anything else reads as zeros and is ignored on write.
  void Read(uint64_t offset, uint8_t* data, uint32_t len) override;
  void Write(uint64_t offset, const uint8_t* data, uint32_t len) override;

  // The QueueNotify path for an ioeventfd registered on window offset 0x50 (datamatch = queue).
  void NotifyQueue(uint32_t index);

  // Transport registers plus the device's own state. Restore only into a fresh transport
  // (device status 0) on the same kind of device; throws VmmError on a bad blob.
  std::vector<uint8_t> SaveState() const;
  void RestoreState(const std::vector<uint8_t>& state);

  VirtioDevice& device() const { return *device_; }
  const std::shared_ptr<Interrupt>& interrupt() const { return interrupt_; }
  // Device status as the driver reads it (DEVICE_NEEDS_RESET included).
  uint32_t status() const;

  // "virtio_mmio.device=4K@0x<base>:<irq>" for the kernel command line.
  static std::string KernelCmdlineArg(uint64_t base, uint32_t irq);

 private:
  uint32_t ReadRegisterLocked(uint64_t offset) const;
  void WriteRegisterLocked(uint64_t offset, uint32_t value);
  void WriteStatusLocked(uint32_t value);
  void ResetLocked();
  bool FeaturesAcceptableLocked(std::string* why) const;
  void ActivateLocked();
  QueueConfig* SelectedQueueForSetupLocked();

  const std::shared_ptr<VirtioDevice> device_;
  const GuestMemory& memory_;
  const std::shared_ptr<Interrupt> interrupt_;

  mutable std::mutex mutex_;
  uint32_t status_ = 0;
  uint32_t device_features_sel_ = 0;
  uint32_t driver_features_sel_ = 0;
  uint64_t driver_features_ = 0;
  uint32_t queue_sel_ = 0;
  std::vector<QueueConfig> queues_;
  bool activated_ = false;
};

}  // namespace smolvm::virtio
