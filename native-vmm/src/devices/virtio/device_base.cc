#include "devices/virtio/device_base.h"

namespace smolvm::virtio {
namespace {

constexpr uint32_t kDeviceStateMagic = 0x76697164;  // "dqiv"
constexpr uint32_t kDeviceStateVersion = 1;

}  // namespace

void QueueDeviceBase::Activate(const GuestMemory& memory, std::vector<Queue> queues,
                               uint64_t acked_features, std::shared_ptr<Interrupt> interrupt) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (active_) throw VmmError(std::string(name()) + ": activated twice without a reset");
  if (queues.size() != queue_max_sizes_.size())
    throw VmmError(std::string(name()) + ": activated with " + std::to_string(queues.size()) +
                   " queues, expected " + std::to_string(queue_max_sizes_.size()));
  memory_ = &memory;
  queues_ = std::move(queues);
  acked_features_ = acked_features;
  interrupt_ = std::move(interrupt);
  failed_ = false;
  try {
    OnActivateLocked();
  } catch (...) {
    queues_.clear();
    memory_ = nullptr;
    interrupt_.reset();
    throw;
  }
  active_ = true;
}

bool QueueDeviceBase::active() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return active_;
}

bool QueueDeviceBase::failed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return failed_;
}

void QueueDeviceBase::NotifyQueue(uint32_t index) {
  RunGuarded([&] {
    if (index >= queues_.size()) {
      Log(std::string(name()) + ": notify for queue " + std::to_string(index) +
          " that does not exist, ignored");
      return;
    }
    if (!queues_[index].ready()) return;
    ProcessQueueLocked(index);
  });
}

void QueueDeviceBase::Reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  OnResetLocked();
  active_ = false;
  failed_ = false;
  queues_.clear();
  memory_ = nullptr;
  interrupt_.reset();
  acked_features_ = 0;
}

void QueueDeviceBase::FailLocked(const std::string& why) {
  if (failed_) return;
  failed_ = true;
  const std::string reason = std::string(name()) + ": device stopped: " + why;
  Log(reason);
  if (interrupt_) interrupt_->SignalDeviceFailure(reason);
}

void QueueDeviceBase::InterruptIfWanted(const Queue& queue) {
  if (interrupt_ && queue.ShouldInterrupt()) interrupt_->SignalUsedBuffer();
}

std::vector<uint8_t> QueueDeviceBase::SaveState() const {
  std::lock_guard<std::mutex> lock(mutex_);
  StateWriter out;
  out.U32(kDeviceStateMagic);
  out.U32(kDeviceStateVersion);
  out.U32(device_id());
  out.U8(active_ ? 1 : 0);
  out.U8(failed_ ? 1 : 0);
  out.U32(static_cast<uint32_t>(queues_.size()));
  for (const Queue& q : queues_) {
    out.U16(q.next_avail());
    out.U16(q.next_used());
  }
  SaveDeviceStateLocked(out);
  return out.Take();
}

void QueueDeviceBase::RestoreState(const std::vector<uint8_t>& state) {
  std::lock_guard<std::mutex> lock(mutex_);
  StateReader in(state, name());
  in.Expect(in.U32(), kDeviceStateMagic, "magic");
  in.Expect(in.U32(), kDeviceStateVersion, "version");
  in.Expect(in.U32(), device_id(), "device id");
  const bool was_active = in.U8() != 0;
  const bool was_failed = in.U8() != 0;
  if (was_active != active_)
    in.Fail(was_active ? "device was active but the driver setup was not restored first"
                       : "device was not active but has been activated");
  const uint32_t queue_count = in.U32();
  if (queue_count != queues_.size())
    in.Fail("holds " + std::to_string(queue_count) + " queues, device has " +
            std::to_string(queues_.size()));
  for (Queue& q : queues_) {
    uint16_t next_avail = in.U16();
    uint16_t next_used = in.U16();
    q.SetPositions(next_avail, next_used);
  }
  failed_ = was_failed;
  RestoreDeviceStateLocked(in);
  in.ExpectEnd();
}

}  // namespace smolvm::virtio
