// What a snapshot may only be restored on: the same VMM build (the state layouts of every
// component are this build's), the same host kind (a PVM host and a hardware-virtualization
// host run guests differently), and the same CPUID (the guest saw these CPU features and
// uses them without asking again).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

namespace smolvm {
class KvmSystem;
}

namespace smolvm::snapshot {

struct HostIdentity {
  std::string vmm_build;  // "smolvm-vmm 0.1 snapshot-format 1 build-id <hex>"
  std::string host_kind;  // "pvm" or "hardware"
  uint64_t cpuid_hash = 0;
};

// This process's VMM build: a version plus the ELF build id of the object this code is linked
// into (changes with every change to the code), computed once.
const std::string& VmmBuild();

// "pvm" when /dev/kvm comes from the kvm_pvm module, else "hardware".
std::string HostKind();

// FNV-1a over the host's supported CPUID entries (function, index, flags, registers), with the
// per-CPU fields (initial APIC id, x2APIC id, AMD core/node ids) masked out so that every core
// of one host gives the same value. With no supported CPUID from the host (refused), the hash
// covers the vendor string alone.
uint64_t CpuidHash(const std::vector<kvm_cpuid_entry2>& entries, const std::string& vendor);

HostIdentity CurrentHostIdentity(const KvmSystem& system);

// Throws VmmError naming what differs when `snapshot` may not be restored on `host`.
void CheckRestorable(const HostIdentity& snapshot, const HostIdentity& host);

}  // namespace smolvm::snapshot
