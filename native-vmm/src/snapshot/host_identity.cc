#include "snapshot/host_identity.h"

#include <elf.h>
#include <link.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>

#include "kvm/kvm_system.h"
#include "snapshot/codec.h"
#include "util/error.h"

namespace smolvm::snapshot {
namespace {

constexpr const char* kVmmVersion = "smolvm-vmm 0.1 snapshot-format 1";

struct BuildIdSearch {
  uintptr_t code_address;
  std::string build_id;  // hex
};

// dl_iterate_phdr callback: finds the object whose PT_LOAD segments hold `code_address` and
// reads its NT_GNU_BUILD_ID note.
int FindBuildId(dl_phdr_info* info, size_t, void* data) {
  auto* search = static_cast<BuildIdSearch*>(data);
  bool contains = false;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& phdr = info->dlpi_phdr[i];
    const uintptr_t start = info->dlpi_addr + phdr.p_vaddr;
    if (phdr.p_type == PT_LOAD && search->code_address >= start &&
        search->code_address < start + phdr.p_memsz)
      contains = true;
  }
  if (!contains) return 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& phdr = info->dlpi_phdr[i];
    if (phdr.p_type != PT_NOTE) continue;
    const auto* note = reinterpret_cast<const uint8_t*>(info->dlpi_addr + phdr.p_vaddr);
    size_t offset = 0;
    while (offset + sizeof(ElfW(Nhdr)) <= phdr.p_memsz) {
      ElfW(Nhdr) header;
      std::memcpy(&header, note + offset, sizeof(header));
      const size_t name_size = (header.n_namesz + 3) & ~size_t{3};
      const size_t desc_size = (header.n_descsz + 3) & ~size_t{3};
      const size_t desc_offset = offset + sizeof(header) + name_size;
      if (desc_offset + header.n_descsz > phdr.p_memsz) break;
      if (header.n_type == NT_GNU_BUILD_ID && header.n_namesz == 4 &&
          std::memcmp(note + offset + sizeof(header), "GNU", 4) == 0) {
        for (uint32_t b = 0; b < header.n_descsz; ++b) {
          char hex[3];
          std::snprintf(hex, sizeof(hex), "%02x", note[desc_offset + b]);
          search->build_id += hex;
        }
        return 1;
      }
      offset = desc_offset + desc_size;
    }
  }
  return 1;  // the right object, without a build id
}

uint32_t Masked(const kvm_cpuid_entry2& entry, int reg) {
  uint32_t eax = entry.eax, ebx = entry.ebx, ecx = entry.ecx, edx = entry.edx;
  switch (entry.function) {
    case 0x1:
      ebx &= 0x00ffffffu;  // initial APIC id of the core the ioctl ran on
      break;
    case 0xb:
    case 0x1f:
      edx = 0;  // x2APIC id
      break;
    case 0x8000001e:
      eax = ebx = ecx = 0;  // AMD extended APIC id, core id, node id
      break;
    default:
      break;
  }
  switch (reg) {
    case 0: return eax;
    case 1: return ebx;
    case 2: return ecx;
    default: return edx;
  }
}

}  // namespace

std::string Hex64(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(value));
  return text;
}

const std::string& VmmBuild() {
  static const std::string build = [] {
    BuildIdSearch search{reinterpret_cast<uintptr_t>(&FindBuildId), ""};
    dl_iterate_phdr(FindBuildId, &search);
    return std::string(kVmmVersion) + " build-id " +
           (search.build_id.empty() ? std::string("none") : search.build_id);
  }();
  return build;
}

std::string HostKind() {
  struct stat status {};
  return ::stat("/sys/module/kvm_pvm", &status) == 0 ? "pvm" : "hardware";
}

uint64_t CpuidHash(const std::vector<kvm_cpuid_entry2>& entries, const std::string& vendor) {
  uint64_t hash = Fnv1a64(reinterpret_cast<const uint8_t*>(vendor.data()), vendor.size());
  for (const kvm_cpuid_entry2& entry : entries) {
    const uint32_t words[7] = {entry.function, entry.index, entry.flags, Masked(entry, 0),
                               Masked(entry, 1), Masked(entry, 2), Masked(entry, 3)};
    hash = Fnv1a64(reinterpret_cast<const uint8_t*>(words), sizeof(words), hash);
  }
  return hash;
}

HostIdentity CurrentHostIdentity(const KvmSystem& system) {
  HostIdentity identity;
  identity.vmm_build = VmmBuild();
  identity.host_kind = HostKind();
  identity.cpuid_hash = CpuidHash(system.SupportedCpuid(), system.HostVendor());
  return identity;
}

void CheckRestorable(const HostIdentity& snapshot, const HostIdentity& host) {
  if (snapshot.vmm_build != host.vmm_build)
    throw VmmError("restore refused: the snapshot was taken by VMM build \"" + snapshot.vmm_build +
                   "\"; this is \"" + host.vmm_build + "\" (snapshots restore only into the build that took them)");
  if (snapshot.host_kind != host.host_kind)
    throw VmmError("restore refused: the snapshot was taken on a " + snapshot.host_kind + " KVM host; this host is " +
                   host.host_kind + " (never restored across host kinds)");
  if (snapshot.cpuid_hash != host.cpuid_hash)
    throw VmmError("restore refused: the snapshot was taken on a host with CPUID hash " + Hex64(snapshot.cpuid_hash) +
                   "; this host's is " + Hex64(host.cpuid_hash) +
                   " (the guest would run on CPU features it did not see at boot)");
}

}  // namespace smolvm::snapshot
