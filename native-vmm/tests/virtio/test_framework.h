// A tiny test framework: TEST(name) registers a function, CHECK* record failures with their
// location and keep going, REQUIRE* stop the test. main() runs every test (or those whose
// name contains argv[1]) and exits non-zero when any check failed.
#pragma once

#include <cstdint>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace vtest {

struct TestCase {
  const char* name;
  std::function<void()> body;
};
std::vector<TestCase>& Registry();
void RecordFailure(const char* file, int line, const std::string& message);
struct RequireFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct Registrar {
  Registrar(const char* name, std::function<void()> body) {
    Registry().push_back({name, std::move(body)});
  }
};

template <typename T>
void Show(std::ostringstream& out, const T& v) {
  if constexpr (std::is_integral_v<T>) {
    out << +v;  // uint8_t as a number, not a character
  } else {
    out << v;
  }
}
template <typename A, typename B>
std::string Describe(const A& a, const B& b) {
  std::ostringstream out;
  Show(out, a);
  out << " vs ";
  Show(out, b);
  return out.str();
}

}  // namespace vtest

#define VTEST_CONCAT2(a, b) a##b
#define VTEST_CONCAT(a, b) VTEST_CONCAT2(a, b)
#define TEST(name)                                                   \
  static void name();                                                \
  static vtest::Registrar VTEST_CONCAT(registrar_, name)(#name, name); \
  static void name()

#define CHECK(cond) \
  do { if (!(cond)) vtest::RecordFailure(__FILE__, __LINE__, "CHECK(" #cond ")"); } while (0)
#define CHECK_EQ(a, b)                                                                     \
  do {                                                                                     \
    const auto va_ = (a);                                                                    \
    const auto vb_ = (b);                                                                    \
    if (!(va_ == vb_))                                                                     \
      vtest::RecordFailure(__FILE__, __LINE__,                                             \
                           "CHECK_EQ(" #a ", " #b "): " + vtest::Describe(va_, vb_));    \
  } while (0)
#define REQUIRE(cond)                                                         \
  do {                                                                        \
    if (!(cond)) {                                                            \
      vtest::RecordFailure(__FILE__, __LINE__, "REQUIRE(" #cond ")");         \
      throw vtest::RequireFailed("requirement failed");                      \
    }                                                                         \
  } while (0)
