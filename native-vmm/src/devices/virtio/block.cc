#include "devices/virtio/block.h"

#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace smolvm::virtio {
namespace {

struct RequestHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
static_assert(sizeof(RequestHeader) == 16);

// Config space offsets (struct virtio_blk_config).
constexpr uint64_t kConfigCapacity = 0;
constexpr uint64_t kConfigSegMax = 12;
constexpr uint64_t kConfigSize = 24;

uint64_t CapacitySectors(int fd) {
  if (fd < 0) throw VmmError("virtio-blk: no backing file descriptor");
  struct stat st;
  if (fstat(fd, &st) != 0) throw SysError("virtio-blk: fstat of backing file");
  uint64_t bytes = 0;
  if (S_ISBLK(st.st_mode)) {
    if (ioctl(fd, BLKGETSIZE64, &bytes) != 0) throw SysError("virtio-blk: BLKGETSIZE64");
  } else if (S_ISREG(st.st_mode)) {
    bytes = static_cast<uint64_t>(st.st_size);
  } else {
    throw VmmError("virtio-blk: backing file is neither a regular file nor a block device");
  }
  // A trailing partial sector is not addressable.
  return bytes / kSectorSize;
}

}  // namespace

std::shared_ptr<VirtioBlock> MakeVirtioBlock(UniqueFd disk, bool read_only, std::string serial) {
  if (serial.size() > kBlockSerialBytes)
    throw VmmError("virtio-blk: serial '" + serial + "' is longer than 20 bytes");
  const uint64_t capacity = CapacitySectors(disk.get());
  return std::make_shared<VirtioBlock>(std::move(disk), capacity, read_only, std::move(serial));
}

VirtioBlock::VirtioBlock(UniqueFd disk, uint64_t capacity_sectors, bool read_only,
                         std::string serial)
    : QueueDeviceBase({kBlockQueueSize},
                      FeatureBit(kBlockFeatureSegMax) | FeatureBit(kBlockFeatureFlush) |
                          (read_only ? FeatureBit(kBlockFeatureReadOnly) : 0)),
      disk_(std::move(disk)),
      capacity_sectors_(capacity_sectors),
      read_only_(read_only),
      serial_(std::move(serial)) {}

uint64_t VirtioBlock::capacity_sectors() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return capacity_sectors_;
}

void VirtioBlock::ReadConfig(uint64_t offset, uint8_t* data, uint32_t len) {
  uint8_t config[kConfigSize] = {};
  {
    std::lock_guard<std::mutex> lock(mutex_);
    memcpy(config + kConfigCapacity, &capacity_sectors_, 8);
  }
  // A request uses a header and a status descriptor besides its data segments.
  const uint32_t seg_max = kBlockQueueSize - 2;
  memcpy(config + kConfigSegMax, &seg_max, 4);
  memset(data, 0, len);
  if (offset >= kConfigSize) return;
  memcpy(data, config + offset, std::min<uint64_t>(len, kConfigSize - offset));
}

void VirtioBlock::WriteConfig(uint64_t offset, const uint8_t*, uint32_t len) {
  Log("virtio-blk: ignored " + std::to_string(len) + "-byte config write at " +
      std::to_string(offset) + " (read-only config)");
}

void VirtioBlock::SwapBackingFile(UniqueFd disk) {
  const uint64_t capacity = CapacitySectors(disk.get());
  std::shared_ptr<Interrupt> interrupt;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    disk_ = std::move(disk);
    capacity_sectors_ = capacity;
    interrupt = interrupt_;
  }
  if (interrupt) interrupt->SignalConfigChange();
}

uint64_t VirtioBlock::RefreshCapacity() {
  std::shared_ptr<Interrupt> interrupt;
  uint64_t capacity = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    capacity = CapacitySectors(disk_.get());
    capacity_sectors_ = capacity;
    interrupt = interrupt_;
  }
  // Always raised, even for an unchanged size: the driver re-reading is harmless, and the
  // guest drops its cached blocks before mounting anyway.
  if (interrupt) interrupt->SignalConfigChange();
  return capacity;
}

void VirtioBlock::OnActivateLocked() {
  if (!queues_[0].ready()) throw VmmError("virtio-blk: request queue 0 is not ready");
}

void VirtioBlock::ProcessQueueLocked(uint32_t index) {
  if (index != 0) return;
  Queue& queue = queues_[0];
  bool used = false;
  while (std::optional<DescriptorChain> chain = queue.Pop()) {
    const uint32_t written = HandleRequestLocked(*chain);
    queue.AddUsed(chain->head, written);
    used = true;
  }
  if (used) InterruptIfWanted(queue);
}

