#include "util/log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <mutex>

namespace smolvm {
namespace {

// stderr is a pipe the shim reads into a capped log (vmm.log); some lines are about what the
// guest does, written from vCPU threads: a lagging reader must cost dropped lines (counted,
// said in the next line), never a stalled vCPU. Only a pipe or socket is made non-blocking
// (never a terminal someone shares with us).
void MakeStderrNonBlocking() {
  struct stat status {};
  if (::fstat(STDERR_FILENO, &status) != 0 || !(S_ISFIFO(status.st_mode) || S_ISSOCK(status.st_mode))) return;
  const int flags = ::fcntl(STDERR_FILENO, F_GETFL);
  if (flags >= 0) ::fcntl(STDERR_FILENO, F_SETFL, flags | O_NONBLOCK);
}

void WriteLine(const char* level, const std::string& message) {
  static std::once_flag made_non_blocking;
  std::call_once(made_non_blocking, MakeStderrNonBlocking);
  static std::mutex mutex;
  static uint64_t dropped_lines = 0;
  const std::string prefix = std::string("smolvm-vmm[") + std::to_string(::getpid()) + "] ";
  std::lock_guard<std::mutex> lock(mutex);
  std::string text;
  if (dropped_lines > 0)
    text = prefix + "warning: " + std::to_string(dropped_lines) + " log lines dropped (the log's reader lagged)\n";
  text += prefix + level + ": " + message + "\n";
  // One write() per line: lines of concurrent threads never interleave.
  const ssize_t written = ::write(STDERR_FILENO, text.data(), text.size());
  if (written == static_cast<ssize_t>(text.size())) {
    dropped_lines = 0;
  } else {
    ++dropped_lines;
  }
}

}  // namespace

void LogInfo(const std::string& message) { WriteLine("info", message); }
void LogWarning(const std::string& message) { WriteLine("warning", message); }

}  // namespace smolvm
