#include "util/error.h"

#include <cerrno>
#include <cstring>

namespace smolvm {

VmmError SysError(const std::string& what) {
  const int saved_errno = errno;
  return VmmError(what + ": " + std::strerror(saved_errno));
}

}  // namespace smolvm
