// probeHost(): what this host's /dev/kvm offers, answered off the event loop. It names a
// kvm_pvm-provided KVM (which cannot run a stock guest kernel) and the calls it refuses.
#pragma once

#include <napi.h>

namespace smolvm::addon {

// probeHost() → Promise<{devKvm, openError?, apiVersion?, vendor, pvm, capabilities,
// supportedCpuidEntries?, cpuidError?, msrIndexCount?, msrIndexError?}>
Napi::Value ProbeHost(const Napi::CallbackInfo& info);

}  // namespace smolvm::addon
