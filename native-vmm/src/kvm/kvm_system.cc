#include "kvm/kvm_system.h"

#include <cpuid.h>
#include <fcntl.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "kvm/kvm_abi.h"
#include "util/error.h"

namespace smolvm {

KvmSystem::KvmSystem(int kvm_fd, const char* path) {
  if (kvm_fd >= 0) {
    fd_.reset(::fcntl(kvm_fd, F_DUPFD_CLOEXEC, 0));
    if (!fd_.valid()) throw SysError("kvm: dup of the /dev/kvm fd handed in");
  } else {
    fd_.reset(::open(path, O_RDWR | O_CLOEXEC));
    if (!fd_.valid()) throw SysError(std::string("kvm: open ") + path);
  }
  const int version = ::ioctl(fd_.get(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION)
    throw VmmError("kvm: API version " + std::to_string(version) + ", expected " +
                   std::to_string(KVM_API_VERSION));

  RequireExtension(KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY");
  RequireExtension(KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP");
  RequireExtension(KVM_CAP_PIT2, "KVM_CAP_PIT2");
  RequireExtension(KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID");
  RequireExtension(KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT");
  RequireExtension(KVM_CAP_IRQFD, "KVM_CAP_IRQFD");
  RequireExtension(KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD");

  vcpu_mmap_size_ = ::ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (vcpu_mmap_size_ < static_cast<int>(sizeof(kvm_run)))
    throw SysError("kvm: KVM_GET_VCPU_MMAP_SIZE");

  // KVM_GET_SUPPORTED_CPUID fails with E2BIG while the buffer is too small: grow and retry.
  // Some hosts (PVM behind a filtering hypervisor) refuse it outright: the VMM then leaves
  // KVM's default CPUID in place and says so in cpuid_error().
  for (uint32_t capacity = 64; capacity <= 1024; capacity *= 2) {
    kvm_abi::CpuidRequest cpuid(capacity);
    cpuid.header()->nent = capacity;
    if (::ioctl(fd_.get(), kvm_abi::kGetSupportedCpuid, cpuid.arg()) == 0) {
      const uint32_t nent = std::min(cpuid.header()->nent, capacity);
      supported_cpuid_.assign(cpuid.entries(), cpuid.entries() + nent);
      cpuid_error_.clear();
      break;
    }
    cpuid_error_ = SysError("KVM_GET_SUPPORTED_CPUID").what();
    if (errno != E2BIG) break;
  }

  // KVM_GET_MSR_INDEX_LIST: the first call with nmsrs = 0 reports the count (E2BIG).
  kvm_abi::MsrListHeader probe{};
  if (::ioctl(fd_.get(), kvm_abi::kGetMsrIndexList, &probe) != 0 && errno != E2BIG) {
    msr_list_error_ = SysError("KVM_GET_MSR_INDEX_LIST").what();
  } else if (probe.nmsrs > 0 && probe.nmsrs <= 65536) {
    kvm_abi::MsrListRequest list(probe.nmsrs);
    list.header()->nmsrs = probe.nmsrs;
    if (::ioctl(fd_.get(), kvm_abi::kGetMsrIndexList, list.arg()) == 0) {
      const uint32_t n = std::min<uint32_t>(list.header()->nmsrs, probe.nmsrs);
      msr_index_list_.assign(list.entries(), list.entries() + n);
    } else {
      msr_list_error_ = SysError("KVM_GET_MSR_INDEX_LIST").what();
    }
  }

  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  __get_cpuid(0, &eax, &ebx, &ecx, &edx);
  char vendor[13] = {};
  std::memcpy(vendor, &ebx, 4);
  std::memcpy(vendor + 4, &edx, 4);
  std::memcpy(vendor + 8, &ecx, 4);
  host_vendor_ = vendor;
}

int KvmSystem::CheckExtension(long capability) const {
  const int result = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
  return result < 0 ? 0 : result;
}

void KvmSystem::RequireExtension(long capability, const char* name) const {
  if (CheckExtension(capability) <= 0)
    throw VmmError(std::string("kvm: this host's KVM lacks ") + name);
}

}  // namespace smolvm