uint32_t VirtioBlock::HandleRequestLocked(const DescriptorChain& chain) {
  if (chain.readable_len < sizeof(RequestHeader))
    throw GuestError("request header is " + std::to_string(chain.readable_len) +
                     " bytes, need 16");
  if (chain.writable_len < 1) throw GuestError("request has no status byte");
  SegmentCursor in(*memory_, chain.readable);
  SegmentCursor out(*memory_, chain.writable);
  RequestHeader header;
  in.Read(&header, sizeof header);
  // The last device-writable byte is the status; everything writable before it is data.
  const uint64_t writable_data = chain.writable_len - 1;

  uint8_t status = kBlockStatusOk;
  switch (header.type) {
    case kBlockRequestIn:
      status = TransferLocked(false, header.sector, out, writable_data);
      break;
    case kBlockRequestOut:
      if (read_only_) {
        status = kBlockStatusIoErr;
      } else {
        status = TransferLocked(true, header.sector, in, in.remaining());
      }
      break;
    case kBlockRequestFlush:
      if (!read_only_ && fdatasync(disk_.get()) != 0) {
        Log(std::string("virtio-blk: fdatasync: ") + strerror(errno));
        status = kBlockStatusIoErr;
      }
      break;
    case kBlockRequestGetId: {
      char id[kBlockSerialBytes] = {};  // NUL-padded, no terminator when 20 bytes long
      memcpy(id, serial_.data(), serial_.size());
      out.Write(id, std::min<uint64_t>(writable_data, kBlockSerialBytes));
      break;
    }
    default:
      status = kBlockStatusUnsupported;
      break;
  }
  const uint64_t data_written = out.consumed();
  out.Advance(writable_data - data_written);
  out.Write(&status, 1);
  return static_cast<uint32_t>(std::min<uint64_t>(data_written + 1, UINT32_MAX));
}

// Moves `len` bytes between the disk at `sector` and the guest buffers under `data`.
uint8_t VirtioBlock::TransferLocked(bool write, uint64_t sector, SegmentCursor& data,
                                    uint64_t len) {
  const char* what = write ? "write" : "read";
  if (len % kSectorSize != 0) {
    Log(std::string("virtio-blk: ") + what + " of " + std::to_string(len) +
        " bytes is not a whole number of sectors");
    return kBlockStatusIoErr;
  }
  const uint64_t sectors = len / kSectorSize;
  if (sector > capacity_sectors_ || sectors > capacity_sectors_ - sector) {
    Log(std::string("virtio-blk: ") + what + " of " + std::to_string(sectors) +
        " sectors at sector " + std::to_string(sector) + " is past the end (" +
        std::to_string(capacity_sectors_) + " sectors)");
    return kBlockStatusIoErr;
  }
  uint64_t file_offset = sector * kSectorSize;
  for (const iovec& span : data.PeekSpans(len)) {
    auto* host = static_cast<uint8_t*>(span.iov_base);
    size_t done = 0;
    while (done < span.iov_len) {
      ssize_t n = write ? pwrite(disk_.get(), host + done, span.iov_len - done,
                                 static_cast<off_t>(file_offset))
                        : pread(disk_.get(), host + done, span.iov_len - done,
                                static_cast<off_t>(file_offset));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        Log(std::string("virtio-blk: ") + what + " at byte " + std::to_string(file_offset) +
            ": " + (n == 0 ? "unexpected end of file" : strerror(errno)));
        data.Advance(done);
        return kBlockStatusIoErr;
      }
      done += static_cast<size_t>(n);
      file_offset += static_cast<uint64_t>(n);
    }
    data.Advance(span.iov_len);
  }
  return kBlockStatusOk;
}

void VirtioBlock::SaveDeviceStateLocked(StateWriter& out) const {
  out.U8(read_only_ ? 1 : 0);
  out.Bytes(std::vector<uint8_t>(serial_.begin(), serial_.end()));
}

void VirtioBlock::RestoreDeviceStateLocked(StateReader& in) {
  const bool was_read_only = in.U8() != 0;
  const std::vector<uint8_t> serial = in.Bytes();
  if (was_read_only != read_only_)
    in.Fail(std::string("disk was ") + (was_read_only ? "read-only" : "writable") +
            ", the restored one is not");
  if (std::string(serial.begin(), serial.end()) != serial_)
    in.Fail("disk serial '" + std::string(serial.begin(), serial.end()) +
            "' does not match this slot's '" + serial_ + "'");
}

}  // namespace smolvm::virtio
