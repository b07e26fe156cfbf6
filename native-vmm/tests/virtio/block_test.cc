#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "devices/virtio/block.h"
#include "harness.h"
#include "test_framework.h"

using namespace smolvm::virtio;
using namespace vtest;
using smolvm::UniqueFd;

namespace {

struct BlockHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};

UniqueFd MakeDisk(uint64_t bytes, uint8_t fill = 0) {
  UniqueFd fd(memfd_create("test-disk", MFD_CLOEXEC));
  std::vector<uint8_t> data(bytes, fill);
  for (uint64_t i = 0; i < bytes; ++i) data[i] = static_cast<uint8_t>(fill ? fill : i * 7 + i / 512);
  if (pwrite(fd.get(), data.data(), data.size(), 0) != static_cast<ssize_t>(bytes)) abort();
  return fd;
}

struct BlockRig {
  explicit BlockRig(uint64_t disk_bytes = 64 * 512, bool read_only = false,
                    std::string serial = "smolvm-slot-rootfs")
      : disk_fd(dup(MakeDiskKeep(disk_bytes))),
        device(MakeVirtioBlock(UniqueFd(dup(disk_fd)), read_only, serial)),
        h(device) {}
  int MakeDiskKeep(uint64_t bytes) {
    keep = MakeDisk(bytes);
    return keep.get();
  }
  // Issues one request: header, then data (readable for OUT, writable for IN), then status.
  // Returns {status, used len}.
  std::pair<uint8_t, uint32_t> Request(uint32_t type, uint64_t sector, GuestAddress data,
                                       uint32_t data_len, bool data_writable) {
    GuestAddress header = h.Alloc(16), status = h.Alloc(1);
    BlockHeader hdr{type, 0, sector};
    h.Fill(header, &hdr, sizeof hdr);
    uint8_t poison = 0xee;
    h.Fill(status, &poison, 1);
    std::vector<GuestQueue::Buf> bufs{{header, 16, false}};
    if (data_len) bufs.push_back({data, data_len, data_writable});
    bufs.push_back({status, 1, true});
    h.queues[0]->Add(bufs);
    h.Notify(0);
    auto used = h.queues[0]->PopUsed();
    if (!used) return {0xff, 0};
    return {h.Peek(status, 1)[0], used->len};
  }
  UniqueFd keep;
  int disk_fd;
  std::shared_ptr<VirtioBlock> device;
  Harness h;
};

}  // namespace

TEST(blk_config_and_features) {
  BlockRig rig(100 * 512 + 300);  // a trailing partial sector is not addressable
  CHECK_EQ(rig.h.ReadConfig64(0), 100u);
  CHECK_EQ(rig.device->features() & FeatureBit(kBlockFeatureReadOnly), 0u);
  CHECK(rig.device->features() & FeatureBit(kBlockFeatureFlush));
  BlockRig ro(512, true);
  CHECK(ro.device->features() & FeatureBit(kBlockFeatureReadOnly));
}

TEST(blk_get_id_returns_serial) {
  BlockRig rig;
  REQUIRE(rig.h.Init() & kStatusDriverOk);
  GuestAddress data = rig.h.Alloc(20);
  auto [status, len] = rig.Request(kBlockRequestGetId, 0, data, 20, true);
  CHECK_EQ(status, kBlockStatusOk);
  CHECK_EQ(len, 21u);
  std::vector<uint8_t> id = rig.h.Peek(data, 20);
  CHECK_EQ(std::string(reinterpret_cast<char*>(id.data()), 18), std::string("smolvm-slot-rootfs"));
  CHECK_EQ(id[18], 0);
  CHECK_EQ(id[19], 0);
}

