// The virtio-mmio transport: registers, feature negotiation, queue setup checks, interrupts,
// reset, save/restore.
#include <cstring>

#include "devices/virtio/block.h"
#include "devices/virtio/rng.h"
#include "harness.h"
#include "test_framework.h"

using namespace smolvm::virtio;
using namespace vtest;

TEST(mmio_identity_registers) {
  Harness h(MakeVirtioRng());
  CHECK_EQ(h.Read32(mmio::kMagicValue), 0x74726976u);
  CHECK_EQ(h.Read32(mmio::kVersion), 2u);
  CHECK_EQ(h.Read32(mmio::kDeviceId), kDeviceIdRng);
  CHECK_EQ(h.Read32(mmio::kVendorId), mmio::kVendor);
  h.Write32(mmio::kDeviceFeaturesSel, 1);
  CHECK_EQ(h.Read32(mmio::kDeviceFeatures) & 1u, 1u);  // VIRTIO_F_VERSION_1 is bit 32
  h.Write32(mmio::kDeviceFeaturesSel, 7);
  CHECK_EQ(h.Read32(mmio::kDeviceFeatures), 0u);
  h.Write32(mmio::kQueueSel, 0);
  CHECK_EQ(h.Read32(mmio::kQueueNumMax), uint32_t{kRngQueueSize});
  h.Write32(mmio::kQueueSel, 1);
  CHECK_EQ(h.Read32(mmio::kQueueNumMax), 0u);  // no such queue
  // Odd-sized register accesses are ignored, reads give zeros.
  uint8_t byte = 0xff;
  h.transport->Read(mmio::kMagicValue, &byte, 1);
  CHECK_EQ(byte, 0);
  CHECK_EQ(MmioTransport::KernelCmdlineArg(0xd0000000, 5),
           std::string("virtio_mmio.device=4K@0xd0000000:5"));
}

