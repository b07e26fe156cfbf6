#include "control/configure.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cmath>
#include <set>

#include "boot/layout.h"
#include "util/error.h"

namespace smolvm {
namespace {

constexpr uint64_t kMaxMemoryMib = 1024 * 1024;  // 1 TiB
constexpr size_t kMaxDisks = 8;

[[noreturn]] void Fail(const std::string& field, const std::string& why) {
  throw VmmError("configure: " + field + ": " + why);
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

enum class Access { kRead, kReadWrite, kAppend };

class FdResolver {
 public:
  FdResolver(std::vector<UniqueFd>& message_fds, int control_fd)
      : message_fds_(message_fds), control_fd_(control_fd) {}

  // Resolves a file reference; `field` names it in errors.
  UniqueFd Resolve(const Json& reference, const std::string& field, Access access) {
    if (!reference.is_object()) Fail(field, "must be an object {\"fd\"|\"inherited_fd\"|\"path\": ...}");
    if (reference.as_object().size() != 1)
      Fail(field, "must name exactly one of \"fd\", \"inherited_fd\", \"path\"");
    if (const Json* index = reference.Find("fd")) {
      const uint64_t i = GetInteger(reference, "fd", 0, kMaxFdsPerMessage - 1);
      (void)index;
      if (i >= message_fds_.size())
        Fail(field, "fd index " + std::to_string(i) + " but the message carried " +
                        std::to_string(message_fds_.size()) + " descriptors");
      if (!message_fds_[i].valid()) Fail(field, "fd index " + std::to_string(i) + " used twice");
      return Checked(std::move(message_fds_[i]), field);
    }
    if (reference.Find("inherited_fd")) {
      const int fd = static_cast<int>(GetInteger(reference, "inherited_fd", 0, 65535));
      if (fd == control_fd_) Fail(field, "inherited_fd is the control socket");
      if (!inherited_used_.insert(fd).second) Fail(field, "inherited_fd " + std::to_string(fd) + " used twice");
      if (::fcntl(fd, F_GETFD) < 0) Fail(field, "inherited_fd " + std::to_string(fd) + " is not open");
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
      return Checked(UniqueFd(fd), field);
    }
    if (const Json* path = reference.Find("path")) {
      if (!path->is_string() || path->as_string().empty()) Fail(field, "path must be a non-empty string");
      int flags = O_CLOEXEC;
      switch (access) {
        case Access::kRead: flags |= O_RDONLY; break;
        case Access::kReadWrite: flags |= O_RDWR; break;
        case Access::kAppend: flags |= O_WRONLY | O_APPEND | O_CREAT; break;
      }
      UniqueFd fd(::open(path->as_string().c_str(), flags, 0640));
      if (!fd.valid()) throw SysError("configure: " + field + ": open " + path->as_string());
      return fd;
    }
    Fail(field, "must name one of \"fd\", \"inherited_fd\", \"path\"");
  }

 private:
  static UniqueFd Checked(UniqueFd fd, const std::string& field) {
    struct stat status {};
    if (::fstat(fd.get(), &status) != 0) Fail(field, "descriptor is not usable");
    return fd;
  }
  std::vector<UniqueFd>& message_fds_;
  int control_fd_;
  std::set<int> inherited_used_;
};

}  // namespace

ConfigureRequest ParseConfigure(const Json& config, std::vector<UniqueFd>& message_fds,
                                int control_fd) {
  if (!config.is_object()) Fail("config", "must be an object");
  static const std::set<std::string> kKnown = {
      "memory_mib", "vcpus", "kernel", "initramfs", "cmdline", "serial", "disks", "vsock",
      "rng", "boot_protocol", "exit_record_path", "on_control_close", "kvm"};
  for (const auto& member : config.as_object())
    if (kKnown.count(member.first) == 0) Fail(member.first, "unknown field");

  FdResolver resolver(message_fds, control_fd);
  ConfigureRequest request;
  MachineConfig& machine = request.machine;
  machine.memory_bytes = GetInteger(config, "memory_mib", 4, kMaxMemoryMib) << 20;
  machine.vcpu_count = static_cast<uint32_t>(GetInteger(config, "vcpus", 1, kMaxVcpus, 1));
  const Json* kernel = config.Find("kernel");
  if (kernel == nullptr) Fail("kernel", "missing");
  machine.kernel = resolver.Resolve(*kernel, "kernel", Access::kRead);
  if (const Json* initramfs = config.Find("initramfs"))
    machine.initramfs = resolver.Resolve(*initramfs, "initramfs", Access::kRead);
  machine.cmdline = GetString(config, "cmdline", "");
  if (const Json* serial = config.Find("serial"))
    machine.serial_output = resolver.Resolve(*serial, "serial", Access::kAppend);
  if (const Json* kvm = config.Find("kvm")) {
    request.kvm = resolver.Resolve(*kvm, "kvm", Access::kReadWrite);
    machine.kvm_fd = request.kvm.get();
  }

  const std::string protocol = GetString(config, "boot_protocol", "auto");
  if (protocol == "auto") machine.boot_protocol = BootProtocol::kAuto;
  else if (protocol == "pvh") machine.boot_protocol = BootProtocol::kPvh;
  else if (protocol == "linux64") machine.boot_protocol = BootProtocol::kLinux64;
  else Fail("boot_protocol", "must be \"auto\", \"pvh\" or \"linux64\"");

  if (const Json* disks = config.Find("disks")) {
    if (!disks->is_array()) Fail("disks", "must be an array");
    if (disks->as_array().size() > kMaxDisks) Fail("disks", "at most " + std::to_string(kMaxDisks) + " slots");
    size_t index = 0;
    for (const Json& disk : disks->as_array()) {
      const std::string field = "disks[" + std::to_string(index++) + "]";
      if (!disk.is_object()) Fail(field, "must be an object");
      for (const auto& member : disk.as_object())
        if (member.first != "file" && member.first != "read_only" && member.first != "serial")
          Fail(field + "." + member.first, "unknown field");
      DiskSlotConfig slot;
      slot.read_only = GetBool(disk, "read_only", false);
      slot.serial = GetString(disk, "serial", "");
      if (slot.serial.size() > 20) Fail(field + ".serial", "at most 20 bytes");
      const Json* file = disk.Find("file");
      if (file == nullptr) Fail(field + ".file", "missing");
      slot.file = resolver.Resolve(*file, field + ".file", slot.read_only ? Access::kRead : Access::kReadWrite);
      machine.disks.push_back(std::move(slot));
    }
  }
  if (const Json* vsock = config.Find("vsock")) {
    if (!vsock->is_object()) Fail("vsock", "must be an object");
    VsockConfig settings;
    settings.guest_cid = GetInteger(*vsock, "guest_cid", 3, 0xffffffffULL - 1);
    const Json* listener = vsock->Find("listener");
    const Json* path = vsock->Find("uds_path");
    if ((listener == nullptr) == (path == nullptr))
      Fail("vsock", "needs exactly one of \"listener\" (a listening unix socket) or \"uds_path\"");
    if (listener != nullptr) settings.listener = resolver.Resolve(*listener, "vsock.listener", Access::kReadWrite);
    if (path != nullptr) {
      settings.uds_path = GetString(*vsock, "uds_path", "");
      if (settings.uds_path.empty()) Fail("vsock.uds_path", "must be a non-empty string");
    }
    machine.vsock = std::move(settings);
  }
  machine.rng = GetBool(config, "rng", true);
  request.exit_record_path = GetString(config, "exit_record_path", "");
  const std::string on_close = GetString(config, "on_control_close", "stop");
  if (on_close == "stop") request.stop_on_control_close = true;
  else if (on_close == "continue") request.stop_on_control_close = false;
  else Fail("on_control_close", "must be \"stop\" or \"continue\"");
  return request;
}

}  // namespace smolvm