TEST(blk_write_then_read_multi_segment) {
  BlockRig rig;
  REQUIRE(rig.h.Init() & kStatusDriverOk);
  // Write 3 sectors at sector 5 from two segments (1000 + 536 bytes).
  GuestAddress out = rig.h.Alloc(1536);
  std::vector<uint8_t> pattern(1536);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<uint8_t>(i * 13 + 1);
  rig.h.Fill(out, pattern.data(), pattern.size());
  GuestAddress header = rig.h.Alloc(16), status = rig.h.Alloc(1);
  BlockHeader hdr{kBlockRequestOut, 0, 5};
  rig.h.Fill(header, &hdr, 16);
  rig.h.queues[0]->Add({{header, 16, false}, {out, 1000, false}, {out + 1000, 536, false},
                        {status, 1, true}});
  rig.h.Notify(0);
  auto used = rig.h.queues[0]->PopUsed();
  REQUIRE(used);
  CHECK_EQ(used->len, 1u);
  CHECK_EQ(rig.h.Peek(status, 1)[0], kBlockStatusOk);
  std::vector<uint8_t> on_disk(1536);
  REQUIRE(pread(rig.disk_fd, on_disk.data(), 1536, 5 * 512) == 1536);
  CHECK(on_disk == pattern);

  // Read it back into three segments; the status shares the last descriptor with data.
  GuestAddress in = rig.h.Alloc(1537);
  hdr = {kBlockRequestIn, 0, 5};
  rig.h.Fill(header, &hdr, 16);
  rig.h.queues[0]->Add({{header, 16, false}, {in, 512, true}, {in + 512, 700, true},
                        {in + 1212, 325, true}});
  rig.h.Notify(0);
  used = rig.h.queues[0]->PopUsed();
  REQUIRE(used);
  CHECK_EQ(used->len, 1537u);
  std::vector<uint8_t> back = rig.h.Peek(in, 1537);
  CHECK_EQ(back[1536], kBlockStatusOk);
  back.resize(1536);
  CHECK(back == pattern);
}

TEST(blk_flush) {
  BlockRig rig;
  rig.h.Init();
  auto [status, len] = rig.Request(kBlockRequestFlush, 0, 0, 0, false);
  CHECK_EQ(status, kBlockStatusOk);
  CHECK_EQ(len, 1u);
}

TEST(blk_write_to_read_only_disk_fails) {
  BlockRig rig(8 * 512, true);
  rig.h.Init();
  GuestAddress data = rig.h.Alloc(512);
  std::vector<uint8_t> junk(512, 0x5a);
  rig.h.Fill(data, junk.data(), 512);
  auto [status, len] = rig.Request(kBlockRequestOut, 0, data, 512, false);
  CHECK_EQ(status, kBlockStatusIoErr);
  std::vector<uint8_t> on_disk(512);
  REQUIRE(pread(rig.disk_fd, on_disk.data(), 512, 0) == 512);
  CHECK(on_disk != junk);
  CHECK(!rig.h.NeedsReset());  // an I/O error for the request, not a broken device
}

TEST(blk_sector_bounds) {
  BlockRig rig(16 * 512);
  rig.h.Init();
  GuestAddress data = rig.h.Alloc(1024);
  CHECK_EQ(rig.Request(kBlockRequestIn, 15, data, 512, true).first, kBlockStatusOk);
  CHECK_EQ(rig.Request(kBlockRequestIn, 16, data, 512, true).first, kBlockStatusIoErr);
  CHECK_EQ(rig.Request(kBlockRequestIn, 15, data, 1024, true).first, kBlockStatusIoErr);
  CHECK_EQ(rig.Request(kBlockRequestOut, 16, data, 512, false).first, kBlockStatusIoErr);
  // sector * 512 would overflow 64 bits
  CHECK_EQ(rig.Request(kBlockRequestIn, 0xffffffffffffffffULL, data, 512, true).first,
           kBlockStatusIoErr);
  CHECK_EQ(rig.Request(kBlockRequestIn, 0x0080000000000000ULL, data, 512, true).first,
           kBlockStatusIoErr);
  // Not a whole number of sectors.
  CHECK_EQ(rig.Request(kBlockRequestIn, 0, data, 100, true).first, kBlockStatusIoErr);
  CHECK_EQ(rig.Request(99, 0, data, 512, true).first, kBlockStatusUnsupported);
  CHECK(!rig.h.NeedsReset());
}

TEST(blk_request_without_status_byte_fails_device) {
  BlockRig rig;
  rig.h.Init();
  GuestAddress header = rig.h.Alloc(16);
  BlockHeader hdr{kBlockRequestIn, 0, 0};
  rig.h.Fill(header, &hdr, 16);
  rig.h.queues[0]->Add({{header, 16, false}});
  rig.h.Notify(0);
  CHECK(rig.h.NeedsReset());
  CHECK(rig.h.FailureReason().find("status") != std::string::npos);
}

TEST(blk_short_header_fails_device) {
  BlockRig rig;
  rig.h.Init();
  GuestAddress header = rig.h.Alloc(16), status = rig.h.Alloc(1);
  rig.h.queues[0]->Add({{header, 8, false}, {status, 1, true}});
  rig.h.Notify(0);
  CHECK(rig.h.NeedsReset());
}