TEST(mmio_init_activates_device) {
  Harness h(MakeVirtioRng());
  uint32_t status = h.Init();
  CHECK_EQ(status, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  CHECK(h.device->active());
  h.Write32(mmio::kQueueSel, 0);
  CHECK_EQ(h.Read32(mmio::kQueueReady), 1u);
}

TEST(mmio_refuses_driver_without_version_1) {
  Harness h(MakeVirtioRng());
  uint32_t status = h.Init(0, FeatureBit(kFeatureVersion1));
  CHECK_EQ(status & kStatusFeaturesOk, 0u);
  CHECK(!h.device->active());
}

TEST(mmio_refuses_features_not_offered) {
  Harness h(MakeVirtioRng());
  h.Write32(mmio::kStatus, kStatusAcknowledge | kStatusDriver);
  h.Write32(mmio::kDriverFeaturesSel, 0);
  h.Write32(mmio::kDriverFeatures, 1u << kFeatureIndirectDesc);
  h.Write32(mmio::kDriverFeaturesSel, 1);
  h.Write32(mmio::kDriverFeatures, 1);
  h.Write32(mmio::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  CHECK_EQ(h.Read32(mmio::kStatus) & kStatusFeaturesOk, 0u);
  // DRIVER_OK without FEATURES_OK does not activate.
  h.Write32(mmio::kStatus, kStatusAcknowledge | kStatusDriver | kStatusDriverOk);
  CHECK(!h.device->active());
}

TEST(mmio_reset_returns_to_initial_state) {
  Harness h(MakeVirtioRng());
  h.Init();
  REQUIRE(h.device->active());
  h.Write32(mmio::kStatus, 0);
  CHECK_EQ(h.Read32(mmio::kStatus), 0u);
  CHECK(!h.device->active());
  h.Write32(mmio::kQueueSel, 0);
  CHECK_EQ(h.Read32(mmio::kQueueReady), 0u);
  // And it works again after a fresh init.
  CHECK_EQ(h.Init() & kStatusDriverOk, kStatusDriverOk);
  CHECK(h.device->active());
}

TEST(mmio_queue_layout_frozen_after_driver_ok) {
  Harness h(MakeVirtioRng());
  h.Init();
  h.Write32(mmio::kQueueSel, 0);
  h.Write32(mmio::kQueueDescLow, 0x5000);  // ignored
  GuestAddress buf = h.Alloc(64);
  h.queues[0]->Add({{buf, 64, true}});
  h.Notify(0);
  auto used = h.queues[0]->PopUsed();
  REQUIRE(used.has_value());
  CHECK_EQ(used->len, 64u);
}

static void CheckBadQueueSetup(uint16_t size, GuestAddress desc, GuestAddress avail,
                               GuestAddress used, uint64_t memory_size = 16ULL << 20) {
  Harness h(MakeVirtioRng(), memory_size);
  h.Write32(mmio::kStatus, kStatusAcknowledge | kStatusDriver);
  h.Write32(mmio::kDriverFeaturesSel, 1);
  h.Write32(mmio::kDriverFeatures, 1);
  h.Write32(mmio::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  h.SetupQueue(0, size, desc, avail, used);
  h.Write32(mmio::kStatus,
            kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  CHECK(h.NeedsReset());
  CHECK(!h.device->active());
  CHECK(h.Read32(mmio::kInterruptStatus) & kInterruptConfigChange);
  CHECK(!h.FailureReason().empty());
}

TEST(mmio_bad_queue_setups_fail_the_device) {
  CheckBadQueueSetup(100, 0x10000, 0x11000, 0x12000);             // not a power of 2
  CheckBadQueueSetup(512, 0x10000, 0x12000, 0x13000);             // above the maximum
  CheckBadQueueSetup(0, 0x10000, 0x11000, 0x12000);               // zero
  CheckBadQueueSetup(256, 0x10008, 0x11000, 0x12000);             // misaligned table
  CheckBadQueueSetup(256, 0xfff800, 0x11000, 0x12000);            // table runs past RAM
  CheckBadQueueSetup(256, 0x10000, 0x11000, 0xffffffffffffff00);  // used ring wraps
  CheckBadQueueSetup(256, 0x10000, 0x11000, 0x40000000);          // used ring beyond RAM
  // A ring inside the 32-bit MMIO hole of a guest with RAM above 4 GiB.
  CheckBadQueueSetup(256, 0x10000, 0xd0000000, 0x12000, (3ULL << 30) + (16ULL << 20));
}

TEST(mmio_interrupt_status_and_ack) {
  Harness h(MakeVirtioRng());
  h.Init();
  GuestAddress buf = h.Alloc(16);
  h.queues[0]->Add({{buf, 16, true}});
  int before = h.irq->count;
  h.Notify(0);
  CHECK(h.irq->count > before);
  CHECK_EQ(h.Read32(mmio::kInterruptStatus), kInterruptUsedBuffer);
  h.Write32(mmio::kInterruptAck, kInterruptUsedBuffer);
  CHECK_EQ(h.Read32(mmio::kInterruptStatus), 0u);
  // NO_INTERRUPT suppresses the interrupt, not the work.
  h.queues[0]->SetNoInterrupt(true);
  h.queues[0]->Add({{buf, 16, true}});
  before = h.irq->count;
  h.Notify(0);
  CHECK_EQ(h.irq->count.load(), before);
  CHECK(h.queues[0]->PopUsed().has_value());
  CHECK(h.queues[0]->PopUsed().has_value());
}

TEST(mmio_notify_before_activation_and_for_missing_queue_is_harmless) {
  Harness h(MakeVirtioRng());
  h.Notify(0);
  h.Init();
  h.Notify(5);
  h.Notify(0xffffffff);
  CHECK(!h.NeedsReset());
}

TEST(mmio_save_restore_keeps_queue_positions) {
  Harness h(MakeVirtioRng());
  h.Init();
  GuestAddress buf = h.Alloc(32);
  for (int i = 0; i < 3; ++i) {
    h.queues[0]->Add({{buf, 32, true}});
    h.Notify(0);
    REQUIRE(h.queues[0]->PopUsed().has_value());
  }
  std::vector<uint8_t> state = h.transport->SaveState();

  // A new device and transport over the same guest memory, as after a restore.
  auto device = MakeVirtioRng();
  auto irq = std::make_shared<CountingIrq>();
  MmioTransport restored(device, *h.memory, irq);
  restored.RestoreState(state);
  CHECK(device->active());
  CHECK_EQ(restored.status(), h.transport->status());
  // The guest carries on where it was: the 4th request is answered in used slot 3.
  h.queues[0]->Add({{buf, 32, true}});
  restored.NotifyQueue(0);
  auto used = h.queues[0]->PopUsed();
  REQUIRE(used.has_value());
  CHECK_EQ(used->len, 32u);

  // Foreign or truncated blobs are refused with an error.
  auto other = std::make_shared<MmioTransport>(MakeVirtioRng(), *h.memory, irq);
  std::vector<uint8_t> truncated(state.begin(), state.begin() + 20);
  bool threw = false;
  try {
    other->RestoreState(truncated);
  } catch (const smolvm::VmmError& e) {
    threw = std::string(e.what()).find("truncated") != std::string::npos;
  }
  CHECK(threw);
}
