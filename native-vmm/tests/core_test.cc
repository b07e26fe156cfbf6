// Unit tests of the VMM core that need no /dev/kvm: guest-memory bounds, the device bus, the
// serial port and i8042, the MP table, the kernel loaders on hostile files, JSON, the framed
// control channel with SCM_RIGHTS, and configure validation. Prints "N passed, N failed".
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asm/bootparam.h>
#include <elf.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "boot/image_file.h"
#include "boot/kernel_loader.h"
#include "boot/layout.h"
#include "boot/linux_boot.h"
#include "boot/mptable.h"
#include "control/channel.h"
#include "control/configure.h"
#include "control/json.h"
#include "devices/bus.h"
#include "devices/i8042.h"
#include "devices/serial.h"
#include "memory/guest_memory.h"
#include "util/error.h"

using namespace smolvm;

// snapshot_test.cc
void RunSnapshotTests(const std::function<void(const char*, const std::function<void()>&)>& run);

namespace {

int g_passed = 0, g_failed = 0;
std::string g_current;

#define CHECK(condition)                                                                  \
  do {                                                                                    \
    if (!(condition)) throw std::runtime_error(std::string(__FILE__ ":") +                \
                                               std::to_string(__LINE__) + ": " #condition); \
  } while (0)

template <typename F>
std::string ErrorOf(F&& action) {
  try {
    action();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "";
}

void Run(const char* name, const std::function<void()>& test) {
  try {
    test();
    ++g_passed;
    std::printf("ok   %s\n", name);
  } catch (const std::exception& error) {
    ++g_failed;
    std::printf("FAIL %s: %s\n", name, error.what());
  }
}

UniqueFd MemFile(const std::vector<uint8_t>& bytes) {
  UniqueFd fd(::memfd_create("test-file", MFD_CLOEXEC));
  if (!bytes.empty() && ::write(fd.get(), bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size()))
    throw std::runtime_error("memfd write");
  return fd;
}

struct CountingIrq : IrqLine {
  int count = 0;
  void Trigger() override { ++count; }
};

struct RecordingDevice : BusDevice {
  uint64_t last_offset = ~0ULL;
  void Read(uint64_t offset, uint8_t* data, uint32_t len) override {
    last_offset = offset;
    std::memset(data, 0x5a, len);
  }
  void Write(uint64_t offset, const uint8_t*, uint32_t) override { last_offset = offset; }
};

std::vector<uint8_t> MinimalElf(uint64_t paddr, uint64_t filesz, uint64_t memsz) {
  std::vector<uint8_t> file(0x1000 + filesz, 0x90);
  Elf64_Ehdr header{};
  std::memcpy(header.e_ident, ELFMAG, SELFMAG);
  header.e_ident[EI_CLASS] = ELFCLASS64;
  header.e_ident[EI_DATA] = ELFDATA2LSB;
  header.e_type = ET_EXEC;
  header.e_machine = EM_X86_64;
  header.e_entry = paddr;
  header.e_phoff = sizeof(Elf64_Ehdr);
  header.e_phentsize = sizeof(Elf64_Phdr);
  header.e_phnum = 1;
  Elf64_Phdr load{};
  load.p_type = PT_LOAD;
  load.p_offset = 0x1000;
  load.p_paddr = paddr;
  load.p_filesz = filesz;
  load.p_memsz = memsz;
  std::memcpy(file.data(), &header, sizeof(header));
  std::memcpy(file.data() + sizeof(header), &load, sizeof(load));
  return file;
}

}  // namespace

int main() {
  Run("guest memory: regions around the MMIO hole", [] {
    auto small = GuestMemory::Create(64 << 20);
    CHECK(small->regions().size() == 1);
    auto large = GuestMemory::Create(kMmioHoleStart + (1ULL << 30));
    CHECK(large->regions().size() == 2);
    CHECK(large->regions()[1].guest_base == kMmioHoleEnd);
    CHECK(large->regions()[1].size == (1ULL << 30));
    CHECK(large->IsValidRange(kMmioHoleEnd, 4096));
    CHECK(!large->IsValidRange(kMmioHoleStart, 1));
    CHECK(!large->IsValidRange(kMmioHoleStart - 1, 2));  // straddles into the hole
  });

  Run("guest memory: overflow-safe range checks", [] {
    auto memory = GuestMemory::Create(1 << 20);
    CHECK(memory->IsValidRange(0, 1 << 20));
    CHECK(!memory->IsValidRange(0, (1 << 20) + 1));
    CHECK(!memory->IsValidRange(1, ~0ULL));
    CHECK(!memory->IsValidRange(~0ULL, 2));
    CHECK(!memory->IsValidRange((1 << 20) - 4, 8));
    CHECK(memory->IsValidRange((1 << 20), 0));
    uint32_t value = 0x12345678;
    CHECK(memory->WriteObj<uint32_t>(0x1000, value));
    CHECK(memory->ReadObj<uint32_t>(0x1000).value() == value);
    CHECK(!memory->ReadObj<uint64_t>((1 << 20) - 4).has_value());
    CHECK(!ErrorOf([] { GuestMemory::Create(4095); }).empty());
    CHECK(!ErrorOf([] { GuestMemory::Create(0); }).empty());
  });

  Run("bus: overlapping ranges refused, dispatch by offset, unclaimed reads all-ones", [] {
    Bus bus;
    auto device = std::make_shared<RecordingDevice>();
    CHECK(bus.Insert(device, 0x100, 0x10));
    CHECK(!bus.Insert(device, 0x10f, 1));
    CHECK(!bus.Insert(device, 0xf8, 0x10));
    CHECK(!bus.Insert(device, 0, 0));
    CHECK(!bus.Insert(device, ~0ULL - 1, 4));
    CHECK(bus.Insert(device, 0x110, 1));
    uint8_t data[4];
    CHECK(bus.Read(0x104, data, 4) && device->last_offset == 4 && data[0] == 0x5a);
    CHECK(!bus.Read(0x200, data, 4) && data[0] == 0xff && data[3] == 0xff);
    CHECK(!bus.Write(0xff, data, 1));
  });

  Run("serial: output, scratch, IER/IIR THRE interrupt, loopback MSR", [] {
    int pipe_fds[2];
    CHECK(::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) == 0);
    UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
    auto irq = std::make_shared<CountingIrq>();
    Serial serial(irq, write_end.get());
    const uint8_t byte = 'A';
    serial.Write(0, &byte, 1);
    char out[8] = {};
    CHECK(::read(read_end.get(), out, sizeof(out)) == 1 && out[0] == 'A');
    uint8_t value = 0x5a;
    serial.Write(7, &value, 1);
    value = 0;
    serial.Read(7, &value, 1);
    CHECK(value == 0x5a);
    CHECK(irq->count == 0);
    value = 0x02;  // enable THRE interrupt: THR is empty, so it fires
    serial.Write(1, &value, 1);
    CHECK(irq->count == 1);
    serial.Read(2, &value, 1);
    CHECK((value & 0x0f) == 0x02);
    serial.Read(2, &value, 1);
    CHECK((value & 0x0f) == 0x01);  // acknowledged by the read
    serial.Read(5, &value, 1);
    CHECK(value & 0x20);
    value = 0x10 | 0x01;  // loopback + DTR
    serial.Write(4, &value, 1);
    serial.Read(6, &value, 1);
    CHECK(value == 0x20);  // DSR mirrors DTR
    serial.Enqueue("hi");
    serial.Read(5, &value, 1);
    CHECK(value & 0x01);
    serial.Read(0, &value, 1);
    CHECK(value == 'h');
  });

  Run("i8042: 0xFE on the command port resets, other commands do not", [] {
    int resets = 0;
    I8042 controller([&resets] { ++resets; });
    uint8_t value = 0x20;
    controller.Write(4, &value, 1);
    CHECK(resets == 0);
    controller.Read(4, &value, 1);
    CHECK(value & 0x01);  // output buffer full with the command byte
    value = 0xfe;
    controller.Write(4, &value, 1);
    CHECK(resets == 1);
  });

  Run("mptable: signatures, checksums, entries", [] {
    auto memory = GuestMemory::Create(16 << 20);
    const uint64_t size = WriteMpTable(*memory, kMpTableAddress, 4, 23);
    const uint8_t* base = memory->Slice(kMpTableAddress, size);
    CHECK(std::memcmp(base, "_MP_", 4) == 0);
    uint8_t sum = 0;
    for (int i = 0; i < 16; ++i) sum = static_cast<uint8_t>(sum + base[i]);
    CHECK(sum == 0);
    const uint8_t* table = base + 16;
    CHECK(std::memcmp(table, "PCMP", 4) == 0);
    uint16_t length = 0, entries = 0;
    std::memcpy(&length, table + 4, 2);
    std::memcpy(&entries, table + 34, 2);
    sum = 0;
    for (int i = 0; i < length; ++i) sum = static_cast<uint8_t>(sum + table[i]);
    CHECK(sum == 0);
    CHECK(entries == 4 + 1 + 1 + 24 + 2);
    CHECK(table[44] == 0 && table[44 + 1] == 0 && (table[44 + 3] & 2));  // CPU 0 is the BSP
    CHECK(!ErrorOf([&] { WriteMpTable(*memory, kMpTableAddress, 33, 23); }).empty());
    CHECK(!ErrorOf([&] { WriteMpTable(*memory, kMpTableAddress, 1, 24); }).empty());
  });

  Run("kernel loader: good ELF, then hostile ones", [] {
    auto memory = GuestMemory::Create(16 << 20);
    {
      UniqueFd fd = MemFile(MinimalElf(0x100000, 16, 64));
      const LoadedKernel kernel = LoadKernel(*memory, ImageFile(fd.get(), "kernel"));
      CHECK(kernel.entry64 == 0x100000 && kernel.end == 0x100040 && !kernel.pvh_entry);
      CHECK(memory->ReadObj<uint8_t>(0x100000).value() == 0x90);
      CHECK(memory->ReadObj<uint8_t>(0x100020).value() == 0);  // bss zeroed
    }
    auto expect = [&](std::vector<uint8_t> file, const char* message) {
      UniqueFd fd = MemFile(file);
      const std::string error = ErrorOf([&] { LoadKernel(*memory, ImageFile(fd.get(), "kernel")); });
      if (error.find(message) == std::string::npos)
        throw std::runtime_error(std::string("expected \"") + message + "\", got \"" + error + "\"");
    };
    expect(MinimalElf(0x100000, 16, 8), "file size above memory size");
    expect(MinimalElf(0x1000, 16, 16), "below 1 MiB");
    expect(MinimalElf(15 << 20, 16, 2 << 20), "does not fit in guest RAM");
    expect(MinimalElf(~0ULL - 8, 16, 16), "does not fit in guest RAM");
    auto huge_offset = MinimalElf(0x100000, 16, 16);
    Elf64_Phdr phdr;
    std::memcpy(&phdr, huge_offset.data() + sizeof(Elf64_Ehdr), sizeof(phdr));
    phdr.p_offset = ~0ULL - 4;
    std::memcpy(huge_offset.data() + sizeof(Elf64_Ehdr), &phdr, sizeof(phdr));
    expect(huge_offset, "truncated");
    auto many = MinimalElf(0x100000, 16, 16);
    uint16_t phnum = 60000;
    std::memcpy(many.data() + offsetof(Elf64_Ehdr, e_phnum), &phnum, 2);
    expect(many, "program headers");
    expect({}, "truncated");
    expect(std::vector<uint8_t>(4096, 0), "neither an ELF vmlinux nor a bzImage");
  });

  Run("kernel loader: bzImage header checks", [] {
    auto memory = GuestMemory::Create(16 << 20);
    std::vector<uint8_t> image(64 * 1024, 0);
    setup_header header{};
    header.setup_sects = 4;
    header.boot_flag = 0xaa55;
    header.header = 0x53726448;
    header.version = 0x020f;
    header.xloadflags = 1;
    header.init_size = 1 << 20;
    std::memcpy(image.data() + 0x1f1, &header, sizeof(header));
    {
      UniqueFd fd = MemFile(image);
      const LoadedKernel kernel = LoadKernel(*memory, ImageFile(fd.get(), "kernel"));
      CHECK(kernel.format == KernelFormat::kBzImage && kernel.entry64 == 0x100200);
      CHECK(kernel.end == 0x100000 + (1 << 20));
    }
    header.xloadflags = 0;
    std::memcpy(image.data() + 0x1f1, &header, sizeof(header));
    UniqueFd old = MemFile(image);
    CHECK(ErrorOf([&] { LoadKernel(*memory, ImageFile(old.get(), "kernel")); }).find("no 64-bit entry") != std::string::npos);
    header.xloadflags = 1;
    header.init_size = 64 << 20;
    std::memcpy(image.data() + 0x1f1, &header, sizeof(header));
    UniqueFd big = MemFile(image);
    CHECK(ErrorOf([&] { LoadKernel(*memory, ImageFile(big.get(), "kernel")); }).find("more than guest RAM") != std::string::npos);
  });

  Run("memory map: RAM around the EBDA and the MMIO hole", [] {
    auto memory = GuestMemory::Create(kMmioHoleStart + (256 << 20));
    const auto map = GuestMemoryMap(*memory);
    CHECK(map.size() == 4);
    CHECK(map[0].address == 0 && map[0].size == kEbdaStart && map[0].type == 1);
    CHECK(map[1].type == 2);
    CHECK(map[2].address == 0x100000 && map[2].address + map[2].size == kMmioHoleStart);
    CHECK(map[3].address == kMmioHoleEnd && map[3].size == (256 << 20));
  });

  Run("json: round trip and strict parsing", [] {
    const Json value = Json::Parse(R"({"a":[1,2.5,-3e2,true,false,null],"s":"x\"\u00e9\ud83d\ude00\n"})");
    CHECK(value.Find("a")->as_array().size() == 6);
    CHECK(value.Find("a")->as_array()[2].as_number() == -300);
    CHECK(value.Find("s")->as_string() == "x\"\xc3\xa9\xf0\x9f\x98\x80\n");
    CHECK(Json::Parse(value.Serialize()).Serialize() == value.Serialize());
    for (const char* bad : {"", "{", "{\"a\":}", "[1,]", "01", "\"\\x\"", "{\"a\":1}x", "nul",
                            "\"\\ud800\"", "{\"a\":1,\"a\":2}", "1e999", "\"tab\there\""}) {
      if (ErrorOf([&] { Json::Parse(bad); }).find("malformed JSON") == std::string::npos)
        throw std::runtime_error(std::string("accepted ") + bad);
    }
    std::string deep(100, '[');
    CHECK(ErrorOf([&] { Json::Parse(deep); }).find("deeper than 32") != std::string::npos);
  });

