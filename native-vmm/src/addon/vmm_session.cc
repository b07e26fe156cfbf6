#include "addon/vmm_session.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <utility>
#include <vector>

namespace smolvm::addon {
namespace {

constexpr size_t kReadChunk = 64 * 1024;
// waitid() on a pidfd (Linux 5.4); glibc 2.36 names it P_PIDFD, older headers do not.
constexpr idtype_t kPidfdIdType = static_cast<idtype_t>(3);

struct ConstructorData {
  Napi::FunctionReference constructor;
};

std::string SignalName(int signal) {
  const char* abbreviation = ::sigabbrev_np(signal);
  return abbreviation ? std::string("SIG") + abbreviation : "signal " + std::to_string(signal);
}

// Posts one message to JS; false once JS is shutting down (the thread should finish).
bool Post(SessionTsfn& tsfn, ThreadMessage message) {
  auto* heap = new ThreadMessage(std::move(message));
  if (tsfn.BlockingCall(heap) != napi_ok) {
    delete heap;
    return false;
  }
  return true;
}

// Reads what the VMM sent; closes any descriptors it tried to pass (it has no business doing
// so). Returns false at EOF or on a broken stream.
bool ReadAvailable(int fd, FrameReader& reader, SessionTsfn& tsfn, bool* broken) {
  char buffer[kReadChunk];
  for (;;) {
    iovec chunk{buffer, sizeof(buffer)};
    char control[CMSG_SPACE(sizeof(int) * kMaxFrameFds)];
    msghdr message{};
    message.msg_iov = &chunk;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof(control);
    const ssize_t got = ::recvmsg(fd, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      return false;  // ECONNRESET and friends: the VMM is gone
    }
    for (cmsghdr* header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
      if (header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_RIGHTS) {
        const size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const auto* fds = reinterpret_cast<const int*>(CMSG_DATA(header));
        for (size_t i = 0; i < count; ++i) ::close(fds[i]);
      }
    }
    if (got == 0) return false;
    reader.Append(buffer, static_cast<size_t>(got));
    try {
      while (auto frame = reader.Next()) {
        ThreadMessage out;
        out.kind = ThreadMessage::Kind::kFrame;
        out.text = std::move(*frame);
        if (!Post(tsfn, std::move(out))) return false;
      }
    } catch (const std::exception& error) {
      *broken = true;
      ThreadMessage out;
      out.kind = ThreadMessage::Kind::kProtocolError;
      out.text = error.what();
      Post(tsfn, std::move(out));
      return false;
    }
  }
}

void RunThread(std::shared_ptr<SessionCore> core, SessionTsfn tsfn) {
  FrameReader reader;
  std::deque<OutgoingFrame> outgoing;
  bool control_open = true;
  bool write_shut = false;
  bool want_shutdown = false;
  bool blocking_reap = false;
  const int control = core->process.control.get();
  for (;;) {
    pollfd fds[3] = {};
    fds[0].fd = control_open ? control : -1;
    fds[0].events = static_cast<short>(POLLIN | (outgoing.empty() ? 0 : POLLOUT));
    fds[1].fd = core->process.pidfd.get();
    fds[1].events = POLLIN;
    fds[2].fd = core->wake.get();
    fds[2].events = POLLIN;
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      // Cannot watch it any more: end it rather than leave JS waiting for news forever.
      ::syscall(SYS_pidfd_send_signal, core->process.pidfd.get(), SIGKILL, nullptr, 0);
      fds[1].revents = POLLIN;
      blocking_reap = true;
    }
    if (blocking_reap) fds[0].revents = fds[2].revents = 0;
    if (fds[2].revents & POLLIN) {
      uint64_t count = 0;
      (void)!::read(core->wake.get(), &count, sizeof(count));
      std::lock_guard<std::mutex> lock(core->mutex);
      if (core->quit) break;
      while (!core->queue.empty()) {
        outgoing.push_back(std::move(core->queue.front()));
        core->queue.pop_front();
      }
      want_shutdown = core->close_requested;
    }
    while (!outgoing.empty()) {
      OutgoingFrame& frame = outgoing.front();
      try {
        if (!control_open) throw std::runtime_error("the control connection to smolvm-vmm is closed");
        if (SendSome(control, frame) == SendStatus::kWouldBlock) break;
      } catch (const std::exception& error) {
        ThreadMessage out;
        out.kind = ThreadMessage::Kind::kSendFailed;
        out.request_id = frame.request_id;
        out.text = error.what();
        Post(tsfn, std::move(out));
      }
      outgoing.pop_front();
    }
    if (want_shutdown && outgoing.empty() && !write_shut) {
      ::shutdown(control, SHUT_WR);
      write_shut = true;
    }
    if (control_open && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      bool broken = false;
      if (!ReadAvailable(control, reader, tsfn, &broken)) {
        control_open = false;
        if (broken) ::syscall(SYS_pidfd_send_signal, core->process.pidfd.get(), SIGKILL, nullptr, 0);
        ThreadMessage out;
        out.kind = ThreadMessage::Kind::kControlClosed;
        Post(tsfn, std::move(out));
      }
    }
    if (fds[1].revents & POLLIN) {
      siginfo_t info{};
      if (::waitid(kPidfdIdType, static_cast<id_t>(core->process.pidfd.get()), &info,
                   WEXITED | (blocking_reap ? 0 : WNOHANG)) != 0 || info.si_pid == 0) {
        continue;  // not ours to reap (or not yet): the pidfd stays readable, poll again
      }
      // The VMM wrote its last frames before exiting: they are in the socket buffer now.
      if (control_open) {
        bool broken = false;
        ReadAvailable(control, reader, tsfn, &broken);
        control_open = false;
        ThreadMessage closed;
        closed.kind = ThreadMessage::Kind::kControlClosed;
        Post(tsfn, std::move(closed));
      }
      ThreadMessage out;
      out.kind = ThreadMessage::Kind::kProcessExit;
      if (info.si_code == CLD_EXITED) {
        out.exit_code = info.si_status;
      } else {
        out.exit_signal = info.si_status;
      }
      Post(tsfn, std::move(out));
      break;
    }
  }
  // Frames never sent: their requests fail, their descriptors close with them.
  for (OutgoingFrame& frame : outgoing) {
    ThreadMessage out;
    out.kind = ThreadMessage::Kind::kSendFailed;
    out.request_id = frame.request_id;
    out.text = "smolvm-vmm exited before the request was sent";
    Post(tsfn, std::move(out));
  }
  tsfn.Release();
}

void FinalizeTsfn(Napi::Env, std::shared_ptr<SessionCore>* data, SessionCore*) {
  std::shared_ptr<SessionCore> core = std::move(*data);
  delete data;
  core->StopThread();
  // Nothing more can arrive: give the descriptors back now rather than at garbage collection.
  // (JS checks process_exited_/control_closed_ first, and Signal checks the pidfd.)
  core->process.control.reset();
  core->process.pidfd.reset();
  core->wake.reset();
  if (core->owner) core->owner->Unref();  // the thread is done: the object may be collected
}

std::string Field(const Napi::Object& object, const char* name) {
  Napi::Value value = object.Get(name);
  return value.IsString() ? value.As<Napi::String>().Utf8Value() : std::string();
}

}  // namespace

