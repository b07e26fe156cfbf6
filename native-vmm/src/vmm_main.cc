// smolvm-vmm: one process per microVM. Started by the shim (or the node addon) with a
// connected unix socket:
//   smolvm-vmm --control-fd N   speak the control protocol (src/control/protocol.md) on fd N
//   smolvm-vmm --probe          print what this host's KVM offers, as JSON, and exit
//   smolvm-vmm --version
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "control/controller.h"
#include "control/json.h"
#include "kvm/kvm_system.h"
#include "util/error.h"
#include "util/log.h"

namespace {

constexpr const char* kUsage =
    "usage: smolvm-vmm --control-fd N | --probe | --version\n"
    "  --control-fd N  a connected unix stream socket speaking the smolvm control protocol v1\n"
    "  --probe         print this host's KVM capabilities as JSON\n";

int Probe() {
  smolvm::Json report = smolvm::Json::Object();
  struct stat status {};
  const bool pvm = ::stat("/sys/module/kvm_pvm", &status) == 0;
  report.Set("kvm_pvm_module", pvm);
  try {
    smolvm::KvmSystem system;
    report.Set("kvm", true);
    report.Set("vendor", system.HostVendor());
    report.Set("cpuid_entries", static_cast<uint64_t>(system.SupportedCpuid().size()));
    report.Set("msr_index_list", static_cast<uint64_t>(system.MsrIndexList().size()));
    report.Set("max_vcpus", system.CheckExtension(KVM_CAP_MAX_VCPUS));
    if (!system.cpuid_error().empty()) report.Set("cpuid_error", system.cpuid_error());
    if (!system.msr_list_error().empty()) report.Set("msr_list_error", system.msr_list_error());
    report.Set("intel_vmx_setup", system.IsIntelHost());
  } catch (const smolvm::VmmError& error) {
    report.Set("kvm", false);
    report.Set("error", error.what());
  }
  std::printf("%s\n", report.Serialize().c_str());
  return report.Find("kvm")->as_bool() ? 0 : 1;
}

bool ParseFd(const char* text, int* fd) {
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < 0 || value > 65535) return false;
  *fd = static_cast<int>(value);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a closed log or socket is an error code, not a death
  if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
    std::printf("smolvm-vmm control protocol v%d\n", smolvm::kControlProtocolVersion);
    return 0;
  }
  if (argc == 2 && std::strcmp(argv[1], "--probe") == 0) return Probe();
  int control_fd = -1;
  if (argc != 3 || std::strcmp(argv[1], "--control-fd") != 0 || !ParseFd(argv[2], &control_fd)) {
    std::fputs(kUsage, stderr);
    return 1;
  }
  int socket_type = 0;
  socklen_t length = sizeof(socket_type);
  if (::getsockopt(control_fd, SOL_SOCKET, SO_TYPE, &socket_type, &length) != 0 ||
      socket_type != SOCK_STREAM) {
    std::fprintf(stderr, "smolvm-vmm: --control-fd %d is not a connected stream socket\n", control_fd);
    return 1;
  }
  ::fcntl(control_fd, F_SETFD, FD_CLOEXEC);
  try {
    smolvm::Controller controller{smolvm::UniqueFd(control_fd)};
    return controller.Run();
  } catch (const std::exception& error) {
    smolvm::LogWarning(std::string("fatal: ") + error.what());
    return 3;
  }
}
