// 8250/16550A UART (COM1 at 0x3f8, IRQ 4): enough for the Linux 8250 driver and
// earlyprintk. Transmitted bytes go to an output fd, non-blocking (output_sink.h: a full or
// closed output never stalls or fails the guest; what is dropped is counted and said in the
// output); received bytes are queued with Enqueue().
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "devices/bus.h"
#include "devices/irq.h"
#include "devices/output_sink.h"

namespace smolvm {

constexpr uint64_t kCom1Base = 0x3f8;
constexpr uint64_t kCom1Size = 8;
constexpr uint32_t kCom1Gsi = 4;

class Serial : public BusDevice {
 public:
  // `output_fd` may be -1 (output discarded); the caller keeps it open while the device lives.
  // It is made non-blocking.
  Serial(std::shared_ptr<IrqLine> irq, int output_fd);

  // Output bytes dropped so far because the output was full.
  uint64_t dropped_bytes() const;

  void Read(uint64_t offset, uint8_t* data, uint32_t len) override;
  void Write(uint64_t offset, const uint8_t* data, uint32_t len) override;

  // Input for the guest (console input); raises the receive interrupt when enabled.
  void Enqueue(const std::string& bytes);

  // Snapshot: the registers, the pending THRE interrupt and the queued input (versioned,
  // length-checked). Restore into a fresh device; throws VmmError on a malformed blob.
  std::vector<uint8_t> SaveState() const;
  void RestoreState(const std::vector<uint8_t>& state);

 private:
  uint8_t ReadRegister(uint64_t offset);
  void WriteRegister(uint64_t offset, uint8_t value);
  void Emit(uint8_t byte);
  bool InterruptPending() const;
  void UpdateInterrupt(bool was_pending);

  mutable std::mutex mutex_;
  std::shared_ptr<IrqLine> irq_;
  OutputSink output_;
  std::deque<uint8_t> input_;
  uint8_t ier_ = 0, lcr_ = 0, mcr_ = 0, scr_ = 0, dll_ = 0x0c, dlm_ = 0, fcr_ = 0;
  bool thr_empty_interrupt_ = false;  // THRE interrupt pending until IIR is read or THR written
  bool thr_rearmed_ = false;  // a THR write made a new THRE edge
};

}  // namespace smolvm
