#include "devices/i8042.h"

namespace smolvm {
namespace {

constexpr uint8_t kCommandReadCommandByte = 0x20;
constexpr uint8_t kCommandWriteCommandByte = 0x60;
constexpr uint8_t kCommandSelfTest = 0xaa;
constexpr uint8_t kCommandPulseReset = 0xfe;
constexpr uint8_t kSelfTestPassed = 0x55;
constexpr uint8_t kStatusOutputFull = 0x01;
constexpr uint8_t kStatusSystemFlag = 0x04;
// Bit 4 set: the keyboard is not inhibited (clear, Linux warns "Keylock active").
constexpr uint8_t kStatusNotInhibited = 0x10;

}  // namespace

I8042::I8042(std::function<void()> on_reset) : on_reset_(std::move(on_reset)) {}

void I8042::Read(uint64_t offset, uint8_t* data, uint32_t len) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (uint32_t i = 0; i < len; ++i) data[i] = 0;
  if (len == 0) return;
  if (offset == 0) {
    data[0] = output_;
    output_full_ = false;
  } else if (offset == 4) {
    data[0] = static_cast<uint8_t>(kStatusSystemFlag | kStatusNotInhibited | (output_full_ ? kStatusOutputFull : 0));
  }
}

void I8042::Write(uint64_t offset, const uint8_t* data, uint32_t len) {
  std::function<void()> reset;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (len == 0) return;
    const uint8_t value = data[0];
    if (offset == 4) {
      switch (value) {
        case kCommandPulseReset:
          reset = on_reset_;
          break;
        case kCommandReadCommandByte:
          output_ = command_byte_;
          output_full_ = true;
          break;
        case kCommandWriteCommandByte:
          pending_command_ = value;
          break;
        case kCommandSelfTest:
          output_ = kSelfTestPassed;
          output_full_ = true;
          break;
        default:
          break;
      }
    } else if (offset == 0 && pending_command_ == kCommandWriteCommandByte) {
      command_byte_ = value;
      pending_command_ = 0;
    }
  }
  if (reset) reset();  // outside the lock: the callback stops the VM
}

}  // namespace smolvm
