// Diagnostics of the VMM process go to stderr, one line each, prefixed so that they stand out
// in the shim's log. The shim reads structured state from the control socket, never from here.
// When stderr is a pipe (the shim reads it into a capped vmm.log) it is written non-blocking:
// a line that does not fit is dropped and counted in the next one, never waited for.
#pragma once

#include <string>

namespace smolvm {

void LogInfo(const std::string& message);
void LogWarning(const std::string& message);

}  // namespace smolvm
