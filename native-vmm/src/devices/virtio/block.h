// virtio-blk (virtio 1.1 §5.2): one request queue, IN/OUT/FLUSH/GET_ID served with
// pread/pwrite straight into guest memory. The serial (GET_ID) names the disk slot: the guest
// finds its disks by /sys/block/vdX/serial.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "devices/virtio/device_base.h"
#include "util/fd.h"

namespace smolvm::virtio {

constexpr unsigned kBlockFeatureSegMax = 2;
constexpr unsigned kBlockFeatureReadOnly = 5;
constexpr unsigned kBlockFeatureFlush = 9;

constexpr uint32_t kBlockRequestIn = 0;
constexpr uint32_t kBlockRequestOut = 1;
constexpr uint32_t kBlockRequestFlush = 4;
constexpr uint32_t kBlockRequestGetId = 8;

constexpr uint8_t kBlockStatusOk = 0;
constexpr uint8_t kBlockStatusIoErr = 1;
constexpr uint8_t kBlockStatusUnsupported = 2;

constexpr uint64_t kSectorSize = 512;
constexpr size_t kBlockSerialBytes = 20;  // VIRTIO_BLK_ID_BYTES
constexpr uint16_t kBlockQueueSize = 256;

class VirtioBlock : public QueueDeviceBase {
 public:
  // Use MakeVirtioBlock.
  VirtioBlock(UniqueFd disk, uint64_t capacity_sectors, bool read_only, std::string serial);

  uint32_t device_id() const override { return kDeviceIdBlock; }
  const char* name() const override { return "virtio-blk"; }
  void ReadConfig(uint64_t offset, uint8_t* data, uint32_t len) override;
  void WriteConfig(uint64_t offset, const uint8_t* data, uint32_t len) override;

  // Puts another file behind this slot (snapshot restore with new files) and tells the
  // driver its capacity may have changed. Throws VmmError for an unusable fd (the old one
  // stays in place).
  void SwapBackingFile(UniqueFd disk);
  // The same file was rewritten in place (a pod's slot given to a new container): re-reads
  // its size through the fd the device holds and raises the config-change interrupt, so the
  // driver re-reads the capacity. Returns the new capacity in sectors. Throws VmmError when
  // the file cannot be sized (the old capacity stays).
  uint64_t RefreshCapacity();
  uint64_t capacity_sectors() const;
  const std::string& serial() const { return serial_; }
  bool read_only() const { return read_only_; }

 private:
  void ProcessQueueLocked(uint32_t index) override;
  void OnActivateLocked() override;
  void SaveDeviceStateLocked(StateWriter& out) const override;
  void RestoreDeviceStateLocked(StateReader& in) override;
  uint32_t HandleRequestLocked(const DescriptorChain& chain);
  uint8_t TransferLocked(bool write, uint64_t sector, SegmentCursor& data, uint64_t len);

  UniqueFd disk_;
  uint64_t capacity_sectors_;
  const bool read_only_;
  const std::string serial_;
};

// Throws VmmError naming the problem: invalid fd, serial longer than 20 bytes, unsizeable
// file.
std::shared_ptr<VirtioBlock> MakeVirtioBlock(UniqueFd disk, bool read_only, std::string serial);

}  // namespace smolvm::virtio
