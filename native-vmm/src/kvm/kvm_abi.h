// C layouts of KVM's variable-length ioctl arguments, for use from C++.
//
// <linux/kvm.h> declares the trailing arrays of kvm_cpuid2, kvm_msrs, kvm_msr_list (and
// others) with __DECLARE_FLEX_ARRAY, which wraps an empty struct. An empty struct has size 0
// in C but 1 in C++, so from C++ sizeof(kvm_cpuid2) is 12 instead of 8, the array starts 4
// bytes late, and the ioctl numbers — which encode sizeof(arg) — are not the kernel's: real KVM
// answers EINVAL. Every variable-length request in the VMM goes through these types instead.
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace smolvm::kvm_abi {

struct Cpuid2Header {
  uint32_t nent;
  uint32_t padding;
};
struct MsrsHeader {
  uint32_t nmsrs;
  uint32_t pad;
};
struct MsrListHeader {
  uint32_t nmsrs;
};

// kvm_xsave's trailing `extra[]` has the same problem (4100 bytes in C++, 4096 in C).
struct Xsave {
  uint32_t region[1024];
};

static_assert(sizeof(Xsave) == 4096, "kvm_xsave is 4096 bytes in C");
static_assert(sizeof(Cpuid2Header) == 8, "kvm_cpuid2 header is 8 bytes in C");
static_assert(sizeof(MsrsHeader) == 8, "kvm_msrs header is 8 bytes in C");
static_assert(sizeof(MsrListHeader) == 4, "kvm_msr_list header is 4 bytes in C");
static_assert(sizeof(kvm_cpuid_entry2) == 40, "kvm_cpuid_entry2 layout");
static_assert(sizeof(kvm_msr_entry) == 16, "kvm_msr_entry layout");

// The fixed-size state structs a snapshot stores byte for byte: the same sizes from C and C++
// (checked here, so that a header change cannot silently change the snapshot format).
static_assert(sizeof(kvm_regs) == 144, "kvm_regs layout");
static_assert(sizeof(kvm_sregs) == 312, "kvm_sregs layout");
static_assert(sizeof(kvm_fpu) == 416, "kvm_fpu layout");
static_assert(sizeof(kvm_lapic_state) == 1024, "kvm_lapic_state layout");
static_assert(sizeof(kvm_xcrs) == 392, "kvm_xcrs layout");
static_assert(sizeof(kvm_vcpu_events) == 64, "kvm_vcpu_events layout");
static_assert(sizeof(kvm_debugregs) == 128, "kvm_debugregs layout");
static_assert(sizeof(kvm_mp_state) == 4, "kvm_mp_state layout");
static_assert(sizeof(kvm_irqchip) == 520, "kvm_irqchip layout");
static_assert(sizeof(kvm_pit_state2) == 112, "kvm_pit_state2 layout");
static_assert(sizeof(kvm_clock_data) == 48, "kvm_clock_data layout");

// The kernel's ioctl numbers (the same _IOW/_IOWR encodings, with the C sizes).
constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, Cpuid2Header);
constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, MsrsHeader);
constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, Cpuid2Header);
constexpr unsigned long kGetCpuid2 = _IOWR(KVMIO, 0x91, Cpuid2Header);
constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, Xsave);
constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, Xsave);

// A header followed by `count` entries, zeroed and 8-byte aligned, as the kernel reads it.
template <typename Header, typename Entry>
class VarRequest {
 public:
  explicit VarRequest(size_t count)
      : count_(count), storage_((sizeof(Header) + count * sizeof(Entry) + 7) / 8) {}
  Header* header() { return reinterpret_cast<Header*>(storage_.data()); }
  Entry* entries() {
    return reinterpret_cast<Entry*>(reinterpret_cast<unsigned char*>(storage_.data()) + sizeof(Header));
  }
  size_t capacity() const { return count_; }
  void* arg() { return storage_.data(); }

 private:
  size_t count_;
  std::vector<uint64_t> storage_;
};

using CpuidRequest = VarRequest<Cpuid2Header, kvm_cpuid_entry2>;
using MsrsRequest = VarRequest<MsrsHeader, kvm_msr_entry>;
using MsrListRequest = VarRequest<MsrListHeader, uint32_t>;

}  // namespace smolvm::kvm_abi
