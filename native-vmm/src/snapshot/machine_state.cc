#include "snapshot/machine_state.h"

#include "util/error.h"

namespace smolvm::snapshot {
namespace {

constexpr uint32_t kConfTag = SectionTag("CONF");
constexpr uint32_t kVmTag = SectionTag("VMST");
constexpr uint32_t kVcpuTag = SectionTag("VCPU");
constexpr uint32_t kSerialTag = SectionTag("SERL");
constexpr uint32_t kI8042Tag = SectionTag("KBDC");
constexpr uint32_t kVirtioTag = SectionTag("VIRT");
constexpr uint32_t kConfVersion = 1;
constexpr uint32_t kBlobVersion = 1;

constexpr uint32_t kMaxVcpusInSnapshot = 256;
constexpr uint32_t kMaxDevicesInSnapshot = 64;
constexpr size_t kMaxCmdlineBytes = 64 * 1024;
constexpr size_t kMaxSerialBytes = 64;

Section Make(uint32_t tag, uint32_t version, StateWriter& writer) {
  return Section{tag, version, writer.Take()};
}

void EncodeLayout(StateWriter& out, const MachineLayout& layout) {
  out.U64(layout.memory_bytes);
  out.U32(layout.vcpu_count);
  PutString(out, layout.cmdline);
  out.U32(static_cast<uint32_t>(layout.devices.size()));
  for (const DeviceLayout& device : layout.devices) {
    out.U8(static_cast<uint8_t>(device.kind));
    out.U32(device.gsi);
    out.U64(device.mmio_base);
    out.U8(device.read_only ? 1 : 0);
    PutString(out, device.serial);
    out.U64(device.capacity_sectors);
    out.U64(device.guest_cid);
  }
}

MachineLayout DecodeLayout(StateReader& in) {
  MachineLayout layout;
  layout.memory_bytes = in.U64();
  if (layout.memory_bytes == 0 || layout.memory_bytes % 4096 != 0 || layout.memory_bytes > (1ULL << 40))
    in.Fail("memory size " + std::to_string(layout.memory_bytes) + " is not a multiple of 4096 up to 1 TiB");
  layout.vcpu_count = in.U32();
  if (layout.vcpu_count == 0 || layout.vcpu_count > kMaxVcpusInSnapshot)
    in.Fail("vcpu count " + std::to_string(layout.vcpu_count) + " out of range");
  layout.cmdline = GetString(in, kMaxCmdlineBytes, "cmdline");
  const uint32_t device_count = in.U32();
  if (device_count > kMaxDevicesInSnapshot) in.Fail(std::to_string(device_count) + " devices is too many");
  for (uint32_t i = 0; i < device_count; ++i) {
    DeviceLayout device;
    const uint8_t kind = in.U8();
    if (kind < 1 || kind > 3) in.Fail("device " + std::to_string(i) + " has unknown kind " + std::to_string(kind));
    device.kind = static_cast<DeviceKind>(kind);
    device.gsi = in.U32();
    device.mmio_base = in.U64();
    device.read_only = GetBool(in, "read_only");
    device.serial = GetString(in, kMaxSerialBytes, "disk serial");
    device.capacity_sectors = in.U64();
    device.guest_cid = in.U64();
    layout.devices.push_back(std::move(device));
  }
  return layout;
}

// Walks the sections in order, each one expected by tag and version.
class SectionCursor {
 public:
  explicit SectionCursor(const std::vector<Section>& sections) : sections_(sections) {}
  const std::vector<uint8_t>& Next(uint32_t tag, uint32_t version, const std::string& what) {
    if (next_ >= sections_.size())
      throw VmmError("state file snapshot: section " + SectionName(tag) + " (" + what + ") is missing");
    const Section& section = sections_[next_++];
    if (section.tag != tag)
      throw VmmError("state file snapshot: found section " + SectionName(section.tag) + " where " +
                     SectionName(tag) + " (" + what + ") belongs");
    if (section.version != version)
      throw VmmError("state file snapshot: section " + SectionName(tag) + " (" + what + ") has version " +
                     std::to_string(section.version) + ", this VMM reads " + std::to_string(version));
    return section.payload;
  }
  void ExpectEnd() const {
    if (next_ != sections_.size())
      throw VmmError("state file snapshot: unexpected section " + SectionName(sections_[next_].tag) +
                     " after the last one");
  }

