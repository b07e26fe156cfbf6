#include "addon/spawn.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

extern char** environ;

namespace smolvm::addon {
namespace {

// Descriptors the child sees: 0 /dev/null, 1+2 the log, 3 the control socket.
constexpr int kChildControlFd = 3;
// Sources are moved above this first, so that every dup2 changes the number (a dup2 onto the
// same number would keep close-on-exec) and none collides with a target.
constexpr int kFirstScratchFd = 10;

std::string Errno(const std::string& what, int error) { return what + ": " + std::strerror(error); }

UniqueFd DupHigh(int fd, const std::string& what) {
  const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, kFirstScratchFd);
  if (copy < 0) throw std::runtime_error(Errno(what, errno));
  return UniqueFd(copy);
}

// RAII for the spawn attribute objects.
struct SpawnSetup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attributes);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
};

void Check(int result, const char* what) {
  if (result != 0) throw std::runtime_error(Errno(std::string("spawn set-up: ") + what, result));
}

}  // namespace

SpawnedVmm SpawnVmm(const std::string& binary, int log_fd, const std::vector<std::string>& exec_prefix) {
  if (binary.empty() || binary[0] != '/') {
    throw std::runtime_error("smolvm-vmm binary must be an absolute path, not \"" + binary + "\"");
  }
  if (::access(binary.c_str(), X_OK) != 0) {
    throw std::runtime_error(Errno("smolvm-vmm binary " + binary, errno) +
                             " (build it with `npm run build:vmm`)");
  }
  if (!exec_prefix.empty()) {
    const std::string& wrapper = exec_prefix.front();
    if (wrapper.empty() || wrapper[0] != '/') {
      throw std::runtime_error("the VMM exec wrapper must be an absolute path, not \"" + wrapper + "\"");
    }
    if (::access(wrapper.c_str(), X_OK) != 0) {
      throw std::runtime_error(Errno("VMM exec wrapper " + wrapper, errno) + " (build it with `npm run build:launcher`)");
    }
  }
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    throw std::runtime_error(Errno("socketpair", errno));
  }
  UniqueFd ours(pair[0]);
  UniqueFd theirs_low(pair[1]);
  UniqueFd theirs = DupHigh(theirs_low.get(), "control socket");
  theirs_low.reset();
  UniqueFd null_fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!null_fd.valid()) throw std::runtime_error(Errno("open /dev/null", errno));
  UniqueFd stdin_fd = DupHigh(null_fd.get(), "/dev/null");
  UniqueFd log = DupHigh(log_fd >= 0 ? log_fd : null_fd.get(),
                         "log fd " + std::to_string(log_fd) + " is not an open file descriptor");
  null_fd.reset();

  SpawnSetup setup;
  Check(posix_spawn_file_actions_adddup2(&setup.actions, stdin_fd.get(), STDIN_FILENO), "dup2 stdin");
  Check(posix_spawn_file_actions_adddup2(&setup.actions, log.get(), STDOUT_FILENO), "dup2 stdout");
  Check(posix_spawn_file_actions_adddup2(&setup.actions, log.get(), STDERR_FILENO), "dup2 stderr");
  Check(posix_spawn_file_actions_adddup2(&setup.actions, theirs.get(), kChildControlFd), "dup2 control");
  Check(posix_spawn_file_actions_addclosefrom_np(&setup.actions, kChildControlFd + 1), "closefrom");
  // Node ignores SIGPIPE and may block signals: the VMM starts from the defaults, in its own
  // session (a terminal's ^C goes to the shim, which decides what the VM gets).
  sigset_t empty_mask;
  sigemptyset(&empty_mask);
  sigset_t defaults;
  sigfillset(&defaults);
  sigdelset(&defaults, SIGKILL);
  sigdelset(&defaults, SIGSTOP);
  Check(posix_spawnattr_setsigmask(&setup.attributes, &empty_mask), "signal mask");
  Check(posix_spawnattr_setsigdefault(&setup.attributes, &defaults), "signal defaults");
  Check(posix_spawnattr_setflags(&setup.attributes,
                                 POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSID),
        "flags");

  const std::string control_arg = std::to_string(kChildControlFd);
  std::vector<std::string> words(exec_prefix);
  words.insert(words.end(), {binary, "--control-fd", control_arg});
  std::vector<char*> argv;
  argv.reserve(words.size() + 1);
  for (std::string& word : words) argv.push_back(word.data());
  argv.push_back(nullptr);
  const std::string& program = words.front();
  pid_t pid = -1;
  const int spawn_error = posix_spawn(&pid, program.c_str(), &setup.actions, &setup.attributes, argv.data(), environ);
  if (spawn_error != 0) {
    throw std::runtime_error(Errno("cannot start " + program, spawn_error));
  }
  SpawnedVmm spawned;
  spawned.pid = pid;
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    const int error = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw std::runtime_error(Errno("pidfd_open (Linux ≥ 5.3 needed to watch smolvm-vmm)", error));
  }
  spawned.pidfd.reset(pidfd);
  const int flags = ::fcntl(ours.get(), F_GETFL);
  ::fcntl(ours.get(), F_SETFL, flags | O_NONBLOCK);
  spawned.control = std::move(ours);
  return spawned;
}

}  // namespace smolvm::addon
