#include <cstdio>
#include <cstring>

#include "devices/virtio/virtio_device.h"
#include "test_framework.h"

namespace vtest {

namespace {
int g_failures_in_test = 0;
}

std::vector<TestCase>& Registry() {
  static std::vector<TestCase> tests;
  return tests;
}

void RecordFailure(const char* file, int line, const std::string& message) {
  ++g_failures_in_test;
  fprintf(stderr, "    %s:%d: %s\n", file, line, message.c_str());
}

}  // namespace vtest

int main(int argc, char** argv) {
  const char* filter = argc > 1 ? argv[1] : nullptr;
  // Device diagnostics are expected in hostile tests; keep them out of the report unless asked.
  const bool verbose = getenv("VTEST_VERBOSE") != nullptr;
  smolvm::virtio::SetLogSink([verbose](const std::string& line) {
    if (verbose) fprintf(stderr, "      log: %s\n", line.c_str());
  });
  int passed = 0, failed = 0;
  for (const vtest::TestCase& test : vtest::Registry()) {
    if (filter && !strstr(test.name, filter)) continue;
    vtest::g_failures_in_test = 0;
    try {
      test.body();
    } catch (const vtest::RequireFailed&) {
    } catch (const std::exception& e) {
      vtest::RecordFailure(test.name, 0, std::string("uncaught exception: ") + e.what());
    }
    if (vtest::g_failures_in_test == 0) {
      ++passed;
      printf("ok   %s\n", test.name);
    } else {
      ++failed;
      printf("FAIL %s\n", test.name);
    }
    fflush(stdout);
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 && passed > 0 ? 0 : 1;
}