void SessionCore::Wake() {
  if (!wake.valid()) return;
  const uint64_t one = 1;
  (void)!::write(wake.get(), &one, sizeof(one));
}

void SessionCore::StopThread() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    quit = true;
  }
  Wake();
  if (thread.joinable()) thread.join();
}

void CallJs(Napi::Env env, Napi::Function, SessionCore* core, ThreadMessage* message) {
  std::unique_ptr<ThreadMessage> owned(message);
  if (env == nullptr || core == nullptr || core->owner == nullptr) return;  // shutting down
  core->owner->OnThreadMessage(env, *owned);
}

Napi::Function VmmSession::Define(Napi::Env env) {
  Napi::Function constructor = DefineClass(env, "VmmSession", {
      InstanceMethod<&VmmSession::Request>("request"),
      InstanceMethod<&VmmSession::Signal>("signal"),
      InstanceMethod<&VmmSession::CloseControl>("closeControl"),
      InstanceAccessor<&VmmSession::GetPid>("pid"),
  });
  auto* data = new ConstructorData{Napi::Persistent(constructor)};
  env.SetInstanceData<ConstructorData>(data);
  return constructor;
}

Napi::Value VmmSession::Spawn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto deferred = Napi::Promise::Deferred::New(env);
  try {
    if (info.Length() < 1 || !info[0].IsObject()) throw std::runtime_error("spawnVmm: expected an options object");
    Napi::Object options = info[0].As<Napi::Object>();
    if (!options.Get("binary").IsString()) throw std::runtime_error("spawnVmm: options.binary must be a string");
    if (!options.Get("onEvent").IsFunction()) throw std::runtime_error("spawnVmm: options.onEvent must be a function");
    int log_fd = -1;
    Napi::Value log = options.Get("logFd");
    if (!log.IsUndefined() && !log.IsNull()) {
      if (!log.IsNumber()) throw std::runtime_error("spawnVmm: options.logFd must be a file descriptor number");
      const double number = log.As<Napi::Number>().DoubleValue();
      if (number < 0 || number > 1 << 30 || number != static_cast<int>(number)) {
        throw std::runtime_error("spawnVmm: options.logFd " + std::to_string(number) + " is not a file descriptor");
      }
      log_fd = static_cast<int>(number);
    }
    // The exec wrapper and its arguments (shim/src/sandbox/vmm-exec.ts), before the VMM's own.
    std::vector<std::string> exec_prefix;
    Napi::Value prefix = options.Get("execPrefix");
    if (!prefix.IsUndefined() && !prefix.IsNull()) {
      if (!prefix.IsArray()) throw std::runtime_error("spawnVmm: options.execPrefix must be an array of strings");
      Napi::Array words = prefix.As<Napi::Array>();
      for (uint32_t i = 0; i < words.Length(); i++) {
        Napi::Value word = words.Get(i);
        if (!word.IsString()) throw std::runtime_error("spawnVmm: options.execPrefix[" + std::to_string(i) + "] is not a string");
        exec_prefix.push_back(word.As<Napi::String>().Utf8Value());
      }
    }
    auto spawned = std::make_unique<SpawnedVmm>(SpawnVmm(Field(options, "binary"), log_fd, exec_prefix));
    auto* data = env.GetInstanceData<ConstructorData>();
    Napi::Object object = data->constructor.New({Napi::External<SpawnedVmm>::New(env, spawned.get())});
    VmmSession* session = Unwrap(object);
    session->Start(env, options.Get("onEvent").As<Napi::Function>(), deferred);
  } catch (const Napi::Error& error) {
    deferred.Reject(error.Value());
  } catch (const std::exception& error) {
    deferred.Reject(Napi::Error::New(env, error.what()).Value());
  }
  return deferred.Promise();
}

