#include "devices/virtio/mmio.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "devices/virtio/state_codec.h"

namespace smolvm::virtio {
namespace {

constexpr uint32_t kTransportStateMagic = 0x6f696d76;  // "vmio"
constexpr uint32_t kTransportStateVersion = 1;

uint32_t LoadLe32(const uint8_t* data) {
  uint32_t v;
  memcpy(&v, data, 4);
  return v;
}

void SetLow(uint64_t* field, uint32_t value) { *field = (*field & ~0xffffffffULL) | value; }
void SetHigh(uint64_t* field, uint32_t value) {
  *field = (*field & 0xffffffffULL) | (uint64_t{value} << 32);
}

}  // namespace

MmioTransport::MmioTransport(std::shared_ptr<VirtioDevice> device, const GuestMemory& memory,
                             std::shared_ptr<IrqLine> irq)
    : device_(std::move(device)),
      memory_(memory),
      interrupt_(std::make_shared<Interrupt>(std::move(irq))) {
  if (!device_) throw VmmError("virtio-mmio: no device given");
  ResetLocked();  // no other thread can see us yet
}

MmioTransport::~MmioTransport() = default;

std::string MmioTransport::KernelCmdlineArg(uint64_t base, uint32_t irq) {
  char buf[96];
  snprintf(buf, sizeof buf, "virtio_mmio.device=4K@0x%" PRIx64 ":%u", base, irq);
  return buf;
}

uint32_t MmioTransport::status() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return status_ | (interrupt_->needs_reset() ? kStatusDeviceNeedsReset : 0);
}

