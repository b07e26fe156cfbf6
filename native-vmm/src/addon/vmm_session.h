// One running smolvm-vmm as a JS object. A background thread owns the control socket and the
// pidfd: it sends queued requests (with their fds, SCM_RIGHTS), cuts the VMM's frames and
// notices the process's exit; everything it learns reaches JS through a thread-safe function,
// in order. JS only ever queues work and settles promises: nothing blocks the event loop.
#pragma once

#include <napi.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "addon/frame_io.h"
#include "addon/spawn.h"
#include "util/fd.h"

namespace smolvm::addon {

class VmmSession;

// What the thread tells JS.
struct ThreadMessage {
  enum class Kind { kFrame, kSendFailed, kProtocolError, kControlClosed, kProcessExit };
  Kind kind = Kind::kFrame;
  std::string text;        // frame JSON, or the error
  int64_t request_id = 0;  // kSendFailed
  int exit_code = -1;      // kProcessExit: the exit status, or -1 when killed by a signal
  int exit_signal = 0;     // kProcessExit: the signal that killed it, or 0
};

// State shared by the JS object, the thread and the thread-safe function's finalizer. It
// outlives whichever of them goes first.
struct SessionCore {
  SpawnedVmm process;
  UniqueFd wake;  // eventfd: JS → thread ("look at the queue")
  std::thread thread;
  std::mutex mutex;
  std::deque<OutgoingFrame> queue;  // guarded by mutex
  bool close_requested = false;     // guarded by mutex
  bool quit = false;                // guarded by mutex
  VmmSession* owner = nullptr;      // JS thread only; null once the object is gone

  void Wake();
  void StopThread();  // JS thread: ask the thread to finish and join it
};

void CallJs(Napi::Env env, Napi::Function unused, SessionCore* core, ThreadMessage* message);
using SessionTsfn = Napi::TypedThreadSafeFunction<SessionCore, ThreadMessage, CallJs>;

class VmmSession : public Napi::ObjectWrap<VmmSession> {
 public:
  static Napi::Function Define(Napi::Env env);
  // spawnVmm({binary, logFd?, onEvent}) → Promise<VmmSession>, settled by the VMM's hello
  // (or its exit before one).
  static Napi::Value Spawn(const Napi::CallbackInfo& info);

  explicit VmmSession(const Napi::CallbackInfo& info);
  ~VmmSession() override;

  void OnThreadMessage(Napi::Env env, const ThreadMessage& message);

 private:
  struct PendingRequest {
    Napi::Promise::Deferred deferred;
    std::string type;
  };

  // request(type, fields?, fds?) → Promise<reply>; rejects with the VMM's error when ok:false.
  Napi::Value Request(const Napi::CallbackInfo& info);
  // signal(signo) → true if delivered (through the pidfd: never a recycled pid).
  Napi::Value Signal(const Napi::CallbackInfo& info);
  // closeControl(): the VMM sees EOF (and stops, unless configured to continue).
  Napi::Value CloseControl(const Napi::CallbackInfo& info);
  Napi::Value GetPid(const Napi::CallbackInfo& info);

  void Start(Napi::Env env, Napi::Function on_event, Napi::Promise::Deferred spawn_deferred);
  void Emit(Napi::Env env, Napi::Value event);
  void OnFrame(Napi::Env env, const std::string& json);
  void RejectAllPending(Napi::Env env, const std::string& why);
  std::string Describe() const;

  std::shared_ptr<SessionCore> core_;
  SessionTsfn tsfn_;
  Napi::FunctionReference on_event_;
  std::optional<Napi::Promise::Deferred> spawn_deferred_;
  std::map<int64_t, PendingRequest> pending_;
  int64_t next_request_id_ = 1;
  bool hello_seen_ = false;
  bool control_closed_ = false;
  bool process_exited_ = false;
  std::string exit_summary_;
  std::string protocol_error_;  // the VMM broke the framing: why it was killed  // from the VMM's `exited` event, for later error messages
};

}  // namespace smolvm::addon
