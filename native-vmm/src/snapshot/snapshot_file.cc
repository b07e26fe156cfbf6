#include "snapshot/snapshot_file.h"

#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "snapshot/codec.h"
#include "util/error.h"

namespace smolvm::snapshot {
namespace {

constexpr size_t kMaxBuildBytes = 256;
constexpr size_t kMaxHostKindBytes = 32;

}  // namespace

std::string SectionName(uint32_t tag) {
  std::string name;
  for (int i = 0; i < 4; ++i) {
    const char c = static_cast<char>((tag >> (8 * i)) & 0xff);
    if (c < 0x20 || c > 0x7e) return "0x" + Hex64(tag).substr(8);
    name += c;
  }
  return name;
}

std::vector<uint8_t> EncodeStateFile(const StateFile& file) {
  StateWriter body;
  for (const Section& section : file.sections) {
    body.U32(section.tag);
    body.U32(section.version);
    body.Bytes(section.payload);
  }
  const std::vector<uint8_t> body_bytes = body.Take();

  StateWriter header;
  PutString(header, file.identity.vmm_build);
  PutString(header, file.identity.host_kind);
  header.U64(file.identity.cpuid_hash);
  header.Bytes(std::vector<uint8_t>(file.snapshot_id.begin(), file.snapshot_id.end()));
  header.U32(static_cast<uint32_t>(file.sections.size()));
  header.U64(body_bytes.size());
  header.U64(Fnv1a64(body_bytes.data(), body_bytes.size()));

  StateWriter out;
  for (char c : kStateMagic) out.U8(static_cast<uint8_t>(c));
  out.U32(kStateFormatVersion);
  out.Bytes(header.Take());  // length-prefixed
  std::vector<uint8_t> bytes = out.Take();
  bytes.insert(bytes.end(), body_bytes.begin(), body_bytes.end());
  return bytes;
}

StateFile DecodeStateFile(const std::vector<uint8_t>& bytes) {
  const std::string what = "state file";  // StateReader says "<what> snapshot: <why>"
  if (bytes.size() < sizeof(kStateMagic) ||
      std::memcmp(bytes.data(), kStateMagic, sizeof(kStateMagic)) != 0)
    throw VmmError(what + " snapshot: not a smolvm snapshot state file (bad magic)");
  // Magic, version and the length-prefixed header: parsed from a prefix so that the body's
  // offset is known exactly.
  StateReader prefix(bytes, what);
  for (size_t i = 0; i < sizeof(kStateMagic); ++i) prefix.U8();
  const uint32_t version = prefix.U32();
  if (version != kStateFormatVersion)
    prefix.Fail("format version " + std::to_string(version) + ", this VMM reads version " +
                std::to_string(kStateFormatVersion));
  const std::vector<uint8_t> header_bytes = prefix.Bytes();
  const size_t body_offset = sizeof(kStateMagic) + 4 + 4 + header_bytes.size();

  StateReader header(header_bytes, what + " header");
  StateFile file;
  file.identity.vmm_build = GetString(header, kMaxBuildBytes, "vmm build");
  file.identity.host_kind = GetString(header, kMaxHostKindBytes, "host kind");
  file.identity.cpuid_hash = header.U64();
  const std::vector<uint8_t> id = header.Bytes();
  if (id.size() != file.snapshot_id.size()) header.Fail("snapshot id is not 16 bytes");
  std::memcpy(file.snapshot_id.data(), id.data(), id.size());
  const uint32_t section_count = header.U32();
  const uint64_t body_length = header.U64();
  const uint64_t body_checksum = header.U64();
  header.ExpectEnd();
  if (section_count > kMaxSections)
    header.Fail(std::to_string(section_count) + " sections is too many");

  // The body must be exactly body_length bytes with the right checksum before a single
  // section is believed.
  const uint64_t present = bytes.size() - body_offset;
  if (present < body_length)
    throw VmmError(what + " snapshot: truncated: the body should be " + std::to_string(body_length) +
                   " bytes, " + std::to_string(present) + " present");
  if (present > body_length)
    throw VmmError(what + " snapshot: " + std::to_string(present - body_length) +
                   " unexpected bytes after the body");
  const std::vector<uint8_t> body(bytes.begin() + static_cast<std::ptrdiff_t>(body_offset), bytes.end());
  if (Fnv1a64(body.data(), body.size()) != body_checksum)
    throw VmmError(what + " snapshot: body checksum mismatch: the file is corrupt");
  StateReader sections(body, what + " body");
  for (uint32_t i = 0; i < section_count; ++i) {
    Section section;
    section.tag = sections.U32();
    section.version = sections.U32();
    section.payload = sections.Bytes();
    file.sections.push_back(std::move(section));
  }
  sections.ExpectEnd();
  return file;
}

std::vector<uint8_t> ReadStateBytes(int fd) {
  struct stat status {};
  if (::fstat(fd, &status) != 0) throw SysError("snapshot state: fstat");
  if (!S_ISREG(status.st_mode)) throw VmmError("snapshot state: not a regular file");
  if (static_cast<uint64_t>(status.st_size) > kMaxStateFileBytes)
    throw VmmError("snapshot state: " + std::to_string(status.st_size) + " bytes is more than the " +
                   std::to_string(kMaxStateFileBytes) + "-byte limit of a state file");
  std::vector<uint8_t> bytes(static_cast<size_t>(status.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::pread(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw SysError("snapshot state: read");
    if (n == 0) break;  // shrank while reading: what we have is what we judge
    done += static_cast<size_t>(n);
  }
  bytes.resize(done);
  return bytes;
}

void WriteAllAt(int fd, const std::vector<uint8_t>& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::pwrite(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw SysError("snapshot: write");
    done += static_cast<size_t>(n);
  }
  if (::ftruncate(fd, static_cast<off_t>(bytes.size())) != 0) throw SysError("snapshot: truncate");
}

SnapshotId NewSnapshotId() {
  SnapshotId id{};
  size_t done = 0;
  while (done < id.size()) {
    const ssize_t n = ::getrandom(id.data() + done, id.size() - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw SysError("snapshot: getrandom");
    done += static_cast<size_t>(n);
  }
  return id;
}

std::string SnapshotIdHex(const SnapshotId& id) {
  std::string text;
  for (uint8_t byte : id) {
    char hex[3];
    std::snprintf(hex, sizeof(hex), "%02x", byte);
    text += hex;
  }
  return text;
}

}  // namespace smolvm::snapshot