VmmSession::VmmSession(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VmmSession>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "VmmSession is created by spawnVmm(), not with new");
  }
  core_ = std::make_shared<SessionCore>();
  core_->process = std::move(*info[0].As<Napi::External<SpawnedVmm>>().Data());
  core_->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!core_->wake.valid()) {
    const int error = errno;
    ::syscall(SYS_pidfd_send_signal, core_->process.pidfd.get(), SIGKILL, nullptr, 0);
    siginfo_t reaped{};
    ::waitid(kPidfdIdType, static_cast<id_t>(core_->process.pidfd.get()), &reaped, WEXITED);
    throw Napi::Error::New(info.Env(), std::string("eventfd: ") + ::strerror(error));
  }
  core_->owner = this;
}

VmmSession::~VmmSession() {
  if (core_) {
    core_->owner = nullptr;
    // Normally the thread finished long ago; at environment teardown this stops it (closing
    // our socket end makes the VMM stop its VM).
    core_->StopThread();
  }
}

void VmmSession::Start(Napi::Env env, Napi::Function on_event, Napi::Promise::Deferred spawn_deferred) {
  on_event_ = Napi::Persistent(on_event);
  spawn_deferred_.emplace(spawn_deferred);
  auto* finalizer_data = new std::shared_ptr<SessionCore>(core_);
  tsfn_ = SessionTsfn::New(env, "smolvm-vmm", 0, 1, core_.get(), FinalizeTsfn, finalizer_data);
  Ref();  // kept alive while the thread can still report something
  core_->thread = std::thread(RunThread, core_, tsfn_);
}

std::string VmmSession::Describe() const {
  return "smolvm-vmm (pid " + std::to_string(core_->process.pid) + ")";
}

void VmmSession::Emit(Napi::Env env, Napi::Value event) {
  try {
    on_event_.Call({event});
  } catch (const Napi::Error& error) {
    // A throwing listener must not take the process down from a thread-safe callback.
    Napi::Value warn = env.Global().Get("process").As<Napi::Object>().Get("emitWarning");
    if (warn.IsFunction()) warn.As<Napi::Function>().Call({Napi::String::New(env, std::string("smolvm-vmm event listener threw: ") + error.Message())});
  }
}

void VmmSession::RejectAllPending(Napi::Env env, const std::string& why) {
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, request] : pending) {
    request.deferred.Reject(Napi::Error::New(env, request.type + ": " + why).Value());
  }
}

