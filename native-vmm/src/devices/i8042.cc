#include "devices/i8042.h"

#include "devices/virtio/state_codec.h"

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
constexpr uint32_t kStateMagic = 0x4344424b;  // "KBDC"
constexpr uint32_t kStateVersion = 1;

}  // namespace

I8042::I8042(std::function<void()> on_reset) : on_reset_(std::move(on_reset)) {}

std::vector<uint8_t> I8042::SaveState() const {
  std::lock_guard<std::mutex> lock(mutex_);
  virtio::StateWriter out;
  out.U32(kStateMagic);
  out.U32(kStateVersion);
  out.U8(command_byte_);
  out.U8(pending_command_);
  out.U8(output_full_ ? 1 : 0);
  out.U8(output_);
  return out.Take();
}

void I8042::RestoreState(const std::vector<uint8_t>& state) {
  std::lock_guard<std::mutex> lock(mutex_);
  virtio::StateReader in(state, "i8042");
  in.Expect(in.U32(), kStateMagic, "magic");
  in.Expect(in.U32(), kStateVersion, "version");
  const uint8_t command_byte = in.U8();
  const uint8_t pending_command = in.U8();
  const uint8_t output_full = in.U8();
  const uint8_t output = in.U8();
  in.ExpectEnd();
  if (output_full > 1) in.Fail("output-full flag is " + std::to_string(output_full));
  if (pending_command != 0 && pending_command != kCommandWriteCommandByte)
    in.Fail("pending command " + std::to_string(pending_command) + " is not one this device takes");
  command_byte_ = command_byte;
  pending_command_ = pending_command;
  output_full_ = output_full == 1;
  output_ = output;
}

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
