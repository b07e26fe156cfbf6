// File references in control requests: {"fd": i} (the i-th descriptor that came with the
// message, SCM_RIGHTS), {"inherited_fd": n} (a descriptor the VMM inherited at spawn) or
// {"path": "..."} (opened by the VMM). Each descriptor is used at most once per message.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "control/json.h"
#include "util/fd.h"

namespace smolvm {

// "<prefix>: <field>: <why>": the one error shape of every request's field checks.
[[noreturn]] void FailField(const std::string& prefix, const std::string& field, const std::string& why);

enum class FileAccess { kRead, kReadWrite, kAppend };

class FdResolver {
 public:
  // `prefix` starts every error ("configure", "snapshot").
  FdResolver(std::vector<UniqueFd>& message_fds, int control_fd, std::string prefix)
      : message_fds_(message_fds), control_fd_(control_fd), prefix_(std::move(prefix)) {}

  // Resolves a file reference; `field` names it in errors. `path` references are opened with
  // `access`.
  UniqueFd Resolve(const Json& reference, const std::string& field, FileAccess access);
  // True when `reference` is a {"path": ...} reference (validated by Resolve).
  static bool IsPath(const Json& reference);

 private:
  std::vector<UniqueFd>& message_fds_;
  int control_fd_;
  std::string prefix_;
  std::set<int> inherited_used_;
};

}  // namespace smolvm
