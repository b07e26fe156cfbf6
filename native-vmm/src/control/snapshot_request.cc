#include "control/snapshot_request.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "control/file_ref.h"
#include "snapshot/machine_state.h"
#include "snapshot/memory_file.h"
#include "snapshot/snapshot_file.h"
#include "util/error.h"

namespace smolvm {
namespace {

// One output file: either a temporary beside the named path (renamed over it on Commit,
// removed otherwise) or a descriptor written in place.
class SnapshotTarget {
 public:
  SnapshotTarget(const Json& reference, const std::string& field, FdResolver& resolver) {
    if (FdResolver::IsPath(reference)) {
      const Json* path = reference.Find("path");
      if (reference.as_object().size() != 1 || !path->is_string() || path->as_string().empty())
        FailField("snapshot", field, "path must be a non-empty string (and the only member)");
      path_ = path->as_string();
      temporary_ = path_ + ".tmp-" + std::to_string(::getpid());
      fd_.reset(::open(temporary_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
      if (!fd_.valid()) throw SysError("snapshot: " + field + ": create " + temporary_);
      return;
    }
    fd_ = resolver.Resolve(reference, field, FileAccess::kReadWrite);
    struct stat status {};
    if (::fstat(fd_.get(), &status) != 0 || !S_ISREG(status.st_mode))
      FailField("snapshot", field, "descriptor is not a regular file");
    const int flags = ::fcntl(fd_.get(), F_GETFL);
    if (flags < 0 || (flags & O_ACCMODE) == O_RDONLY)
      FailField("snapshot", field, "descriptor is not open for writing");
    if (flags & O_APPEND) FailField("snapshot", field, "descriptor is in append mode");
  }
  ~SnapshotTarget() {
    if (!temporary_.empty() && !committed_) ::unlink(temporary_.c_str());
  }
  SnapshotTarget(const SnapshotTarget&) = delete;
  SnapshotTarget& operator=(const SnapshotTarget&) = delete;

  int fd() const { return fd_.get(); }
  bool SameFileAs(int other) const {
    struct stat mine {}, theirs {};
    return ::fstat(fd_.get(), &mine) == 0 && ::fstat(other, &theirs) == 0 && mine.st_dev == theirs.st_dev &&
           mine.st_ino == theirs.st_ino;
  }
  void Sync(const std::string& field) {
    if (::fsync(fd_.get()) != 0) throw SysError("snapshot: " + field + ": fsync");
  }
  void Commit(const std::string& field) {
    if (temporary_.empty()) return;
    if (::rename(temporary_.c_str(), path_.c_str()) != 0)
      throw SysError("snapshot: " + field + ": rename to " + path_);
    committed_ = true;
  }

 private:
  UniqueFd fd_;
  std::string path_;
  std::string temporary_;
  bool committed_ = false;
};

}  // namespace

Json TakeSnapshot(Machine& machine, const Json& request, std::vector<UniqueFd>& message_fds,
                  int control_fd) {
  const auto started = std::chrono::steady_clock::now();
  for (const auto& member : request.as_object())
    if (member.first != "v" && member.first != "id" && member.first != "type" && member.first != "state" &&
        member.first != "memory")
      FailField("snapshot", member.first, "unknown field");
  const Json* state_ref = request.Find("state");
  const Json* memory_ref = request.Find("memory");
  if (state_ref == nullptr) FailField("snapshot", "state", "missing");
  if (memory_ref == nullptr) FailField("snapshot", "memory", "missing");

  FdResolver resolver(message_fds, control_fd, "snapshot");
  SnapshotTarget memory_target(*memory_ref, "memory", resolver);
  SnapshotTarget state_target(*state_ref, "state", resolver);
  // Truncating the file this VM's RAM is mapped from would pull the guest's memory away.
  if (memory_target.SameFileAs(machine.memory().fd()) || state_target.SameFileAs(machine.memory().fd()))
    FailField("snapshot", "memory", "is the file this VM's memory is mapped from; write a new file");
  if (memory_target.SameFileAs(state_target.fd()))
    FailField("snapshot", "state", "is the same file as memory");

  // vCPUs are parked (paused); the device loop parks too, so that no device moves a queue or
  // writes guest memory between the device state and the memory file.
  const std::unique_ptr<EventLoopParking> parked_loop = machine.ParkDeviceLoop();
  std::vector<std::string> warnings;
  snapshot::MachineSnapshot state = machine.CaptureState(warnings);
  state.snapshot_id = snapshot::NewSnapshotId();
  const std::vector<uint8_t> state_bytes = snapshot::EncodeMachineSnapshot(state);

  // Memory first, state last: the state file is what names a snapshot complete.
  const snapshot::MemoryFileStats memory = snapshot::WriteMemoryFile(machine.memory(), memory_target.fd(),
                                                                     state.snapshot_id);
  memory_target.Sync("memory");
  snapshot::WriteAllAt(state_target.fd(), state_bytes);
  state_target.Sync("state");
  memory_target.Commit("memory");
  state_target.Commit("state");

  Json result = Json::Object();
  result.Set("state_bytes", static_cast<uint64_t>(state_bytes.size()));
  result.Set("memory_bytes", memory.file_bytes);
  result.Set("memory_data_bytes", memory.data_bytes);
  result.Set("snapshot_id", snapshot::SnapshotIdHex(state.snapshot_id));
  result.Set("vmm_build", state.identity.vmm_build);
  result.Set("host_kind", state.identity.host_kind);
  result.Set("cpuid_hash", snapshot::Hex64(state.identity.cpuid_hash));
  Json warning_list = Json::Array();
  for (const std::string& warning : warnings) warning_list.Push(warning);
  result.Set("warnings", std::move(warning_list));
  result.Set("duration_ms", static_cast<int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                     std::chrono::steady_clock::now() - started)
                                                     .count()));
  return result;
}

}  // namespace smolvm
