// smolvm's node addon: the shim's typed control surface over smolvm-vmm (see
// shim/src/sandbox/vmm/ for the TypeScript side). Exports:
//   spawnVmm({binary, logFd?, onEvent}) → Promise<VmmSession>
//   probeHost() → Promise<HostProbe>
//   PROTOCOL_VERSION
#include <napi.h>

#include "addon/host_probe.h"
#include "addon/vmm_session.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("VmmSession", smolvm::addon::VmmSession::Define(env));
  exports.Set("spawnVmm", Napi::Function::New(env, smolvm::addon::VmmSession::Spawn, "spawnVmm"));
  exports.Set("probeHost", Napi::Function::New(env, smolvm::addon::ProbeHost, "probeHost"));
  exports.Set("PROTOCOL_VERSION", Napi::Number::New(env, 1));
  return exports;
}

}  // namespace

NODE_API_MODULE(smolvm_vmm_addon, Init)
