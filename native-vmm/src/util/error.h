#pragma once

#include <stdexcept>
#include <string>

namespace smolvm {

// A VMM failure with a message that names what failed and why (errno text included).
class VmmError : public std::runtime_error {
 public:
  explicit VmmError(const std::string& what) : std::runtime_error(what) {}
};

// "<what>: <strerror(errno)>"
VmmError SysError(const std::string& what);

}  // namespace smolvm
