// virtio-console (virtio 1.1 §5.3), one port, no multiport: what the guest writes to hvc0
// goes to a host fd, non-blocking (devices/output_sink.h: a lagging reader costs dropped,
// counted output, never a stalled vCPU); optionally a host fd feeds the guest's input (read on
// the event loop, only while the driver has receive buffers posted).
#pragma once

#include <memory>

#include "devices/output_sink.h"
#include "devices/virtio/device_base.h"
#include "util/event_loop.h"
#include "util/fd.h"

namespace smolvm::virtio {

constexpr uint16_t kConsoleQueueSize = 256;
constexpr uint32_t kConsoleReceiveQueue = 0;   // host -> guest
constexpr uint32_t kConsoleTransmitQueue = 1;  // guest -> host

class VirtioConsole : public QueueDeviceBase,
                      public std::enable_shared_from_this<VirtioConsole> {
 public:
  // Use MakeVirtioConsole.
  VirtioConsole(UniqueFd output, UniqueFd input, EventLoop* loop);
  ~VirtioConsole() override;

  uint32_t device_id() const override { return kDeviceIdConsole; }
  const char* name() const override { return "virtio-console"; }
  void ReadConfig(uint64_t offset, uint8_t* data, uint32_t len) override;
  void WriteConfig(uint64_t, const uint8_t*, uint32_t) override {}

  // Output bytes dropped so far because the output was full.
  uint64_t dropped_bytes();

 private:
  void ProcessQueueLocked(uint32_t index) override;
  void OnResetLocked() override;
  void TransmitLocked();
  void ReceiveLocked();
  void OnInputReady();
  void UpdateInputInterestLocked();

  UniqueFd output_;
  OutputSink sink_;
  UniqueFd input_;
  EventLoop* loop_;
  bool input_registered_ = false;
  bool input_eof_ = false;
};

// `output` receives the guest's console output (made non-blocking: see OutputSink). `input`
// (may be invalid) is read on `loop` (required when input is valid). Throws VmmError on an
// invalid output fd or input without a loop.
std::shared_ptr<VirtioConsole> MakeVirtioConsole(UniqueFd output, UniqueFd input = UniqueFd(),
                                                 EventLoop* loop = nullptr);

}  // namespace smolvm::virtio