  Run("control channel: frames split and joined, fds via SCM_RIGHTS, limits", [] {
    int pair[2];
    CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    UniqueFd peer(pair[1]);
    ControlChannel channel{UniqueFd(pair[0])};
    ControlChannel sender{std::move(peer)};
    UniqueFd file = MemFile({1, 2, 3});
    Json body = Json::Object();
    body.Set("type", "configure");
    CHECK(sender.Send(body, {file.get(), file.get()}));
    CHECK(sender.Send(Json::Object().Set("type", "start")));
    std::vector<ControlMessage> messages;
    CHECK(channel.ReadAvailable(messages));
    CHECK(messages.size() == 2);
    CHECK(messages[0].fds.size() == 2 && messages[1].fds.empty());
    CHECK(messages[0].body.Find("type")->as_string() == "configure");
    uint8_t byte = 0;
    CHECK(::pread(messages[0].fds[1].get(), &byte, 1, 2) == 1 && byte == 3);

    // An oversized length is refused before anything is allocated.
    const uint8_t huge[4] = {0, 0, 0, 0x10};
    CHECK(::write(sender.fd(), huge, 4) == 4);
    std::vector<ControlMessage> more;
    CHECK(ErrorOf([&] { channel.ReadAvailable(more); }).find("exceeds") != std::string::npos);
  });

