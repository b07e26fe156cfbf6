// The snapshot state file as a container: a self-checking header (magic, format version, the
// host identity the snapshot may be restored on, a random snapshot id shared with its memory
// file) and a body of tagged, versioned, length-prefixed sections under one checksum. Every
// length is checked against the bytes present: a truncated, corrupt or foreign file is a
// VmmError that says which, never a crash or a huge allocation.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "snapshot/host_identity.h"

namespace smolvm::snapshot {

constexpr char kStateMagic[8] = {'S', 'M', 'O', 'L', 'V', 'M', 'S', 'S'};
constexpr uint32_t kStateFormatVersion = 1;
// A state file is small (a few KiB per vCPU and device); anything bigger is not ours.
constexpr uint64_t kMaxStateFileBytes = 64ULL << 20;
constexpr uint32_t kMaxSections = 4096;

using SnapshotId = std::array<uint8_t, 16>;

struct Section {
  uint32_t tag = 0;      // four ASCII characters, e.g. 'VCPU'
  uint32_t version = 0;  // the layout version of this section's payload
  std::vector<uint8_t> payload;
};

struct StateFile {
  HostIdentity identity;
  SnapshotId snapshot_id{};
  std::vector<Section> sections;
};

constexpr uint32_t SectionTag(const char (&name)[5]) {
  return static_cast<uint32_t>(static_cast<uint8_t>(name[0])) |
         static_cast<uint32_t>(static_cast<uint8_t>(name[1])) << 8 |
         static_cast<uint32_t>(static_cast<uint8_t>(name[2])) << 16 |
         static_cast<uint32_t>(static_cast<uint8_t>(name[3])) << 24;
}
std::string SectionName(uint32_t tag);  // "VCPU", or hex for a non-printable tag

std::vector<uint8_t> EncodeStateFile(const StateFile& file);
// Throws VmmError("snapshot state: ..."). Does not judge the identity (CheckRestorable does).
StateFile DecodeStateFile(const std::vector<uint8_t>& bytes);

// Reads a whole state file from `fd` (from offset 0), refusing more than kMaxStateFileBytes.
std::vector<uint8_t> ReadStateBytes(int fd);
// Writes all of `bytes` at offset 0 of `fd` and truncates the file there. Throws SysError.
void WriteAllAt(int fd, const std::vector<uint8_t>& bytes);

// A random snapshot id (getrandom).
SnapshotId NewSnapshotId();
std::string SnapshotIdHex(const SnapshotId& id);

}  // namespace smolvm::snapshot
