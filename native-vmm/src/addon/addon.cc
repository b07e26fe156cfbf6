// smolvm's node addon: the shim's typed control surface over smolvm-vmm (see
// shim/src/sandbox/vmm/ for the TypeScript side). Exports:
//   spawnVmm({binary, logFd?, onEvent}) → Promise<VmmSession>
//   probeHost() → Promise<HostProbe>
//   makePipe() → {read, write}
//   PROTOCOL_VERSION
#include <fcntl.h>
#include <napi.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "addon/host_probe.h"
#include "addon/vmm_session.h"

namespace {

// A pipe, both ends close-on-exec (nothing spawned later inherits them): the write end goes to
// a VMM (its log, its serial console), the shim reads the other into a capped log. Node has
// no pipe() of its own; it wraps the read end in a net.Socket.
Napi::Value MakePipe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    throw Napi::Error::New(env, std::string("pipe2: ") + std::strerror(errno));
  }
  Napi::Object ends = Napi::Object::New(env);
  ends.Set("read", Napi::Number::New(env, fds[0]));
  ends.Set("write", Napi::Number::New(env, fds[1]));
  return ends;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("VmmSession", smolvm::addon::VmmSession::Define(env));
  exports.Set("spawnVmm", Napi::Function::New(env, smolvm::addon::VmmSession::Spawn, "spawnVmm"));
  exports.Set("probeHost", Napi::Function::New(env, smolvm::addon::ProbeHost, "probeHost"));
  exports.Set("makePipe", Napi::Function::New(env, MakePipe, "makePipe"));
  exports.Set("PROTOCOL_VERSION", Napi::Number::New(env, 1));
  return exports;
}

}  // namespace

NODE_API_MODULE(smolvm_vmm_addon, Init)