  Run("configure: validation names the field; fds by index", [] {
    std::vector<UniqueFd> fds;
    fds.push_back(MemFile({0x7f, 'E', 'L', 'F'}));
    const Json good = Json::Parse(R"({"memory_mib":64,"vcpus":2,"kernel":{"fd":0},"cmdline":"x",
        "disks":[{"file":{"path":"/dev/null"},"read_only":true,"serial":"img"}],
        "vsock":{"guest_cid":3,"uds_path":"/tmp/x.sock"},"exit_record_path":"/tmp/e.json"})");
    ConfigureRequest request = ParseConfigure(good, fds, 3);
    CHECK(request.machine.memory_bytes == (64ULL << 20) && request.machine.vcpu_count == 2);
    CHECK(request.machine.kernel.valid() && !fds[0].valid());
    CHECK(request.machine.disks.size() == 1 && request.machine.disks[0].read_only);
    CHECK(request.machine.vsock && request.machine.vsock->guest_cid == 3);
    auto error_for = [](const char* text) {
      std::vector<UniqueFd> none;
      return ErrorOf([&] { ParseConfigure(Json::Parse(text), none, 3); });
    };
    CHECK(error_for(R"({"memory_mib":64})").find("kernel: missing") != std::string::npos);
    CHECK(error_for(R"({"memory_mib":64.5,"kernel":{"path":"/dev/null"}})").find("memory_mib") != std::string::npos);
    CHECK(error_for(R"({"memory_mib":64,"kernel":{"fd":0,"path":"/x"}})").find("exactly one") != std::string::npos);
    CHECK(error_for(R"({"memory_mib":64,"kernel":{"inherited_fd":999}})").find("not open") != std::string::npos);
    CHECK(error_for(R"({"memory_mib":64,"kernel":{"path":"/dev/null"},"vsock":{"guest_cid":2,"uds_path":"/x"}})").find("guest_cid") != std::string::npos);
    CHECK(error_for(R"({"memory_mib":64,"kernel":{"path":"/dev/null"},"disks":[{"file":{"path":"/dev/null"},"serial":"123456789012345678901"}]})").find("serial: at most 20") != std::string::npos);
  });

  RunSnapshotTests(Run);

  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
