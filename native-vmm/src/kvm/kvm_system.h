// The host side of KVM: /dev/kvm, its API version and the capabilities, CPUID and MSR lists
// that every VM and vCPU of this host derives from.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

#include "util/fd.h"

namespace smolvm {

class KvmSystem {
 public:
  // Opens /dev/kvm (or adopts an fd handed in by a jailer when `kvm_fd` >= 0) and checks the
  // API version and the capabilities the VMM cannot do without. Throws VmmError.
  explicit KvmSystem(int kvm_fd = -1, const char* path = "/dev/kvm");

  int fd() const { return fd_.get(); }
  // KVM_CHECK_EXTENSION: 0 when absent, else a capability-specific positive value.
  int CheckExtension(long capability) const;
  int VcpuMmapSize() const { return vcpu_mmap_size_; }
  // Empty when the host refused the query (see cpuid_error / msr_list_error).
  const std::vector<kvm_cpuid_entry2>& SupportedCpuid() const { return supported_cpuid_; }
  const std::vector<uint32_t>& MsrIndexList() const { return msr_index_list_; }
  const std::string& cpuid_error() const { return cpuid_error_; }
  const std::string& msr_list_error() const { return msr_list_error_; }
  // The host CPU vendor string from CPUID leaf 0 ("GenuineIntel", "AuthenticAMD", ...).
  const std::string& HostVendor() const { return host_vendor_; }
  bool IsIntelHost() const { return host_vendor_ == "GenuineIntel"; }

 private:
  void RequireExtension(long capability, const char* name) const;
  UniqueFd fd_;
  int vcpu_mmap_size_ = 0;
  std::vector<kvm_cpuid_entry2> supported_cpuid_;
  std::vector<uint32_t> msr_index_list_;
  std::string host_vendor_;
  std::string cpuid_error_;
  std::string msr_list_error_;
};

}  // namespace smolvm
