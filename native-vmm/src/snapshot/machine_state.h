// A whole machine's snapshot state and how it maps onto the state file's sections:
//   CONF  the machine layout (memory, vCPUs, kernel command line, virtio devices in order)
//   VMST  irqchip, PIT, kvmclock                  VCPU  one per vCPU, in index order
//   SERL  the COM1 UART                           KBDC  the i8042
//   VIRT  one per virtio device (its transport's SaveState, which holds the device's own)
// Every section is required exactly as the layout says; unknown, missing, repeated or
// out-of-order sections are errors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "snapshot/snapshot_file.h"
#include "snapshot/vcpu_state.h"
#include "snapshot/vm_state.h"

namespace smolvm::snapshot {

enum class DeviceKind : uint8_t { kBlock = 1, kVsock = 2, kRng = 3 };
const char* DeviceKindName(DeviceKind kind);

struct DeviceLayout {
  DeviceKind kind = DeviceKind::kRng;
  uint32_t gsi = 0;
  uint64_t mmio_base = 0;
  bool read_only = false;  // block
  std::string serial;      // block
  uint64_t capacity_sectors = 0;  // block: the size the guest's driver last read
  uint64_t guest_cid = 0;  // vsock
};

struct MachineLayout {
  uint64_t memory_bytes = 0;
  uint32_t vcpu_count = 0;
  std::string cmdline;  // the final one, with the virtio_mmio.device= declarations
  std::vector<DeviceLayout> devices;  // in MMIO/GSI order: disks, vsock, rng
};

struct MachineSnapshot {
  HostIdentity identity;
  SnapshotId snapshot_id{};
  MachineLayout layout;
  VmState vm;
  std::vector<VcpuState> vcpus;
  std::vector<uint8_t> serial;
  std::vector<uint8_t> i8042;
  std::vector<std::vector<uint8_t>> virtio;  // one per layout device
};

std::vector<uint8_t> EncodeMachineSnapshot(const MachineSnapshot& snapshot);
// Throws VmmError naming the section and the problem.
MachineSnapshot DecodeMachineSnapshot(const std::vector<uint8_t>& bytes);

}  // namespace smolvm::snapshot