 private:
  const std::vector<Section>& sections_;
  size_t next_ = 0;
};

}  // namespace

const char* DeviceKindName(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kBlock: return "virtio-blk";
    case DeviceKind::kVsock: return "virtio-vsock";
    case DeviceKind::kRng: return "virtio-rng";
  }
  return "unknown";
}

std::vector<uint8_t> EncodeMachineSnapshot(const MachineSnapshot& snapshot) {
  StateFile file;
  file.identity = snapshot.identity;
  file.snapshot_id = snapshot.snapshot_id;
  StateWriter conf;
  EncodeLayout(conf, snapshot.layout);
  file.sections.push_back(Make(kConfTag, kConfVersion, conf));
  StateWriter vm;
  EncodeVm(vm, snapshot.vm);
  file.sections.push_back(Make(kVmTag, kVmSectionVersion, vm));
  for (const VcpuState& vcpu : snapshot.vcpus) {
    StateWriter out;
    EncodeVcpu(out, vcpu);
    file.sections.push_back(Make(kVcpuTag, kVcpuSectionVersion, out));
  }
  file.sections.push_back(Section{kSerialTag, kBlobVersion, snapshot.serial});
  file.sections.push_back(Section{kI8042Tag, kBlobVersion, snapshot.i8042});
  for (const std::vector<uint8_t>& device : snapshot.virtio)
    file.sections.push_back(Section{kVirtioTag, kBlobVersion, device});
  return EncodeStateFile(file);
}

MachineSnapshot DecodeMachineSnapshot(const std::vector<uint8_t>& bytes) {
  StateFile file = DecodeStateFile(bytes);
  MachineSnapshot snapshot;
  snapshot.identity = file.identity;
  snapshot.snapshot_id = file.snapshot_id;
  SectionCursor cursor(file.sections);
  {
    const std::vector<uint8_t>& payload = cursor.Next(kConfTag, kConfVersion, "machine layout");
    StateReader in(payload, "machine layout");
    snapshot.layout = DecodeLayout(in);
    in.ExpectEnd();
  }
  {
    const std::vector<uint8_t>& payload = cursor.Next(kVmTag, kVmSectionVersion, "irqchip, PIT, clock");
    StateReader in(payload, "vm");
    snapshot.vm = DecodeVm(in);
    in.ExpectEnd();
  }
  for (uint32_t i = 0; i < snapshot.layout.vcpu_count; ++i) {
    const std::string what = "vcpu " + std::to_string(i);
    const std::vector<uint8_t>& payload = cursor.Next(kVcpuTag, kVcpuSectionVersion, what);
    StateReader in(payload, what);
    snapshot.vcpus.push_back(DecodeVcpu(in));
    in.ExpectEnd();
    if (snapshot.vcpus.back().index != i)
      in.Fail("holds the state of vcpu " + std::to_string(snapshot.vcpus.back().index));
  }
  snapshot.serial = cursor.Next(kSerialTag, kBlobVersion, "serial");
  snapshot.i8042 = cursor.Next(kI8042Tag, kBlobVersion, "i8042");
  for (size_t i = 0; i < snapshot.layout.devices.size(); ++i)
    snapshot.virtio.push_back(cursor.Next(
        kVirtioTag, kBlobVersion,
        std::string(DeviceKindName(snapshot.layout.devices[i].kind)) + " " + std::to_string(i)));
  cursor.ExpectEnd();
  return snapshot;
}

}  // namespace smolvm::snapshot
