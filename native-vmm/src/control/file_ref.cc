#include "control/file_ref.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cmath>

#include "control/channel.h"
#include "util/error.h"

namespace smolvm {
namespace {

bool IsIndex(const Json& value, uint64_t max, uint64_t* out) {
  if (!value.is_number() || std::floor(value.as_number()) != value.as_number() || value.as_number() < 0 ||
      value.as_number() > static_cast<double>(max))
    return false;
  *out = static_cast<uint64_t>(value.as_number());
  return true;
}

}  // namespace

void FailField(const std::string& prefix, const std::string& field, const std::string& why) {
  throw VmmError(prefix + ": " + field + ": " + why);
}

bool FdResolver::IsPath(const Json& reference) {
  return reference.is_object() && reference.Find("path") != nullptr;
}

UniqueFd FdResolver::Resolve(const Json& reference, const std::string& field, FileAccess access) {
  auto fail = [&](const std::string& why) { FailField(prefix_, field, why); };
  if (!reference.is_object()) fail("must be an object {\"fd\"|\"inherited_fd\"|\"path\": ...}");
  if (reference.as_object().size() != 1) fail("must name exactly one of \"fd\", \"inherited_fd\", \"path\"");
  UniqueFd fd;
  if (const Json* index = reference.Find("fd")) {
    uint64_t i = 0;
    if (!IsIndex(*index, kMaxFdsPerMessage - 1, &i))
      FailField(prefix_, "fd", "must be an integer from 0 to " + std::to_string(kMaxFdsPerMessage - 1));
    if (i >= message_fds_.size())
      fail("fd index " + std::to_string(i) + " but the message carried " +
           std::to_string(message_fds_.size()) + " descriptors");
    if (!message_fds_[i].valid()) fail("fd index " + std::to_string(i) + " used twice");
    fd = std::move(message_fds_[i]);
  } else if (const Json* inherited = reference.Find("inherited_fd")) {
    uint64_t number = 0;
    if (!IsIndex(*inherited, 65535, &number))
      FailField(prefix_, "inherited_fd", "must be an integer from 0 to 65535");
    const int raw = static_cast<int>(number);
    if (raw == control_fd_) fail("inherited_fd is the control socket");
    if (!inherited_used_.insert(raw).second) fail("inherited_fd " + std::to_string(raw) + " used twice");
    if (::fcntl(raw, F_GETFD) < 0) fail("inherited_fd " + std::to_string(raw) + " is not open");
    ::fcntl(raw, F_SETFD, FD_CLOEXEC);
    fd.reset(raw);
  } else if (const Json* path = reference.Find("path")) {
    if (!path->is_string() || path->as_string().empty()) fail("path must be a non-empty string");
    int flags = O_CLOEXEC;
    switch (access) {
      case FileAccess::kRead: flags |= O_RDONLY; break;
      case FileAccess::kReadWrite: flags |= O_RDWR; break;
      case FileAccess::kAppend: flags |= O_WRONLY | O_APPEND | O_CREAT; break;
    }
    fd.reset(::open(path->as_string().c_str(), flags, 0640));
    if (!fd.valid()) throw SysError(prefix_ + ": " + field + ": open " + path->as_string());
    return fd;
  } else {
    fail("must name one of \"fd\", \"inherited_fd\", \"path\"");
  }
  struct stat status {};
  if (::fstat(fd.get(), &status) != 0) fail("descriptor is not usable");
  return fd;
}

}  // namespace smolvm
