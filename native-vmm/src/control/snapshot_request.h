// The `snapshot` request: {"state": file, "memory": file} from a paused machine. A {"path"}
// target is written to "<path>.tmp-<pid>", synced and renamed over the path (a reader, or a VM
// mapping the old memory file, never sees a half-written file); an {"fd"}/{"inherited_fd"}
// target must be a regular file open for writing and is truncated and written in place.
#pragma once

#include <vector>

#include "control/json.h"
#include "util/fd.h"
#include "vm/machine.h"

namespace smolvm {

// Returns the reply fields: state_bytes, memory_bytes, memory_data_bytes, snapshot_id,
// vmm_build, host_kind, cpuid_hash, warnings, duration_ms. Throws VmmError("snapshot: ...");
// on failure no target path is created or replaced.
Json TakeSnapshot(Machine& machine, const Json& request, std::vector<UniqueFd>& message_fds,
                  int control_fd);

}  // namespace smolvm
