#include "addon/host_probe.h"

#include <cpuid.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "kvm/kvm_abi.h"
#include <string>
#include <utility>
#include <vector>

#include "util/fd.h"

namespace smolvm::addon {
namespace {

struct Capability {
  const char* name;
  int id;
};

// The extensions the VMM relies on (or will), by their KVM names.
constexpr Capability kCapabilities[] = {
    {"irqchip", KVM_CAP_IRQCHIP},         {"pit2", KVM_CAP_PIT2},
    {"irqfd", KVM_CAP_IRQFD},             {"ioeventfd", KVM_CAP_IOEVENTFD},
    {"userMemory", KVM_CAP_USER_MEMORY},  {"setTssAddr", KVM_CAP_SET_TSS_ADDR},
    {"extCpuid", KVM_CAP_EXT_CPUID},      {"immediateExit", KVM_CAP_IMMEDIATE_EXIT},
    {"maxVcpus", KVM_CAP_MAX_VCPUS},      {"nrMemslots", KVM_CAP_NR_MEMSLOTS},
    {"syncMmu", KVM_CAP_SYNC_MMU},        {"tscControl", KVM_CAP_TSC_CONTROL},
};

struct ProbeResult {
  bool dev_kvm = false;
  std::string open_error;
  int api_version = -1;
  std::string vendor;
  bool pvm = false;
  std::vector<std::pair<std::string, int>> capabilities;
  int cpuid_entries = -1;
  std::string cpuid_error;
  int msr_count = -1;
  std::string msr_error;
};

std::string HostVendor() {
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return "";
  char name[13] = {};
  std::memcpy(name, &ebx, 4);
  std::memcpy(name + 4, &edx, 4);
  std::memcpy(name + 8, &ecx, 4);
  return name;
}

ProbeResult Probe() {
  ProbeResult result;
  result.vendor = HostVendor();
  struct stat status {};
  result.pvm = ::stat("/sys/module/kvm_pvm", &status) == 0;
  UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm.valid()) {
    result.dev_kvm = errno != ENOENT;
    result.open_error = std::string("open /dev/kvm: ") + std::strerror(errno);
    return result;
  }
  result.dev_kvm = true;
  result.api_version = ::ioctl(kvm.get(), KVM_GET_API_VERSION, 0);
  for (const Capability& capability : kCapabilities) {
    result.capabilities.emplace_back(capability.name, ::ioctl(kvm.get(), KVM_CHECK_EXTENSION, capability.id));
  }
  // Variable-length KVM arguments go through kvm_abi: <linux/kvm.h>'s flexible-array structs
  // have the wrong size (and so the wrong ioctl numbers) in C++.
  constexpr uint32_t kMaxCpuidEntries = 256;
  kvm_abi::CpuidRequest cpuid(kMaxCpuidEntries);
  cpuid.header()->nent = kMaxCpuidEntries;
  if (::ioctl(kvm.get(), kvm_abi::kGetSupportedCpuid, cpuid.arg()) == 0) {
    result.cpuid_entries = static_cast<int>(cpuid.header()->nent);
  } else {
    result.cpuid_error = std::string("KVM_GET_SUPPORTED_CPUID: ") + std::strerror(errno);
  }
  kvm_abi::MsrListHeader probe_list{};
  probe_list.nmsrs = 0;
  // E2BIG with nmsrs set to the real count is the expected answer to an empty list.
  if (::ioctl(kvm.get(), kvm_abi::kGetMsrIndexList, &probe_list) == 0 || errno == E2BIG) {
    result.msr_count = static_cast<int>(probe_list.nmsrs);
  } else {
    result.msr_error = std::string("KVM_GET_MSR_INDEX_LIST: ") + std::strerror(errno);
  }
  return result;
}

class ProbeWorker : public Napi::AsyncWorker {
 public:
  explicit ProbeWorker(Napi::Env env) : Napi::AsyncWorker(env, "smolvm-probe-host"), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override { result_ = Probe(); }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object out = Napi::Object::New(env);
    out.Set("devKvm", result_.dev_kvm);
    if (!result_.open_error.empty()) out.Set("openError", result_.open_error);
    if (result_.api_version >= 0) out.Set("apiVersion", result_.api_version);
    out.Set("vendor", result_.vendor);
    out.Set("pvm", result_.pvm);
    Napi::Object capabilities = Napi::Object::New(env);
    for (const auto& [name, value] : result_.capabilities) capabilities.Set(name, value);
    out.Set("capabilities", capabilities);
    if (result_.cpuid_entries >= 0) out.Set("supportedCpuidEntries", result_.cpuid_entries);
    if (!result_.cpuid_error.empty()) out.Set("cpuidError", result_.cpuid_error);
    if (result_.msr_count >= 0) out.Set("msrIndexCount", result_.msr_count);
    if (!result_.msr_error.empty()) out.Set("msrIndexError", result_.msr_error);
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  ProbeResult result_;
};

}  // namespace

Napi::Value ProbeHost(const Napi::CallbackInfo& info) {
  auto* worker = new ProbeWorker(info.Env());
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace smolvm::addon