TEST(blk_swap_backing_file_raises_config_change) {
  BlockRig rig(16 * 512);
  rig.h.Init();
  const uint32_t generation = rig.h.Read32(mmio::kConfigGeneration);
  UniqueFd bigger = MakeDisk(32 * 512, 0x42);
  rig.device->SwapBackingFile(std::move(bigger));
  CHECK_EQ(rig.h.ReadConfig64(0), 32u);
  CHECK(rig.h.Read32(mmio::kInterruptStatus) & kInterruptConfigChange);
  CHECK(rig.h.Read32(mmio::kConfigGeneration) != generation);
  GuestAddress data = rig.h.Alloc(512);
  auto r = rig.Request(kBlockRequestIn, 20, data, 512, true);
  CHECK_EQ(r.first, kBlockStatusOk);
  CHECK_EQ(r.second, 513u);
  CHECK_EQ(rig.h.Peek(data, 1)[0], 0x42);
  // A bad fd is refused and the old file stays.
  bool threw = false;
  try {
    rig.device->SwapBackingFile(UniqueFd());
  } catch (const smolvm::VmmError&) {
    threw = true;
  }
  CHECK(threw);
  CHECK_EQ(rig.h.ReadConfig64(0), 32u);
}

TEST(blk_refresh_capacity_rereads_the_same_file) {
  // A pod's slot: the host rewrites the file the device already holds, then refresh_disk.
  BlockRig rig(0);
  rig.h.Init();
  CHECK_EQ(rig.h.ReadConfig64(0), 0u);
  const uint32_t generation = rig.h.Read32(mmio::kConfigGeneration);
  std::vector<uint8_t> contents(40 * 512 + 100, 0x5a);  // a trailing partial sector
  CHECK(pwrite(rig.disk_fd, contents.data(), contents.size(), 0) == static_cast<ssize_t>(contents.size()));
  CHECK_EQ(rig.device->RefreshCapacity(), 40u);
  CHECK_EQ(rig.h.ReadConfig64(0), 40u);
  CHECK(rig.h.Read32(mmio::kInterruptStatus) & kInterruptConfigChange);
  CHECK(rig.h.Read32(mmio::kConfigGeneration) != generation);
  GuestAddress data = rig.h.Alloc(512);
  auto r = rig.Request(kBlockRequestIn, 39, data, 512, true);
  CHECK_EQ(r.first, kBlockStatusOk);
  CHECK_EQ(rig.h.Peek(data, 1)[0], 0x5a);
  // Shrunk again: what lay past the new end is out of bounds.
  CHECK(ftruncate(rig.disk_fd, 8 * 512) == 0);
  CHECK_EQ(rig.device->RefreshCapacity(), 8u);
  CHECK_EQ(rig.h.ReadConfig64(0), 8u);
  r = rig.Request(kBlockRequestIn, 20, data, 512, true);
  CHECK_EQ(r.first, kBlockStatusIoErr);
}

TEST(blk_factory_rejects_bad_input) {
  auto throws = [](auto&& fn) {
    try {
      fn();
    } catch (const smolvm::VmmError&) {
      return true;
    }
    return false;
  };
  CHECK(throws([] { MakeVirtioBlock(UniqueFd(), false, "x"); }));
  CHECK(throws([] { MakeVirtioBlock(MakeDisk(512), false, std::string(21, 'a')); }));
  CHECK(!throws([] { MakeVirtioBlock(MakeDisk(512), false, std::string(20, 'a')); }));
}

TEST(blk_save_restore_checks_slot) {
  BlockRig rig;
  rig.h.Init();
  std::vector<uint8_t> state = rig.h.transport->SaveState();
  auto same = MakeVirtioBlock(MakeDisk(64 * 512), false, "smolvm-slot-rootfs");
  MmioTransport ok(same, *rig.h.memory, rig.h.irq);
  ok.RestoreState(state);
  CHECK(same->active());
  auto other = MakeVirtioBlock(MakeDisk(64 * 512), false, "smolvm-slot-scratch");
  MmioTransport bad(other, *rig.h.memory, rig.h.irq);
  bool threw = false;
  try {
    bad.RestoreState(state);
  } catch (const smolvm::VmmError& e) {
    threw = std::string(e.what()).find("serial") != std::string::npos;
  }
  CHECK(threw);
}
