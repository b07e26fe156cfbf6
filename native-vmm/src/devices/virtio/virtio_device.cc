#include "devices/virtio/virtio_device.h"

#include "util/log.h"

namespace smolvm::virtio {
namespace {

LogSink& Sink() {
  static LogSink sink;
  return sink;
}
std::mutex& SinkMutex() {
  static std::mutex m;
  return m;
}

}  // namespace

void SetLogSink(LogSink sink) {
  std::lock_guard<std::mutex> lock(SinkMutex());
  Sink() = std::move(sink);
}

void Log(const std::string& line) {
  std::lock_guard<std::mutex> lock(SinkMutex());
  if (Sink()) {
    Sink()(line);
  } else {
    LogWarning(line);
  }
}

void Interrupt::SignalDeviceFailure(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(reason_mutex_);
    if (failure_reason_.empty()) failure_reason_ = reason;
  }
  needs_reset_.store(true, std::memory_order_release);
  SignalConfigChange();
}

std::string Interrupt::failure_reason() const {
  std::lock_guard<std::mutex> lock(reason_mutex_);
  return failure_reason_;
}

void Interrupt::ClearForReset() {
  status_.store(0, std::memory_order_release);
  needs_reset_.store(false, std::memory_order_release);
  std::lock_guard<std::mutex> lock(reason_mutex_);
  failure_reason_.clear();
}

void Interrupt::RestoreRegisters(uint32_t status, uint32_t generation, bool needs_reset) {
  status_.store(status & (kInterruptUsedBuffer | kInterruptConfigChange),
                std::memory_order_release);
  generation_.store(generation, std::memory_order_release);
  needs_reset_.store(needs_reset, std::memory_order_release);
}

}  // namespace smolvm::virtio
