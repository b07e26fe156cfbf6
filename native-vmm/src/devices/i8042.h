// Minimal i8042 keyboard controller (ports 0x60 and 0x64): the guest's reboot path writes the
// reset command 0xFE to port 0x64, which ends the VM as a reset exit. Nothing else is emulated
// beyond what keeps a probing driver quiet (no keyboard, empty buffers).
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "devices/bus.h"

namespace smolvm {

constexpr uint64_t kI8042DataPort = 0x60;
constexpr uint64_t kI8042CommandPort = 0x64;

class I8042 : public BusDevice {
 public:
  // Inserted at 0x60 with length 5 (0x60..0x64); offsets 0 and 4 are the two ports.
  explicit I8042(std::function<void()> on_reset);

  void Read(uint64_t offset, uint8_t* data, uint32_t len) override;
  void Write(uint64_t offset, const uint8_t* data, uint32_t len) override;

  // Snapshot: command byte, pending command and output buffer (versioned, length-checked).
  std::vector<uint8_t> SaveState() const;
  void RestoreState(const std::vector<uint8_t>& state);

 private:
  mutable std::mutex mutex_;
  std::function<void()> on_reset_;
  uint8_t command_byte_ = 0;
  uint8_t pending_command_ = 0;  // a command that takes a data byte next (0x60: write cmd byte)
  bool output_full_ = false;
  uint8_t output_ = 0;
};

}  // namespace smolvm