void MmioTransport::Read(uint64_t offset, uint8_t* data, uint32_t len) {
  memset(data, 0, len);
  if (offset >= mmio::kConfig) {
    if (offset < mmio::kWindowSize && len <= mmio::kWindowSize - offset)
      device_->ReadConfig(offset - mmio::kConfig, data, len);
    return;
  }
  if (len != 4 || offset % 4 != 0) {
    Log(std::string(device_->name()) + ": ignored " + std::to_string(len) +
        "-byte register read at offset " + std::to_string(offset));
    return;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  uint32_t value = ReadRegisterLocked(offset);
  memcpy(data, &value, 4);
}

void MmioTransport::Write(uint64_t offset, const uint8_t* data, uint32_t len) {
  if (offset >= mmio::kConfig) {
    if (offset < mmio::kWindowSize && len <= mmio::kWindowSize - offset)
      device_->WriteConfig(offset - mmio::kConfig, data, len);
    return;
  }
  if (len != 4 || offset % 4 != 0) {
    Log(std::string(device_->name()) + ": ignored " + std::to_string(len) +
        "-byte register write at offset " + std::to_string(offset));
    return;
  }
  const uint32_t value = LoadLe32(data);
  if (offset == mmio::kQueueNotify) {
    // No transport state needed: the device checks it is active and the queue exists.
    NotifyQueue(value);
    return;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  WriteRegisterLocked(offset, value);
}

void MmioTransport::NotifyQueue(uint32_t index) { device_->NotifyQueue(index); }

uint32_t MmioTransport::ReadRegisterLocked(uint64_t offset) const {
  switch (offset) {
    case mmio::kMagicValue:
      return mmio::kMagic;
    case mmio::kVersion:
      return mmio::kTransportVersion;
    case mmio::kDeviceId:
      return device_->device_id();
    case mmio::kVendorId:
      return mmio::kVendor;
    case mmio::kDeviceFeatures: {
      const uint64_t features = device_->features();
      if (device_features_sel_ == 0) return static_cast<uint32_t>(features);
      if (device_features_sel_ == 1) return static_cast<uint32_t>(features >> 32);
      return 0;
    }
    case mmio::kQueueNumMax:
      return queue_sel_ < queues_.size() ? device_->queue_max_size(queue_sel_) : 0;
    case mmio::kQueueReady:
      return queue_sel_ < queues_.size() && queues_[queue_sel_].ready ? 1 : 0;
    case mmio::kInterruptStatus:
      return interrupt_->status();
    case mmio::kStatus:
      return status_ | (interrupt_->needs_reset() ? kStatusDeviceNeedsReset : 0);
    case mmio::kConfigGeneration:
      return interrupt_->config_generation();
    default:
      // Write-only or reserved registers read as zero.
      return 0;
  }
}

QueueConfig* MmioTransport::SelectedQueueForSetupLocked() {
  if (queue_sel_ >= queues_.size()) return nullptr;
  // Queue layout is fixed once the queue is enabled or the driver is running (§4.2.3.2).
  if ((status_ & kStatusDriverOk) || queues_[queue_sel_].ready) return nullptr;
  return &queues_[queue_sel_];
}

void MmioTransport::WriteRegisterLocked(uint64_t offset, uint32_t value) {
  const bool can_negotiate = (status_ & kStatusDriver) && !(status_ & kStatusFeaturesOk);
  switch (offset) {
    case mmio::kDeviceFeaturesSel:
      device_features_sel_ = value;
      return;
    case mmio::kDriverFeaturesSel:
      driver_features_sel_ = value;
      return;
    case mmio::kDriverFeatures:
      if (!can_negotiate) break;
      if (driver_features_sel_ == 0) SetLow(&driver_features_, value);
      else if (driver_features_sel_ == 1) SetHigh(&driver_features_, value);
      return;
    case mmio::kQueueSel:
      queue_sel_ = value;
      return;
    case mmio::kQueueNum:
      if (QueueConfig* q = SelectedQueueForSetupLocked()) {
        // Checked against the maximum when the driver enables the queue.
        q->size = value > 0xffff ? 0 : static_cast<uint16_t>(value);
        return;
      }
      break;
    case mmio::kQueueReady:
      if (queue_sel_ < queues_.size() && !(status_ & kStatusDriverOk)) {
        queues_[queue_sel_].ready = value == 1;
        return;
      }
      break;
    case mmio::kQueueDescLow:
    case mmio::kQueueDescHigh:
    case mmio::kQueueDriverLow:
    case mmio::kQueueDriverHigh:
    case mmio::kQueueDeviceLow:
    case mmio::kQueueDeviceHigh:
      if (QueueConfig* q = SelectedQueueForSetupLocked()) {
        uint64_t* field = offset < mmio::kQueueDriverLow   ? &q->desc
                          : offset < mmio::kQueueDeviceLow ? &q->avail
                                                           : &q->used;
        if (offset % 8 == 0) SetLow(field, value);
        else SetHigh(field, value);
        return;
      }
      break;
    case mmio::kInterruptAck:
      interrupt_->Acknowledge(value);
      return;
    case mmio::kStatus:
      WriteStatusLocked(value);
      return;
    default:
      break;
  }
  Log(std::string(device_->name()) + ": ignored register write at offset " +
      std::to_string(offset) + " in device status " + std::to_string(status_));
}

bool MmioTransport::FeaturesAcceptableLocked(std::string* why) const {
  const uint64_t offered = device_->features();
  if (driver_features_ & ~offered) {
    char buf[64];
    snprintf(buf, sizeof buf, "0x%" PRIx64, driver_features_ & ~offered);
    *why = std::string("driver accepted features the device does not offer: ") + buf;
    return false;
  }
  if (!(driver_features_ & FeatureBit(kFeatureVersion1))) {
    *why = "driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)";
    return false;
  }
  return true;
}

void MmioTransport::WriteStatusLocked(uint32_t value) {
  if (value == 0) {
    ResetLocked();
    return;
  }
  value &= ~kStatusDeviceNeedsReset;  // device-owned bit
  // The driver only ever adds bits until it resets the device (§3.1.1).
  if ((value & status_) != status_) {
    Log(std::string(device_->name()) + ": driver cleared status bits (" +
        std::to_string(status_) + " -> " + std::to_string(value) + "), ignored");
    return;
  }
  const uint32_t added = value & ~status_;
  if (added & kStatusFeaturesOk) {
    std::string why;
    if (!FeaturesAcceptableLocked(&why)) {
      // Leaving FEATURES_OK clear is how a device refuses the feature set (§3.1.1 step 6).
      Log(std::string(device_->name()) + ": refused features: " + why);
      value &= ~kStatusFeaturesOk;
    }
  }
  if ((added & kStatusDriverOk) && !(value & kStatusFeaturesOk)) {
    Log(std::string(device_->name()) + ": DRIVER_OK without FEATURES_OK, ignored");
    value &= ~kStatusDriverOk;
  }
  status_ = value;
  if ((added & kStatusDriverOk) && (value & kStatusDriverOk) && !(value & kStatusFailed))
    ActivateLocked();
}

void MmioTransport::ActivateLocked() {
  std::vector<Queue> queues;
  queues.reserve(queues_.size());
  for (size_t i = 0; i < queues_.size(); ++i) {
    const QueueConfig& config = queues_[i];
    if (!config.ready) {
      queues.emplace_back();
      continue;
    }
    std::string problem = Queue::Check(memory_, config, device_->queue_max_size(i));
    if (!problem.empty()) {
      const std::string reason =
          std::string(device_->name()) + ": queue " + std::to_string(i) + ": " + problem;
      Log(reason);
      interrupt_->SignalDeviceFailure(reason);
      return;
    }
    queues.emplace_back(memory_, config);
  }
  try {
    device_->Activate(memory_, std::move(queues), driver_features_, interrupt_);
    activated_ = true;
  } catch (const VmmError& e) {
    const std::string reason = std::string(device_->name()) + ": activation failed: " + e.what();
    Log(reason);
    interrupt_->SignalDeviceFailure(reason);
    return;
  }
  // Drivers may post buffers (and kick) before DRIVER_OK, when kicks are ignored: look now.
  for (size_t i = 0; i < queues_.size(); ++i)
    if (queues_[i].ready) device_->NotifyQueue(static_cast<uint32_t>(i));
}

void MmioTransport::ResetLocked() {
  if (activated_ || device_->active()) device_->Reset();
  activated_ = false;
  status_ = 0;
  device_features_sel_ = 0;
  driver_features_sel_ = 0;
  driver_features_ = 0;
  queue_sel_ = 0;
  queues_.assign(device_->num_queues(), QueueConfig{});
  for (size_t i = 0; i < queues_.size(); ++i) queues_[i].size = device_->queue_max_size(i);
  interrupt_->ClearForReset();
}

std::vector<uint8_t> MmioTransport::SaveState() const {
  std::lock_guard<std::mutex> lock(mutex_);
  StateWriter out;
  out.U32(kTransportStateMagic);
  out.U32(kTransportStateVersion);
  out.U32(device_->device_id());
  out.U32(status_);
  out.U32(device_features_sel_);
  out.U32(driver_features_sel_);
  out.U64(driver_features_);
  out.U32(queue_sel_);
  out.U32(static_cast<uint32_t>(queues_.size()));
  for (const QueueConfig& q : queues_) {
    out.U16(q.size);
    out.U8(q.ready ? 1 : 0);
    out.U64(q.desc);
    out.U64(q.avail);
    out.U64(q.used);
  }
  out.U32(interrupt_->status());
  out.U32(interrupt_->config_generation());
  out.U8(interrupt_->needs_reset() ? 1 : 0);
  out.U8(activated_ ? 1 : 0);
  out.Bytes(device_->SaveState());
  return out.Take();
}

void MmioTransport::RestoreState(const std::vector<uint8_t>& state) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string what = std::string(device_->name()) + " transport";
  if (status_ != 0 || activated_) throw VmmError(what + ": restore into a device already in use");
  StateReader in(state, what);
  in.Expect(in.U32(), kTransportStateMagic, "magic");
  in.Expect(in.U32(), kTransportStateVersion, "version");
  in.Expect(in.U32(), device_->device_id(), "device id");
  const uint32_t status = in.U32();
  const uint32_t device_features_sel = in.U32();
  const uint32_t driver_features_sel = in.U32();
  const uint64_t driver_features = in.U64();
  const uint32_t queue_sel = in.U32();
  const uint32_t queue_count = in.U32();
  if (queue_count != device_->num_queues())
    in.Fail("holds " + std::to_string(queue_count) + " queues, device has " +
            std::to_string(device_->num_queues()));
  std::vector<QueueConfig> queues(queue_count);
  for (QueueConfig& q : queues) {
    q.size = in.U16();
    q.ready = in.U8() != 0;
    q.desc = in.U64();
    q.avail = in.U64();
    q.used = in.U64();
  }
  const uint32_t interrupt_status = in.U32();
  const uint32_t generation = in.U32();
  const bool needs_reset = in.U8() != 0;
  const bool activated = in.U8() != 0;
  const std::vector<uint8_t> device_state = in.Bytes();
  in.ExpectEnd();

  status_ = status & ~kStatusDeviceNeedsReset;
  device_features_sel_ = device_features_sel;
  driver_features_sel_ = driver_features_sel;
  driver_features_ = driver_features;
  queue_sel_ = queue_sel;
  queues_ = std::move(queues);
  interrupt_->RestoreRegisters(interrupt_status, generation, needs_reset);
  if (activated) {
    std::string why;
    if (!FeaturesAcceptableLocked(&why)) in.Fail(why);
    std::vector<Queue> live;
    for (size_t i = 0; i < queues_.size(); ++i) {
      if (!queues_[i].ready) {
        live.emplace_back();
        continue;
      }
      std::string problem = Queue::Check(memory_, queues_[i], device_->queue_max_size(i));
      if (!problem.empty()) in.Fail("queue " + std::to_string(i) + ": " + problem);
      live.emplace_back(memory_, queues_[i]);
    }
    device_->Activate(memory_, std::move(live), driver_features_, interrupt_);
    activated_ = true;
  }
  device_->RestoreState(device_state);
}

}  // namespace smolvm::virtio
