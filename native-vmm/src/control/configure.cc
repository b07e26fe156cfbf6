#include "control/configure.h"

#include <cmath>
#include <set>

#include "boot/layout.h"
#include "control/file_ref.h"
#include "snapshot/memory_file.h"
#include "snapshot/snapshot_file.h"
#include "util/error.h"

namespace smolvm {
namespace {

constexpr uint64_t kMaxMemoryMib = 1024 * 1024;  // 1 TiB
// 16 disks + vsock + rng = 18 devices: within the 19 GSIs (5..23) of the IOAPIC. A pod VM
// holds up to 8 containers, two slots each.
constexpr size_t kMaxDisks = 16;

[[noreturn]] void Fail(const std::string& field, const std::string& why) {
  FailField("configure", field, why);
}

uint64_t GetInteger(const Json& object, const std::string& field, uint64_t min, uint64_t max,
                    std::optional<uint64_t> fallback = std::nullopt) {
  const Json* value = object.Find(field);
  if (value == nullptr) {
    if (fallback) return *fallback;
    Fail(field, "missing");
  }
  if (!value->is_number() || std::floor(value->as_number()) != value->as_number() ||
      value->as_number() < static_cast<double>(min) || value->as_number() > static_cast<double>(max))
    Fail(field, "must be an integer from " + std::to_string(min) + " to " + std::to_string(max));
  return static_cast<uint64_t>(value->as_number());
}

std::string GetString(const Json& object, const std::string& field, const std::string& fallback) {
  const Json* value = object.Find(field);
  if (value == nullptr) return fallback;
  if (!value->is_string()) Fail(field, "must be a string");
  return value->as_string();
}

bool GetBool(const Json& object, const std::string& field, bool fallback) {
  const Json* value = object.Find(field);
  if (value == nullptr) return fallback;
  if (!value->is_bool()) Fail(field, "must be true or false");
  return value->as_bool();
}

// Restore: reads and decodes the state file, and opens (and checks the size of) the memory file.
MachineRestore ParseRestore(const Json& restore, FdResolver& resolver) {
  if (!restore.is_object()) Fail("restore", "must be an object {\"state\": file, \"memory\": file}");
  for (const auto& member : restore.as_object())
    if (member.first != "state" && member.first != "memory") Fail("restore." + member.first, "unknown field");
  const Json* state = restore.Find("state");
  const Json* memory = restore.Find("memory");
  if (state == nullptr) Fail("restore.state", "missing");
  if (memory == nullptr) Fail("restore.memory", "missing");
  UniqueFd state_fd = resolver.Resolve(*state, "restore.state", FileAccess::kRead);
  MachineRestore result;
  // MAP_PRIVATE needs only read access: the file is never written through this mapping.
  result.memory_file = resolver.Resolve(*memory, "restore.memory", FileAccess::kRead);
  try {
    result.state = snapshot::DecodeMachineSnapshot(snapshot::ReadStateBytes(state_fd.get()));
  } catch (const VmmError& error) {
    Fail("restore.state", error.what());
  }
  try {
    snapshot::CheckMemoryFile(result.memory_file.get(), result.state.layout.memory_bytes,
                              result.state.snapshot_id);
  } catch (const VmmError& error) {
    Fail("restore.memory", error.what());
  }
  return result;
}

// With a snapshot, a field that describes the guest machine may be given only to be checked.
void MustMatch(bool matches, const std::string& field, const std::string& snapshot_value) {
  if (!matches) Fail(field, "differs from the snapshot's (" + snapshot_value + ")");
}

}  // namespace

ConfigureRequest ParseConfigure(const Json& config, std::vector<UniqueFd>& message_fds,
                                int control_fd) {
  if (!config.is_object()) Fail("config", "must be an object");
  static const std::set<std::string> kKnown = {
      "memory_mib", "vcpus", "kernel", "initramfs", "cmdline", "serial", "disks", "vsock",
      "rng", "boot_protocol", "exit_record_path", "on_control_close", "kvm", "restore"};
  for (const auto& member : config.as_object())
    if (kKnown.count(member.first) == 0) Fail(member.first, "unknown field");

  FdResolver resolver(message_fds, control_fd, "configure");
  ConfigureRequest request;
  MachineConfig& machine = request.machine;
  const snapshot::MachineLayout* layout = nullptr;
  if (const Json* restore = config.Find("restore")) {
    for (const char* field : {"kernel", "initramfs", "cmdline", "boot_protocol"})
      if (config.Find(field) != nullptr) Fail(field, "not allowed with \"restore\" (the snapshot holds the guest)");
    request.restore = ParseRestore(*restore, resolver);
    layout = &request.restore->state.layout;
  }

  if (layout != nullptr) {
    const uint64_t snapshot_mib = layout->memory_bytes >> 20;
    machine.memory_bytes = layout->memory_bytes;
    if (config.Find("memory_mib") != nullptr)
      MustMatch(GetInteger(config, "memory_mib", 4, kMaxMemoryMib) == snapshot_mib &&
                    (layout->memory_bytes & ((1 << 20) - 1)) == 0,
                "memory_mib", std::to_string(layout->memory_bytes) + " bytes");
    machine.vcpu_count = layout->vcpu_count;
    if (config.Find("vcpus") != nullptr)
      MustMatch(GetInteger(config, "vcpus", 1, kMaxVcpus) == layout->vcpu_count, "vcpus",
                std::to_string(layout->vcpu_count));
  } else {
    machine.memory_bytes = GetInteger(config, "memory_mib", 4, kMaxMemoryMib) << 20;
    machine.vcpu_count = static_cast<uint32_t>(GetInteger(config, "vcpus", 1, kMaxVcpus, 1));
    const Json* kernel = config.Find("kernel");
    if (kernel == nullptr) Fail("kernel", "missing");
    machine.kernel = resolver.Resolve(*kernel, "kernel", FileAccess::kRead);
    if (const Json* initramfs = config.Find("initramfs"))
      machine.initramfs = resolver.Resolve(*initramfs, "initramfs", FileAccess::kRead);
    machine.cmdline = GetString(config, "cmdline", "");
    const std::string protocol = GetString(config, "boot_protocol", "auto");
    if (protocol == "auto") machine.boot_protocol = BootProtocol::kAuto;
    else if (protocol == "pvh") machine.boot_protocol = BootProtocol::kPvh;
    else if (protocol == "linux64") machine.boot_protocol = BootProtocol::kLinux64;
    else Fail("boot_protocol", "must be \"auto\", \"pvh\" or \"linux64\"");
  }
  if (const Json* serial = config.Find("serial"))
    machine.serial_output = resolver.Resolve(*serial, "serial", FileAccess::kAppend);
  if (const Json* kvm = config.Find("kvm")) {
    request.kvm = resolver.Resolve(*kvm, "kvm", FileAccess::kReadWrite);
    machine.kvm_fd = request.kvm.get();
  }

  // The snapshot's devices, when restoring: disk slots in order, then vsock, then rng.
  std::vector<const snapshot::DeviceLayout*> snapshot_disks;
  const snapshot::DeviceLayout* snapshot_vsock = nullptr;
  bool snapshot_rng = false;
  if (layout != nullptr) {
    for (const snapshot::DeviceLayout& device : layout->devices) {
      if (device.kind == snapshot::DeviceKind::kBlock) snapshot_disks.push_back(&device);
      if (device.kind == snapshot::DeviceKind::kVsock) snapshot_vsock = &device;
      if (device.kind == snapshot::DeviceKind::kRng) snapshot_rng = true;
    }
  }

  const Json* disks = config.Find("disks");
  if (disks != nullptr) {
    if (!disks->is_array()) Fail("disks", "must be an array");
    if (disks->as_array().size() > kMaxDisks) Fail("disks", "at most " + std::to_string(kMaxDisks) + " slots");
  }
  const size_t disk_count = disks != nullptr ? disks->as_array().size() : 0;
  if (layout != nullptr && disk_count != snapshot_disks.size())
    Fail("disks", "the snapshot has " + std::to_string(snapshot_disks.size()) +
                      " disk slots; give a file for each (" + std::to_string(disk_count) + " given)");
  for (size_t index = 0; index < disk_count; ++index) {
    const Json& disk = disks->as_array()[index];
    const std::string field = "disks[" + std::to_string(index) + "]";
    if (!disk.is_object()) Fail(field, "must be an object");
    for (const auto& member : disk.as_object())
      if (member.first != "file" && member.first != "read_only" && member.first != "serial")
        Fail(field + "." + member.first, "unknown field");
    const snapshot::DeviceLayout* saved = layout != nullptr ? snapshot_disks[index] : nullptr;
    DiskSlotConfig slot;
    slot.read_only = GetBool(disk, "read_only", saved != nullptr && saved->read_only);
    slot.serial = GetString(disk, "serial", saved != nullptr ? saved->serial : "");
    if (slot.serial.size() > 20) Fail(field + ".serial", "at most 20 bytes");
    if (saved != nullptr) {
      MustMatch(slot.read_only == saved->read_only, field + ".read_only", saved->read_only ? "true" : "false");
      MustMatch(slot.serial == saved->serial, field + ".serial", "\"" + saved->serial + "\"");
    }
    const Json* file = disk.Find("file");
    if (file == nullptr) Fail(field + ".file", "missing");
    slot.file = resolver.Resolve(*file, field + ".file", slot.read_only ? FileAccess::kRead : FileAccess::kReadWrite);
    machine.disks.push_back(std::move(slot));
  }

  const Json* vsock = config.Find("vsock");
  if (layout != nullptr && (vsock != nullptr) != (snapshot_vsock != nullptr))
    Fail("vsock", snapshot_vsock != nullptr ? "the snapshot has a vsock device: give its new socket"
                                            : "the snapshot has no vsock device");
  if (vsock != nullptr) {
    if (!vsock->is_object()) Fail("vsock", "must be an object");
    VsockConfig settings;
    if (snapshot_vsock != nullptr) {
      settings.guest_cid = GetInteger(*vsock, "guest_cid", 3, 0xffffffffULL - 1, snapshot_vsock->guest_cid);
      MustMatch(settings.guest_cid == snapshot_vsock->guest_cid, "vsock.guest_cid",
                std::to_string(snapshot_vsock->guest_cid));
    } else {
      settings.guest_cid = GetInteger(*vsock, "guest_cid", 3, 0xffffffffULL - 1);
    }
    const Json* listener = vsock->Find("listener");
    const Json* path = vsock->Find("uds_path");
    if ((listener == nullptr) == (path == nullptr))
      Fail("vsock", "needs exactly one of \"listener\" (a listening unix socket) or \"uds_path\"");
    if (listener != nullptr) settings.listener = resolver.Resolve(*listener, "vsock.listener", FileAccess::kReadWrite);
    if (path != nullptr) {
      settings.uds_path = GetString(*vsock, "uds_path", "");
      if (settings.uds_path.empty()) Fail("vsock.uds_path", "must be a non-empty string");
    }
    machine.vsock = std::move(settings);
  }
  machine.rng = GetBool(config, "rng", layout != nullptr ? snapshot_rng : true);
  if (layout != nullptr) MustMatch(machine.rng == snapshot_rng, "rng", snapshot_rng ? "true" : "false");
  request.exit_record_path = GetString(config, "exit_record_path", "");
  const std::string on_close = GetString(config, "on_control_close", "stop");
  if (on_close == "stop") request.stop_on_control_close = true;
  else if (on_close == "continue") request.stop_on_control_close = false;
  else Fail("on_control_close", "must be \"stop\" or \"continue\"");
  return request;
}

}  // namespace smolvm
