// Byte-level helpers for snapshot sections, on top of the length-checked little-endian codec
// the virtio devices already use: strings with a bound, and KVM structs stored byte for byte
// with their size in front (a size that differs from this build's is a clear error).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "devices/virtio/state_codec.h"

namespace smolvm::snapshot {

using virtio::StateReader;
using virtio::StateWriter;

inline void PutString(StateWriter& out, const std::string& text) {
  out.Bytes(std::vector<uint8_t>(text.begin(), text.end()));
}

// A string of at most `max_bytes` (a corrupt length must not allocate gigabytes).
inline std::string GetString(StateReader& in, size_t max_bytes, const char* field) {
  const std::vector<uint8_t> bytes = in.Bytes();
  if (bytes.size() > max_bytes)
    in.Fail(std::string(field) + " is " + std::to_string(bytes.size()) + " bytes, at most " +
            std::to_string(max_bytes) + " allowed");
  return std::string(bytes.begin(), bytes.end());
}

template <typename T>
void PutStruct(StateWriter& out, const T& value) {
  static_assert(std::is_trivially_copyable_v<T>);
  std::vector<uint8_t> bytes(sizeof(T));
  std::memcpy(bytes.data(), &value, sizeof(T));
  out.Bytes(bytes);
}

template <typename T>
T GetStruct(StateReader& in, const char* field) {
  static_assert(std::is_trivially_copyable_v<T>);
  const std::vector<uint8_t> bytes = in.Bytes();
  if (bytes.size() != sizeof(T))
    in.Fail(std::string(field) + " is " + std::to_string(bytes.size()) + " bytes, expected " +
            std::to_string(sizeof(T)));
  T value;
  std::memcpy(&value, bytes.data(), sizeof(T));
  return value;
}

// A bool stored as one byte that must be 0 or 1.
inline bool GetBool(StateReader& in, const char* field) {
  const uint8_t value = in.U8();
  if (value > 1) in.Fail(std::string(field) + " is " + std::to_string(value) + ", not 0 or 1");
  return value == 1;
}

// FNV-1a, 64-bit: the snapshot body checksum and the CPUID fingerprint. Catches corruption and
// mix-ups, not adversaries (a snapshot is as trusted as the files the controller names).
inline uint64_t Fnv1a64(const uint8_t* data, size_t len, uint64_t hash = 0xcbf29ce484222325ULL) {
  for (size_t i = 0; i < len; ++i) {
    hash ^= data[i];
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

std::string Hex64(uint64_t value);

}  // namespace smolvm::snapshot
