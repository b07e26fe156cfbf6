// Unit tests of the snapshot format and the device state blobs (no /dev/kvm needed): round
// trips, every truncation and corruption refused with an error (never a crash), the CPUID
// fingerprint, the sparse memory file with its trailer and a MAP_PRIVATE mapping of it, and
// `configure` with `restore`. Called from core_test.cc's main.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "control/configure.h"
#include "control/json.h"
#include "devices/i8042.h"
#include "devices/serial.h"
#include "memory/guest_memory.h"
#include "snapshot/host_identity.h"
#include "snapshot/machine_state.h"
#include "snapshot/memory_file.h"
#include "snapshot/snapshot_file.h"
#include "util/error.h"

using namespace smolvm;

namespace {

#define SNAP_CHECK(condition)                                                             \
  do {                                                                                    \
    if (!(condition)) throw std::runtime_error(std::string(__FILE__ ":") +                \
                                               std::to_string(__LINE__) + ": " #condition); \
  } while (0)

template <typename F>
std::string ErrorOf(F&& action) {
  try {
    action();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "";
}

bool Contains(const std::string& text, const char* part) { return text.find(part) != std::string::npos; }

snapshot::MachineSnapshot SampleSnapshot() {
  snapshot::MachineSnapshot state;
  state.identity = {"smolvm-vmm test build", "pvm", 0x1234'5678'9abc'def0ULL};
  state.snapshot_id = snapshot::NewSnapshotId();
  state.layout.memory_bytes = 8 << 20;
  state.layout.vcpu_count = 2;
  state.layout.cmdline = "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5";
  snapshot::DeviceLayout disk;
  disk.kind = snapshot::DeviceKind::kBlock;
  disk.gsi = 5;
  disk.mmio_base = 0xd0000000;
  disk.read_only = true;
  disk.serial = "image";
  snapshot::DeviceLayout rng;
  rng.kind = snapshot::DeviceKind::kRng;
  rng.gsi = 6;
  rng.mmio_base = 0xd0001000;
  state.layout.devices = {disk, rng};
  state.vm.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
  state.vm.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
  state.vm.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
  state.vm.has_clock = true;
  state.vm.clock.clock = 123456789;
  for (uint32_t i = 0; i < 2; ++i) {
    snapshot::VcpuState vcpu;
    vcpu.index = i;
    vcpu.regs.rip = 0x100000 + i;
    vcpu.regs.r12 = 42;
    vcpu.has_xsave = i == 0;
    vcpu.xsave.region[0] = 0xabcd;
    vcpu.tsc_khz = 2500000;
    kvm_cpuid_entry2 entry{};
    entry.function = 1;
    entry.ebx = i << 24;
    vcpu.cpuid = {entry};
    kvm_msr_entry msr{};
    msr.index = 0x10;
    msr.data = 999;
    vcpu.msrs = {msr};
    vcpu.has_events = true;
    state.vcpus.push_back(vcpu);
  }
  state.serial = {1, 2, 3};
  state.i8042 = {4, 5};
  state.virtio = {{6, 7, 8}, {9}};
  return state;
}

UniqueFd MemFd(const char* name) {
  UniqueFd fd(::memfd_create(name, MFD_CLOEXEC));
  if (!fd.valid()) throw std::runtime_error("memfd_create");
  return fd;
}

UniqueFd FileWith(const std::vector<uint8_t>& bytes) {
  UniqueFd fd = MemFd("state");
  snapshot::WriteAllAt(fd.get(), bytes);
  return fd;
}

}  // namespace

void RunSnapshotTests(const std::function<void(const char*, const std::function<void()>&)>& run) {
  run("snapshot: state file round trip keeps every field", [] {
    const snapshot::MachineSnapshot original = SampleSnapshot();
    const std::vector<uint8_t> bytes = snapshot::EncodeMachineSnapshot(original);
    const snapshot::MachineSnapshot decoded = snapshot::DecodeMachineSnapshot(bytes);
    SNAP_CHECK(decoded.identity.vmm_build == original.identity.vmm_build);
    SNAP_CHECK(decoded.identity.host_kind == "pvm" && decoded.identity.cpuid_hash == original.identity.cpuid_hash);
    SNAP_CHECK(decoded.snapshot_id == original.snapshot_id);
    SNAP_CHECK(decoded.layout.memory_bytes == (8 << 20) && decoded.layout.vcpu_count == 2);
    SNAP_CHECK(decoded.layout.cmdline == original.layout.cmdline);
    SNAP_CHECK(decoded.layout.devices.size() == 2 && decoded.layout.devices[0].serial == "image" &&
               decoded.layout.devices[0].read_only && decoded.layout.devices[1].kind == snapshot::DeviceKind::kRng);
    SNAP_CHECK(decoded.vm.has_clock && decoded.vm.clock.clock == 123456789 && !decoded.vm.has_pit);
    SNAP_CHECK(decoded.vcpus.size() == 2 && decoded.vcpus[1].regs.rip == 0x100001 && decoded.vcpus[1].regs.r12 == 42);
    SNAP_CHECK(decoded.vcpus[0].has_xsave && decoded.vcpus[0].xsave.region[0] == 0xabcd && !decoded.vcpus[1].has_xsave);
    SNAP_CHECK(decoded.vcpus[1].cpuid.size() == 1 && decoded.vcpus[1].cpuid[0].ebx == (1u << 24));
    SNAP_CHECK(decoded.vcpus[0].msrs.size() == 1 && decoded.vcpus[0].msrs[0].data == 999);
    SNAP_CHECK(decoded.serial == original.serial && decoded.i8042 == original.i8042 && decoded.virtio == original.virtio);
  });

  run("snapshot: every truncation and every corrupt body byte is a clear error", [] {
    const std::vector<uint8_t> bytes = snapshot::EncodeMachineSnapshot(SampleSnapshot());
    for (size_t length = 0; length < bytes.size(); ++length) {
      const std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(length));
      const std::string error = ErrorOf([&] { snapshot::DecodeMachineSnapshot(prefix); });
      SNAP_CHECK(!error.empty());
      SNAP_CHECK(Contains(error, "state file"));
    }
    // The body is everything after the header; flip each of its bytes in turn.
    const size_t header_length = 8 + 4 + 4 + (static_cast<size_t>(bytes[12]) | bytes[13] << 8 | bytes[14] << 16);
    for (size_t i = header_length; i < bytes.size(); ++i) {
      std::vector<uint8_t> corrupt = bytes;
      corrupt[i] ^= 0x01;
      SNAP_CHECK(Contains(ErrorOf([&] { snapshot::DecodeMachineSnapshot(corrupt); }), "checksum mismatch"));
    }
    // A header byte flipped either fails or changes what the identity check compares.
    for (size_t i = 0; i < header_length; ++i) {
      std::vector<uint8_t> corrupt = bytes;
      corrupt[i] ^= 0x80;
      try {
        const snapshot::MachineSnapshot decoded = snapshot::DecodeMachineSnapshot(corrupt);
        const snapshot::MachineSnapshot original = snapshot::DecodeMachineSnapshot(bytes);
        SNAP_CHECK(decoded.identity.vmm_build != original.identity.vmm_build ||
                   decoded.identity.host_kind != original.identity.host_kind ||
                   decoded.identity.cpuid_hash != original.identity.cpuid_hash ||
                   decoded.snapshot_id != original.snapshot_id);
      } catch (const VmmError&) {
      }
    }
    std::vector<uint8_t> version = bytes;
    version[8] = 9;
    SNAP_CHECK(Contains(ErrorOf([&] { snapshot::DecodeMachineSnapshot(version); }), "format version 9"));
    SNAP_CHECK(Contains(ErrorOf([&] { snapshot::DecodeMachineSnapshot({'E', 'L', 'F'}); }), "bad magic"));
  });

  run("snapshot: sections missing, repeated, out of order or of another version are refused", [] {
    const snapshot::StateFile good = snapshot::DecodeStateFile(snapshot::EncodeMachineSnapshot(SampleSnapshot()));
    auto error_with = [&](const std::function<void(std::vector<snapshot::Section>&)>& change) {
      snapshot::StateFile file = good;
      change(file.sections);
      return ErrorOf([&] { snapshot::DecodeMachineSnapshot(snapshot::EncodeStateFile(file)); });
    };
    SNAP_CHECK(Contains(error_with([](auto& s) { s.pop_back(); }), "is missing"));
    SNAP_CHECK(Contains(error_with([](auto& s) { s.push_back(s.back()); }), "unexpected section VIRT"));
    SNAP_CHECK(Contains(error_with([](auto& s) { std::swap(s[0], s[1]); }), "found section VMST where CONF"));
    SNAP_CHECK(Contains(error_with([](auto& s) { s[2].version = 7; }), "has version 7, this VMM reads 1"));
    SNAP_CHECK(Contains(error_with([](auto& s) { s[2].payload.push_back(0); }), "trailing bytes"));
    SNAP_CHECK(Contains(error_with([](auto& s) { s[2].payload.resize(100); }), "vcpu 0 snapshot"));
    SNAP_CHECK(Contains(error_with([](auto& s) { s[2].payload[0] = 1; }), "holds the state of vcpu 1"));
  });

  run("snapshot: CPUID fingerprint ignores per-CPU APIC ids, not features", [] {
    kvm_cpuid_entry2 leaf1{};
    leaf1.function = 1;
    leaf1.ebx = 0x00020800;
    leaf1.ecx = 0x80000000;
    std::vector<kvm_cpuid_entry2> core0 = {leaf1};
    std::vector<kvm_cpuid_entry2> core1 = core0;
    core1[0].ebx |= 7u << 24;
    std::vector<kvm_cpuid_entry2> other = core0;
    other[0].ecx ^= 1;
    SNAP_CHECK(snapshot::CpuidHash(core0, "AuthenticAMD") == snapshot::CpuidHash(core1, "AuthenticAMD"));
    SNAP_CHECK(snapshot::CpuidHash(core0, "AuthenticAMD") != snapshot::CpuidHash(other, "AuthenticAMD"));
    SNAP_CHECK(snapshot::CpuidHash(core0, "AuthenticAMD") != snapshot::CpuidHash(core0, "GenuineIntel"));
    snapshot::HostIdentity a{"build", "pvm", 1};
    snapshot::HostIdentity b = a;
    SNAP_CHECK(ErrorOf([&] { snapshot::CheckRestorable(a, b); }).empty());
    b.host_kind = "hardware";
    SNAP_CHECK(Contains(ErrorOf([&] { snapshot::CheckRestorable(a, b); }), "across host kinds"));
    b = a;
    b.vmm_build = "other";
    SNAP_CHECK(Contains(ErrorOf([&] { snapshot::CheckRestorable(a, b); }), "VMM build"));
    b = a;
    b.cpuid_hash = 2;
    SNAP_CHECK(Contains(ErrorOf([&] { snapshot::CheckRestorable(a, b); }), "CPUID hash"));
    SNAP_CHECK(Contains(snapshot::VmmBuild(), "build-id "));
  });

  run("snapshot: memory file is sparse, carries its snapshot id, maps MAP_PRIVATE", [] {
    auto memory = GuestMemory::Create(8 << 20);
    const uint64_t marker = 0x5eed'0000'0000'0001ULL;
    SNAP_CHECK(memory->WriteObj<uint64_t>(0x1000, marker));
    SNAP_CHECK(memory->WriteObj<uint64_t>((8 << 20) - 8, marker + 1));
    std::vector<uint8_t> zeros(4096, 0);
    SNAP_CHECK(memory->Write(0x3000, zeros.data(), zeros.size()));  // touched, but zero: a hole
    const snapshot::SnapshotId id = snapshot::NewSnapshotId();
    UniqueFd file = MemFd("memory");
    const snapshot::MemoryFileStats stats = snapshot::WriteMemoryFile(*memory, file.get(), id);
    SNAP_CHECK(stats.file_bytes == (8 << 20) + snapshot::kMemoryTrailerBytes);
    SNAP_CHECK(stats.data_bytes == 2 * 4096);
    snapshot::CheckMemoryFile(file.get(), 8 << 20, id);
    snapshot::SnapshotId other = id;
    other[0] ^= 1;
    SNAP_CHECK(Contains(ErrorOf([&] { snapshot::CheckMemoryFile(file.get(), 8 << 20, other); }), "does not belong"));
    SNAP_CHECK(Contains(ErrorOf([&] { snapshot::CheckMemoryFile(file.get(), 4 << 20, id); }), "expected"));

    auto restored = GuestMemory::MapPrivate(file.get(), 8 << 20);
    SNAP_CHECK(restored->ReadObj<uint64_t>(0x1000).value() == marker);
    SNAP_CHECK(restored->ReadObj<uint64_t>((8 << 20) - 8).value() == marker + 1);
    SNAP_CHECK(restored->WriteObj<uint64_t>(0x1000, 7));  // copy-on-write: the file keeps its bytes
    auto again = GuestMemory::MapPrivate(file.get(), 8 << 20);
    SNAP_CHECK(again->ReadObj<uint64_t>(0x1000).value() == marker);
    // A snapshot of the restored memory holds its private copy.
    UniqueFd second = MemFd("memory2");
    snapshot::WriteMemoryFile(*restored, second.get(), id);
    auto from_second = GuestMemory::MapPrivate(second.get(), 8 << 20);
    SNAP_CHECK(from_second->ReadObj<uint64_t>(0x1000).value() == 7);
    SNAP_CHECK(from_second->ReadObj<uint64_t>((8 << 20) - 8).value() == marker + 1);
  });

  run("snapshot: serial and i8042 state round trips; malformed blobs refused", [] {
    Serial serial(nullptr, -1);
    const uint8_t lcr = 0x03, ier = 0x01, scr = 0x77;
    serial.Write(3, &lcr, 1);
    serial.Write(1, &ier, 1);
    serial.Write(7, &scr, 1);
    serial.Enqueue("hi");
    Serial copy(nullptr, -1);
    copy.RestoreState(serial.SaveState());
    uint8_t value = 0;
    copy.Read(7, &value, 1);
    SNAP_CHECK(value == 0x77);
    copy.Read(3, &value, 1);
    SNAP_CHECK(value == 0x03);
    copy.Read(0, &value, 1);
    SNAP_CHECK(value == 'h');
    std::vector<uint8_t> blob = serial.SaveState();
    blob.pop_back();
    SNAP_CHECK(Contains(ErrorOf([&] { copy.RestoreState(blob); }), "serial snapshot: truncated"));
    SNAP_CHECK(Contains(ErrorOf([&] { copy.RestoreState({1, 2, 3, 4}); }), "serial snapshot: magic"));

    I8042 keyboard([] {});
    const uint8_t read_command_byte = 0x20;
    keyboard.Write(4, &read_command_byte, 1);
    I8042 keyboard_copy([] {});
    keyboard_copy.RestoreState(keyboard.SaveState());
    keyboard_copy.Read(4, &value, 1);
    SNAP_CHECK((value & 0x01) != 0);  // the output buffer was full at the snapshot
    std::vector<uint8_t> bad = keyboard.SaveState();
    bad[9] = 0x99;  // pending command this device never takes
    SNAP_CHECK(Contains(ErrorOf([&] { keyboard_copy.RestoreState(bad); }), "i8042 snapshot: pending command"));
  });

  run("snapshot: configure with restore takes the layout, checks what is given", [] {
    snapshot::MachineSnapshot state = SampleSnapshot();
    auto memory = GuestMemory::Create(8 << 20);
    std::vector<UniqueFd> fds;
    fds.push_back(FileWith(snapshot::EncodeMachineSnapshot(state)));
    UniqueFd memory_file = MemFd("memory");
    snapshot::WriteMemoryFile(*memory, memory_file.get(), state.snapshot_id);
    fds.push_back(std::move(memory_file));
    ConfigureRequest request = ParseConfigure(
        Json::Parse(R"({"restore":{"state":{"fd":0},"memory":{"fd":1}},"disks":[{"file":{"path":"/dev/null"}}]})"),
        fds, 3);
    SNAP_CHECK(request.restore.has_value());
    SNAP_CHECK(request.machine.memory_bytes == (8 << 20) && request.machine.vcpu_count == 2);
    SNAP_CHECK(request.machine.disks.size() == 1 && request.machine.disks[0].read_only &&
               request.machine.disks[0].serial == "image");
    SNAP_CHECK(request.machine.rng && !request.machine.vsock);

    auto error_for = [&](const char* text) {
      std::vector<UniqueFd> message;
      message.push_back(FileWith(snapshot::EncodeMachineSnapshot(state)));
      UniqueFd mem = MemFd("memory");
      snapshot::WriteMemoryFile(*memory, mem.get(), state.snapshot_id);
      message.push_back(std::move(mem));
      return ErrorOf([&] { ParseConfigure(Json::Parse(text), message, 3); });
    };
    SNAP_CHECK(Contains(error_for(R"({"restore":{"state":{"fd":0},"memory":{"fd":1}}})"), "disks: the snapshot has 1 disk slots"));
    SNAP_CHECK(Contains(error_for(R"({"restore":{"state":{"fd":0},"memory":{"fd":1}},"cmdline":"x"})"), "cmdline: not allowed with \"restore\""));
    SNAP_CHECK(Contains(error_for(R"({"restore":{"state":{"fd":0},"memory":{"fd":1}},"vcpus":1,"disks":[{"file":{"path":"/dev/null"}}]})"), "vcpus: differs from the snapshot's (2)"));
    SNAP_CHECK(Contains(error_for(R"({"restore":{"state":{"fd":0},"memory":{"fd":1}},"rng":false,"disks":[{"file":{"path":"/dev/null"}}]})"), "rng: differs"));
    SNAP_CHECK(Contains(error_for(R"({"restore":{"state":{"fd":0},"memory":{"fd":1}},"disks":[{"file":{"path":"/dev/null"},"read_only":false}]})"), "disks[0].read_only: differs"));
    SNAP_CHECK(Contains(error_for(R"({"restore":{"state":{"fd":1},"memory":{"fd":0}},"disks":[{"file":{"path":"/dev/null"}}]})"), "restore.state: state file snapshot: not a smolvm"));
    SNAP_CHECK(Contains(error_for(R"({"restore":{"state":{"fd":0}}})"), "restore.memory: missing"));
    SNAP_CHECK(Contains(error_for(R"({"restore":{"state":{"fd":0},"memory":{"fd":1},"x":1}})"), "restore.x: unknown field"));
  });
}
