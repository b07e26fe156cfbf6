// Diagnostics of the VMM process go to stderr, one line each, prefixed so that they stand out
// in the shim's log. The shim reads structured state from the control socket, never from here.
#pragma once

#include <string>

namespace smolvm {

void LogInfo(const std::string& message);
void LogWarning(const std::string& message);

}  // namespace smolvm
