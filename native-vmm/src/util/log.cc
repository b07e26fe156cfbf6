#include "util/log.h"

#include <unistd.h>

namespace smolvm {
namespace {

void WriteLine(const char* level, const std::string& message) {
  std::string line = std::string("smolvm-vmm[") + std::to_string(::getpid()) + "] " + level +
                     ": " + message + "\n";
  // One write() per line so that lines of concurrent threads do not interleave.
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace

void LogInfo(const std::string& message) { WriteLine("info", message); }
void LogWarning(const std::string& message) { WriteLine("warning", message); }

}  // namespace smolvm
