#include "control/controller.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>

#include "control/snapshot_request.h"
#include "snapshot/host_identity.h"
#include "util/error.h"
#include "util/log.h"

namespace smolvm {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Json Message(const char* type) {
  Json message = Json::Object();
  message.Set("v", kControlProtocolVersion);
  message.Set("type", type);
  return message;
}

}  // namespace

Controller::Controller(UniqueFd control_socket)
    : channel_(std::move(control_socket)), exit_event_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!exit_event_.valid()) throw SysError("controller: eventfd");
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  // Blocked here, before any thread exists, so every thread inherits the mask and the
  // signals arrive only through the signalfd.
  if (::pthread_sigmask(SIG_BLOCK, &signals, nullptr) != 0) throw VmmError("controller: sigprocmask");
  signal_fd_.reset(::signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd_.valid()) throw SysError("controller: signalfd");
}

const char* Controller::StateName(State state) {
  switch (state) {
    case State::kAwaitingConfigure: return "awaiting_configure";
    case State::kConfigured: return "configured";
    case State::kRunning: return "running";
    case State::kPaused: return "paused";
    case State::kExited: return "exited";
  }
  return "unknown";
}

int Controller::ExitCodeFor(ExitReason reason) {
  switch (reason) {
    case ExitReason::kGuestShutdown:
    case ExitReason::kGuestReset:
    case ExitReason::kStopped: return 0;
    case ExitReason::kGuestHalt:
    case ExitReason::kGuestCrash:
    case ExitReason::kInternalError:
    case ExitReason::kEntryFailed: return 2;
    case ExitReason::kVmmFault: return 3;
  }
  return 3;
}

void Controller::SendEvent(Json event) {
  if (!control_open_) return;
  if (!channel_.Send(event)) LogWarning("control: could not send an event (controller gone or stalled)");
}

void Controller::OnMachineExit(const MachineExit& exit) {
  {
    std::lock_guard<std::mutex> lock(exit_mutex_);
    if (pending_exit_) return;
    pending_exit_ = exit;
  }
  const uint64_t one = 1;
  ssize_t ignored = ::write(exit_event_.get(), &one, sizeof(one));
  (void)ignored;
}

int Controller::Run() {
  Json hello = Message("hello");
  hello.Set("protocol", kControlProtocolVersion);
  hello.Set("pid", static_cast<int64_t>(::getpid()));
  hello.Set("vmm_build", snapshot::VmmBuild());  // snapshots restore only into this build
  SendEvent(std::move(hello));

  for (;;) {
    pollfd fds[3] = {{exit_event_.get(), POLLIN, 0},
                     {signal_fd_.get(), POLLIN, 0},
                     {control_open_ ? channel_.fd() : -1, POLLIN, 0}};
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      throw SysError("controller: poll");
    }
    if (fds[0].revents & POLLIN) {
      FinishExit();
      return exit_code_;
    }
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo info{};
      if (::read(signal_fd_.get(), &info, sizeof(info)) == sizeof(info)) {
        const std::string detail = std::string("stopped by signal ") + strsignal(static_cast<int>(info.ssi_signo));
        if (machine_ && state_ != State::kConfigured) {
          machine_->Stop({ExitReason::kStopped, detail});
        } else {
          OnMachineExit({ExitReason::kStopped, detail});
        }
      }
    }
    if (control_open_ && (fds[2].revents & (POLLIN | POLLHUP | POLLERR))) {
      std::vector<ControlMessage> messages;
      bool open = true;
      try {
        open = channel_.ReadAvailable(messages);
      } catch (const VmmError& error) {
        // A broken frame: the stream cannot be resynchronised. Say why, then treat it as closed.
        Json failure = Message("error");
        failure.Set("error", error.what());
        SendEvent(std::move(failure));
        LogWarning(error.what());
        open = false;
      }
      for (ControlMessage& message : messages) HandleMessage(message);
      if (!open) {
        control_open_ = false;
        if (state_ == State::kRunning || state_ == State::kPaused) {
          if (stop_on_control_close_) machine_->Stop({ExitReason::kStopped, "the control connection closed"});
        } else if (state_ != State::kExited) {
          OnMachineExit({ExitReason::kStopped, "the control connection closed before start"});
        }
      }
    }
  }
}

void Controller::HandleMessage(ControlMessage& message) {
  Json reply = Message("reply");
  const Json* id = message.body.Find("id");
  reply.Set("id", id != nullptr ? *id : Json());
  const Json* version = message.body.Find("v");
  const Json* type = message.body.Find("type");
  try {
    if (version == nullptr || !version->is_number() || version->as_number() != kControlProtocolVersion)
      throw VmmError("unsupported protocol version (this VMM speaks v" +
                     std::to_string(kControlProtocolVersion) + ")");
    if (type == nullptr || !type->is_string()) throw VmmError("message without a string \"type\"");
    Json result = Dispatch(type->as_string(), message);
    reply.Set("ok", true);
    for (const auto& member : result.as_object()) reply.Set(member.first, member.second);
    SendEvent(std::move(reply));
  } catch (const std::exception& error) {
    reply.Set("ok", false);
    reply.Set("error", error.what());
    SendEvent(std::move(reply));
    return;
  }
  // Events that follow a successful request go after its reply.
  const std::string& name = type->as_string();
  if (name == "start" || name == "pause" || name == "resume") {
    Json event = Message("event");
    event.Set("event", name == "start" ? "started" : name == "pause" ? "paused" : "resumed");
    SendEvent(std::move(event));
  }
}

