#include "devices/serial.h"

#include "devices/virtio/state_codec.h"

namespace smolvm {
namespace {

// Register offsets (DLAB selects the divisor latch at 0 and 1).
constexpr uint64_t kData = 0, kIer = 1, kIir = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6,
                   kScr = 7;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kIerReceive = 0x01, kIerTransmit = 0x02;
constexpr uint8_t kIirNone = 0x01, kIirTransmit = 0x02, kIirReceive = 0x04, kIirFifo = 0xc0;
constexpr uint8_t kLsrDataReady = 0x01, kLsrThrEmpty = 0x20, kLsrIdle = 0x40;
constexpr uint8_t kMcrLoop = 0x10;
// Modem status when not in loopback: carrier detect, data set ready, clear to send.
constexpr uint8_t kMsrConnected = 0x80 | 0x20 | 0x10;
constexpr size_t kMaxQueuedInput = 64 * 1024;
constexpr uint32_t kStateMagic = 0x4c524553;  // "SERL"
constexpr uint32_t kStateVersion = 1;

}  // namespace

Serial::Serial(std::shared_ptr<IrqLine> irq, int output_fd)
    : irq_(std::move(irq)), output_(output_fd, "serial console") {}

uint64_t Serial::dropped_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return output_.dropped_bytes();
}

void Serial::Read(uint64_t offset, uint8_t* data, uint32_t len) {
  std::lock_guard<std::mutex> lock(mutex_);
  // Registers are byte wide; a wider access reads the register and zero-fills the rest.
  for (uint32_t i = 0; i < len; ++i) data[i] = 0;
  if (len == 0) return;
  const bool was_pending = InterruptPending();
  data[0] = ReadRegister(offset);
  UpdateInterrupt(was_pending);
}

void Serial::Write(uint64_t offset, const uint8_t* data, uint32_t len) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (len == 0) return;
  const bool was_pending = InterruptPending();
  WriteRegister(offset, data[0]);
  UpdateInterrupt(was_pending);
}

void Serial::Enqueue(const std::string& bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  const bool was_pending = InterruptPending();
  for (char byte : bytes) {
    if (input_.size() >= kMaxQueuedInput) break;  // the guest is not reading: drop the excess
    input_.push_back(static_cast<uint8_t>(byte));
  }
  UpdateInterrupt(was_pending);
}

std::vector<uint8_t> Serial::SaveState() const {
  std::lock_guard<std::mutex> lock(mutex_);
  virtio::StateWriter out;
  out.U32(kStateMagic);
  out.U32(kStateVersion);
  for (uint8_t reg : {ier_, lcr_, mcr_, scr_, dll_, dlm_, fcr_}) out.U8(reg);
  out.U8(thr_empty_interrupt_ ? 1 : 0);
  out.Bytes(std::vector<uint8_t>(input_.begin(), input_.end()));
  return out.Take();
}

void Serial::RestoreState(const std::vector<uint8_t>& state) {
  std::lock_guard<std::mutex> lock(mutex_);
  virtio::StateReader in(state, "serial");
  in.Expect(in.U32(), kStateMagic, "magic");
  in.Expect(in.U32(), kStateVersion, "version");
  uint8_t regs[7];
  for (uint8_t& reg : regs) reg = in.U8();
  const uint8_t thr_empty = in.U8();
  const std::vector<uint8_t> input = in.Bytes();
  in.ExpectEnd();
  if (thr_empty > 1) in.Fail("THRE interrupt flag is " + std::to_string(thr_empty));
  if (input.size() > kMaxQueuedInput) in.Fail("more queued input than the device holds");
  ier_ = regs[0] & 0x0f;
  lcr_ = regs[1];
  mcr_ = regs[2] & 0x1f;
  scr_ = regs[3];
  dll_ = regs[4];
  dlm_ = regs[5];
  fcr_ = regs[6];
  thr_empty_interrupt_ = thr_empty == 1;
  thr_rearmed_ = false;
  input_.assign(input.begin(), input.end());
  // No interrupt here: a pending edge is part of the restored IOAPIC/PIC state.
}

uint8_t Serial::ReadRegister(uint64_t offset) {
  const bool dlab = (lcr_ & kLcrDlab) != 0;
  switch (offset) {
    case kData:
      if (dlab) return dll_;
      if (input_.empty()) return 0;
      {
        const uint8_t byte = input_.front();
        input_.pop_front();
        return byte;
      }
    case kIer:
      return dlab ? dlm_ : ier_;
    case kIir: {
      const uint8_t fifo_bits = (fcr_ & 0x01) ? kIirFifo : 0;
      if ((ier_ & kIerReceive) && !input_.empty()) return fifo_bits | kIirReceive;
      if ((ier_ & kIerTransmit) && thr_empty_interrupt_) {
        thr_empty_interrupt_ = false;  // reading IIR acknowledges the THRE interrupt
        return fifo_bits | kIirTransmit;
      }
      return fifo_bits | kIirNone;
    }
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr:
      return static_cast<uint8_t>(kLsrThrEmpty | kLsrIdle | (input_.empty() ? 0 : kLsrDataReady));
    case kMsr:
      if (mcr_ & kMcrLoop) {
        // Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD (the driver's loopback test).
        return static_cast<uint8_t>(((mcr_ & 0x01) << 5) | ((mcr_ & 0x02) << 3) |
                                    ((mcr_ & 0x04) << 4) | ((mcr_ & 0x08) << 4));
      }
      return kMsrConnected;
    case kScr:
      return scr_;
    default:
      return 0xff;
  }
}

void Serial::WriteRegister(uint64_t offset, uint8_t value) {
  const bool dlab = (lcr_ & kLcrDlab) != 0;
  switch (offset) {
    case kData:
      if (dlab) {
        dll_ = value;
      } else if (mcr_ & kMcrLoop) {
        if (input_.size() < kMaxQueuedInput) input_.push_back(value);
        thr_empty_interrupt_ = true;
        thr_rearmed_ = true;
      } else {
        Emit(value);
        thr_empty_interrupt_ = true;  // the byte left at once: THR is empty again
        thr_rearmed_ = true;
      }
      break;
    case kIer:
      if (dlab) {
        dlm_ = value;
      } else {
        const bool transmit_newly_enabled = !(ier_ & kIerTransmit) && (value & kIerTransmit);
        ier_ = value & 0x0f;
        if (transmit_newly_enabled) thr_empty_interrupt_ = true;  // THR is always empty
      }
      break;
    case kIir:  // FCR on write
      fcr_ = value;
      if (value & 0x02) input_.clear();  // clear receive FIFO
      break;
    case kLcr:
      lcr_ = value;
      break;
    case kMcr:
      mcr_ = value & 0x1f;
      break;
    case kScr:
      scr_ = value;
      break;
    default:  // LSR and MSR are read-only
      break;
  }
}

void Serial::Emit(uint8_t byte) {
  output_.Write(&byte, 1);
}

bool Serial::InterruptPending() const {
  if ((ier_ & kIerReceive) && !input_.empty()) return true;
  if ((ier_ & kIerTransmit) && thr_empty_interrupt_) return true;
  return false;
}

void Serial::UpdateInterrupt(bool was_pending) {
  // The line is edge triggered at the IOAPIC (ISA): pulse on every rising condition. A THRE
  // interrupt re-armed by a THR write is a new edge even if IIR was never read.
  const bool rearmed = thr_rearmed_;
  thr_rearmed_ = false;
  if (irq_ && InterruptPending() && (!was_pending || rearmed)) irq_->Trigger();
}

}  // namespace smolvm