void VmmSession::OnFrame(Napi::Env env, const std::string& json) {
  Napi::Object json_namespace = env.Global().Get("JSON").As<Napi::Object>();
  Napi::Value parsed;
  try {
    parsed = json_namespace.Get("parse").As<Napi::Function>().Call(json_namespace, {Napi::String::New(env, json)});
  } catch (const Napi::Error& error) {
    parsed = Napi::Value();
  }
  if (parsed.IsEmpty() || !parsed.IsObject() || parsed.IsArray()) {
    Napi::Object event = Napi::Object::New(env);
    event.Set("type", "error");
    event.Set("error", Describe() + " sent a frame that is not a JSON object: " + json.substr(0, 200));
    Emit(env, event);
    return;
  }
  Napi::Object message = parsed.As<Napi::Object>();
  const std::string type = Field(message, "type");
  if (type == "hello") {
    hello_seen_ = true;
    if (spawn_deferred_) {
      spawn_deferred_->Resolve(Value());
      spawn_deferred_.reset();
    }
  } else if (type == "reply") {
    Napi::Value id = message.Get("id");
    auto found = id.IsNumber() ? pending_.find(id.As<Napi::Number>().Int64Value()) : pending_.end();
    if (found == pending_.end()) {
      Napi::Object event = Napi::Object::New(env);
      event.Set("type", "error");
      event.Set("error", Describe() + " replied to a request it was never sent: " + json.substr(0, 200));
      Emit(env, event);
      return;
    }
    PendingRequest request = std::move(found->second);
    pending_.erase(found);
    if (message.Get("ok").IsBoolean() && message.Get("ok").As<Napi::Boolean>().Value()) {
      request.deferred.Resolve(message);
    } else {
      std::string error = Field(message, "error");
      if (error.empty()) error = "refused without a reason";
      // The VMM usually names the request itself ("configure: kernel: ..."): no double prefix.
      const std::string prefix = request.type + ": ";
      Napi::Error rejection = Napi::Error::New(env, error.rfind(prefix, 0) == 0 ? error : prefix + error);
      rejection.Set("vmmRefused", Napi::Boolean::New(env, true));
      request.deferred.Reject(rejection.Value());
    }
    return;  // replies settle promises; they are not events
  } else if (type == "event" && Field(message, "event") == "exited") {
    exit_summary_ = Field(message, "reason") + ": " + Field(message, "detail");
  }
  Emit(env, message);
}

void VmmSession::OnThreadMessage(Napi::Env env, const ThreadMessage& message) {
  Napi::HandleScope scope(env);
  switch (message.kind) {
    case ThreadMessage::Kind::kFrame:
      OnFrame(env, message.text);
      break;
    case ThreadMessage::Kind::kSendFailed: {
      auto found = pending_.find(message.request_id);
      if (found != pending_.end()) {
        PendingRequest request = std::move(found->second);
        pending_.erase(found);
        request.deferred.Reject(Napi::Error::New(env, request.type + ": " + message.text).Value());
      }
      break;
    }
    case ThreadMessage::Kind::kProtocolError: {
      protocol_error_ = message.text;
      Napi::Object event = Napi::Object::New(env);
      event.Set("type", "error");
      event.Set("error", message.text + " (the VMM was killed)");
      Emit(env, event);
      break;
    }
    case ThreadMessage::Kind::kControlClosed:
      control_closed_ = true;
      RejectAllPending(env, Describe() + " closed the control connection before replying" +
                                (exit_summary_.empty() ? "" : " (" + exit_summary_ + ")"));
      break;
    case ThreadMessage::Kind::kProcessExit: {
      process_exited_ = true;
      control_closed_ = true;
      std::string how = message.exit_signal ? "was killed by " + SignalName(message.exit_signal)
                                            : "exited with code " + std::to_string(message.exit_code);
      if (!protocol_error_.empty()) how += " (" + protocol_error_ + ")";
      RejectAllPending(env, Describe() + " " + how);
      if (spawn_deferred_) {
        spawn_deferred_->Reject(Napi::Error::New(env, Describe() + " " + how + " before its hello" +
                                                     (protocol_error_.empty() ? " (see its log)" : "")).Value());
        spawn_deferred_.reset();
      }
      Napi::Object event = Napi::Object::New(env);
      event.Set("type", "process-exit");
      event.Set("code", message.exit_signal ? env.Null() : Napi::Number::New(env, message.exit_code));
      event.Set("signal", message.exit_signal ? Napi::String::New(env, SignalName(message.exit_signal)) : env.Null());
      Emit(env, event);
      break;
    }
  }
}

