// The per-VM process's control session: the protocol state machine (hello, configure, start,
// pause/resume, snapshot, stop, status; configure may restore a snapshot), events back to the
// controller, the exit record, and the main loop that waits on the control socket, the
// machine's exit and termination signals.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "control/channel.h"
#include "control/configure.h"
#include "util/fd.h"
#include "vm/machine.h"

namespace smolvm {

constexpr int kControlProtocolVersion = 1;

class Controller {
 public:
  // `control_socket`: the connected unix stream socket to the controller.
  explicit Controller(UniqueFd control_socket);
  // Runs until the VM has ended (or, before a VM exists, until the controller goes away).
  // Returns the process exit code.
  int Run();

 private:
  enum class State { kAwaitingConfigure, kConfigured, kRunning, kPaused, kExited };

  void HandleMessage(ControlMessage& message);
  Json Dispatch(const std::string& type, ControlMessage& message);
  void OnMachineExit(const MachineExit& exit);  // any thread: records it and wakes Run()
  void FinishExit();                            // main thread: tear down, report, record
  void SendEvent(Json event);
  void WriteExitRecord(const MachineExit& exit, int exit_code);
  static int ExitCodeFor(ExitReason reason);
  static const char* StateName(State state);

  ControlChannel channel_;
  UniqueFd exit_event_;   // eventfd written by OnMachineExit
  UniqueFd signal_fd_;    // SIGTERM, SIGINT, SIGHUP
  State state_ = State::kAwaitingConfigure;
  bool control_open_ = true;
  std::unique_ptr<Machine> machine_;
  std::string exit_record_path_;
  bool stop_on_control_close_ = true;
  UniqueFd kvm_fd_;
  std::mutex exit_mutex_;
  std::optional<MachineExit> pending_exit_;
  int exit_code_ = 0;
  int64_t started_at_ms_ = 0;
};

}  // namespace smolvm
