// A sink for I/O ports that Linux pokes without needing a device behind them (0x80 POST
// delays, 0xed, the DMA page registers...): writes are dropped, reads return zero.
#pragma once

#include <cstring>

#include "devices/bus.h"

namespace smolvm {

class PortSink : public BusDevice {
 public:
  void Read(uint64_t, uint8_t* data, uint32_t len) override { std::memset(data, 0, len); }
  void Write(uint64_t, const uint8_t*, uint32_t) override {}
};

}  // namespace smolvm