Napi::Value VmmSession::Request(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto deferred = Napi::Promise::Deferred::New(env);
  std::string type = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  try {
    if (type.empty()) throw std::runtime_error("request: the first argument must be the request type (a string)");
    if (process_exited_ || control_closed_) {
      throw std::runtime_error(Describe() + " has exited" + (exit_summary_.empty() ? "" : " (" + exit_summary_ + ")"));
    }
    Napi::Object body = Napi::Object::New(env);
    body.Set("v", 1);
    const int64_t id = next_request_id_++;
    body.Set("id", Napi::Number::New(env, static_cast<double>(id)));
    body.Set("type", type);
    if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()) {
      if (!info[1].IsObject() || info[1].IsArray()) throw std::runtime_error("the fields must be an object");
      Napi::Object fields = info[1].As<Napi::Object>();
      Napi::Array names = fields.GetPropertyNames();
      for (uint32_t i = 0; i < names.Length(); ++i) {
        const std::string name = names.Get(i).ToString().Utf8Value();
        if (name == "v" || name == "id" || name == "type") throw std::runtime_error("field \"" + name + "\" is set by the addon");
        body.Set(name, fields.Get(name));
      }
    }
    OutgoingFrame frame;
    frame.request_id = id;
    if (info.Length() > 2 && !info[2].IsUndefined()) {
      if (!info[2].IsArray()) throw std::runtime_error("fds must be an array of file descriptor numbers");
      Napi::Array fds = info[2].As<Napi::Array>();
      if (fds.Length() > kMaxFrameFds) {
        throw std::runtime_error(std::to_string(fds.Length()) + " fds; a frame carries at most " + std::to_string(kMaxFrameFds));
      }
      for (uint32_t i = 0; i < fds.Length(); ++i) {
        Napi::Value value = fds.Get(i);
        const double number = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : -1;
        if (number < 0 || number > 1 << 30 || number != static_cast<int>(number)) {
          throw std::runtime_error("fds[" + std::to_string(i) + "] is not a file descriptor number");
        }
        // Our own copy: the caller may close theirs as soon as this returns.
        const int copy = ::fcntl(static_cast<int>(number), F_DUPFD_CLOEXEC, 3);
        if (copy < 0) {
          throw std::runtime_error("fds[" + std::to_string(i) + "] (" + std::to_string(static_cast<int>(number)) +
                                   ") is not an open file descriptor: " + ::strerror(errno));
        }
        frame.fds.emplace_back(copy);
      }
    }
    Napi::Object json_namespace = env.Global().Get("JSON").As<Napi::Object>();
    Napi::Value text = json_namespace.Get("stringify").As<Napi::Function>().Call(json_namespace, {body});
    if (!text.IsString()) throw std::runtime_error("the request does not serialise to JSON");
    frame.bytes = EncodeFrame(text.As<Napi::String>().Utf8Value());
    pending_.emplace(id, PendingRequest{deferred, type});
    {
      std::lock_guard<std::mutex> lock(core_->mutex);
      core_->queue.push_back(std::move(frame));
    }
    core_->Wake();
  } catch (const Napi::Error& error) {
    deferred.Reject(Napi::Error::New(env, (type.empty() ? "request" : type) + ": " + error.Message()).Value());
  } catch (const std::exception& error) {
    deferred.Reject(Napi::Error::New(env, (type.empty() || std::string(error.what()).rfind("request:", 0) == 0
                                               ? std::string() : type + ": ") + error.what()).Value());
  }
  return deferred.Promise();
}

Napi::Value VmmSession::Signal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "signal: expected a signal number");
  const int signal = info[0].As<Napi::Number>().Int32Value();
  if (signal <= 0 || signal >= NSIG) throw Napi::RangeError::New(env, "signal: " + std::to_string(signal) + " is not a signal number");
  if (process_exited_ || !core_->process.pidfd.valid()) return Napi::Boolean::New(env, false);
  const long result = ::syscall(SYS_pidfd_send_signal, core_->process.pidfd.get(), signal, nullptr, 0);
  return Napi::Boolean::New(env, result == 0);
}

Napi::Value VmmSession::CloseControl(const Napi::CallbackInfo& info) {
  {
    std::lock_guard<std::mutex> lock(core_->mutex);
    core_->close_requested = true;
  }
  core_->Wake();
  return info.Env().Undefined();
}

Napi::Value VmmSession::GetPid(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), core_->process.pid);
}

}  // namespace smolvm::addon
