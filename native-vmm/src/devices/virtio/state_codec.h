// Little-endian byte blobs for device snapshots. The reader checks every length: a snapshot
// file is input like any other, and a truncated or foreign one must fail with a clear error.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "util/error.h"

namespace smolvm::virtio {

class StateWriter {
 public:
  void U8(uint8_t v) { bytes_.push_back(v); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void Bytes(const std::vector<uint8_t>& v) {
    U32(static_cast<uint32_t>(v.size()));
    bytes_.insert(bytes_.end(), v.begin(), v.end());
  }
  std::vector<uint8_t> Take() { return std::move(bytes_); }

 private:
  void Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t> bytes_;
};

class StateReader {
 public:
  StateReader(const std::vector<uint8_t>& bytes, std::string what)
      : bytes_(bytes), what_(std::move(what)) {}
  uint8_t U8() { return static_cast<uint8_t>(Le(1)); }
  uint16_t U16() { return static_cast<uint16_t>(Le(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Le(4)); }
  uint64_t U64() { return Le(8); }
  std::vector<uint8_t> Bytes() {
    uint32_t n = U32();
    Need(n);
    std::vector<uint8_t> v(bytes_.begin() + static_cast<std::ptrdiff_t>(pos_),
                           bytes_.begin() + static_cast<std::ptrdiff_t>(pos_ + n));
    pos_ += n;
    return v;
  }
  // A field must hold one of the values we write.
  void Expect(uint32_t actual, uint32_t wanted, const char* field) {
    if (actual != wanted)
      throw VmmError(what_ + " snapshot: " + field + " is " + std::to_string(actual) +
                     ", expected " + std::to_string(wanted));
  }
  void ExpectEnd() {
    if (pos_ != bytes_.size())
      throw VmmError(what_ + " snapshot: " + std::to_string(bytes_.size() - pos_) +
                     " unexpected trailing bytes");
  }
  [[noreturn]] void Fail(const std::string& why) { throw VmmError(what_ + " snapshot: " + why); }

 private:
  void Need(uint64_t n) {
    if (n > bytes_.size() - pos_)
      throw VmmError(what_ + " snapshot: truncated at byte " + std::to_string(pos_));
  }
  uint64_t Le(int n) {
    Need(static_cast<uint64_t>(n));
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t{bytes_[pos_ + static_cast<size_t>(i)]} << (8 * i);
    pos_ += static_cast<size_t>(n);
    return v;
  }
  const std::vector<uint8_t>& bytes_;
  std::string what_;
  size_t pos_ = 0;
};

}  // namespace smolvm::virtio