Json Controller::Dispatch(const std::string& type, ControlMessage& message) {
  Json result = Json::Object();
  auto require = [this, &type](bool ok) {
    if (!ok) throw VmmError("\"" + type + "\" is not allowed in state " + StateName(state_));
  };
  if (type == "configure") {
    require(state_ == State::kAwaitingConfigure);
    const Json* config = message.body.Find("config");
    if (config == nullptr) throw VmmError("configure: missing \"config\"");
    ConfigureRequest request = ParseConfigure(*config, message.fds, channel_.fd());
    auto on_exit = [this](const MachineExit& exit) { OnMachineExit(exit); };
    const bool restoring = request.restore.has_value();
    if (restoring) {
      machine_ = std::make_unique<Machine>(std::move(request.machine), std::move(*request.restore), on_exit);
      Json warnings = Json::Array();
      for (const std::string& warning : machine_->restore_warnings()) warnings.Push(warning);
      result.Set("restored", true);
      result.Set("warnings", std::move(warnings));
    } else {
      machine_ = std::make_unique<Machine>(std::move(request.machine), on_exit);
    }
    kvm_fd_ = std::move(request.kvm);
    exit_record_path_ = request.exit_record_path;
    stop_on_control_close_ = request.stop_on_control_close;
    state_ = State::kConfigured;
    result.Set("boot", machine_->boot_description());
    result.Set("cmdline", machine_->kernel_cmdline());
  } else if (type == "start") {
    require(state_ == State::kConfigured);
    machine_->Start();
    started_at_ms_ = NowMs();
    state_ = State::kRunning;
  } else if (type == "pause") {
    require(state_ == State::kRunning);
    machine_->Pause();
    state_ = State::kPaused;
  } else if (type == "resume") {
    require(state_ == State::kPaused);
    machine_->Resume();
    state_ = State::kRunning;
  } else if (type == "stop") {
    require(state_ != State::kExited);
    if (state_ == State::kRunning || state_ == State::kPaused) {
      machine_->Stop({ExitReason::kStopped, "stopped by the controller"});
    } else {
      OnMachineExit({ExitReason::kStopped, "stopped by the controller before start"});
    }
  } else if (type == "snapshot") {
    require(state_ == State::kPaused);
    result = TakeSnapshot(*machine_, message.body, message.fds, channel_.fd());
  } else if (type == "refresh_disk") {
    // A disk slot's file was rewritten in place (same inode, maybe another size): a pod's slot
    // given to a new container, or a template's slot filled after a restore.
    require(state_ == State::kConfigured || state_ == State::kRunning || state_ == State::kPaused);
    for (const auto& member : message.body.as_object()) {
      if (member.first != "v" && member.first != "id" && member.first != "type" && member.first != "serial")
        throw VmmError("refresh_disk: unknown field \"" + member.first + "\"");
    }
    const Json* serial = message.body.Find("serial");
    if (serial == nullptr || !serial->is_string()) throw VmmError("refresh_disk: missing string \"serial\"");
    const uint64_t bytes = machine_->RefreshDisk(serial->as_string());
    result.Set("capacity_bytes", static_cast<int64_t>(bytes));
  } else if (type == "status") {
    result.Set("state", StateName(state_));
  } else {
    throw VmmError("unknown request type \"" + type + "\"");
  }
  return result;
}

void Controller::FinishExit() {
  MachineExit exit{ExitReason::kVmmFault, "exit without a reason"};
  {
    std::lock_guard<std::mutex> lock(exit_mutex_);
    if (pending_exit_) exit = *pending_exit_;
  }
  if (machine_) {
    machine_->Stop(exit);  // joins the vCPU threads; the first reported exit stands
    machine_.reset();      // frees guest memory, closes every device fd
  }
  state_ = State::kExited;
  exit_code_ = ExitCodeFor(exit.reason);
  Json event = Message("event");
  event.Set("event", "exited");
  event.Set("reason", ExitReasonName(exit.reason));
  event.Set("detail", exit.detail);
  event.Set("exit_code", exit_code_);
  SendEvent(std::move(event));
  LogInfo(std::string("exited: ") + ExitReasonName(exit.reason) + ": " + exit.detail);
  WriteExitRecord(exit, exit_code_);
}

void Controller::WriteExitRecord(const MachineExit& exit, int exit_code) {
  if (exit_record_path_.empty()) return;
  Json record = Json::Object();
  record.Set("v", kControlProtocolVersion);
  record.Set("pid", static_cast<int64_t>(::getpid()));
  record.Set("reason", ExitReasonName(exit.reason));
  record.Set("detail", exit.detail);
  record.Set("exit_code", exit_code);
  record.Set("started_at_ms", started_at_ms_);
  record.Set("exited_at_ms", NowMs());
  const std::string text = record.Serialize() + "\n";
  // Written whole then renamed, so a reader sees the old file or the complete new one.
  const std::string temporary = exit_record_path_ + ".tmp";
  UniqueFd file(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
  if (!file.valid() || ::write(file.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()) ||
      ::fsync(file.get()) != 0 || ::rename(temporary.c_str(), exit_record_path_.c_str()) != 0) {
    LogWarning(SysError("exit record " + exit_record_path_).what());
    ::unlink(temporary.c_str());
  }
}

}  // namespace smolvm
