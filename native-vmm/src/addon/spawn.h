// Starts one smolvm-vmm process with exactly the descriptors it needs: stdin /dev/null,
// stdout+stderr the log, fd 3 its end of a fresh control socketpair; nothing else leaks in
// (close-from 4 in the child). The process is watched through a pidfd from the start.
// With an exec prefix (the shim's exec wrapper, bin/smolvm-vmm-exec, and its arguments up to
// `--`), that program is spawned with the VMM's command line after the prefix; it execs the
// VMM in the same process (same pid, same pidfd). posix_spawn runs on the calling thread,
// the JS main thread: the wrapper's PR_SET_PDEATHSIG watches that thread.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "util/fd.h"

namespace smolvm::addon {

struct SpawnedVmm {
  pid_t pid = -1;
  UniqueFd control;  // our end of the control socket (non-blocking, close-on-exec)
  UniqueFd pidfd;    // pidfd_open(pid): readable once the process has exited
};

// `log_fd` < 0: the VMM's stdout/stderr go to /dev/null. `exec_prefix` empty: the VMM is
// spawned directly; else exec_prefix[0] (an absolute path) is. Throws std::runtime_error
// naming the binary and the cause (missing, not executable, pidfd unsupported); leaves
// nothing behind.
SpawnedVmm SpawnVmm(const std::string& binary, int log_fd, const std::vector<std::string>& exec_prefix = {});

}  // namespace smolvm::addon
