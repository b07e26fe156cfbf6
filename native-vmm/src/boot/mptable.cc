#include "boot/mptable.h"

#include <cstring>
#include <vector>

#include "boot/layout.h"
#include "util/error.h"

namespace smolvm {
namespace {

#pragma pack(push, 1)
struct MpFloatingPointer {
  char signature[4];  // "_MP_"
  uint32_t config_table;
  uint8_t length;  // in 16-byte units
  uint8_t spec_revision;
  uint8_t checksum;
  uint8_t features[5];
};
struct MpConfigHeader {
  char signature[4];  // "PCMP"
  uint16_t length;
  uint8_t spec_revision;
  uint8_t checksum;
  char oem_id[8];
  char product_id[12];
  uint32_t oem_table;
  uint16_t oem_table_size;
  uint16_t entry_count;
  uint32_t lapic_address;
  uint16_t extended_length;
  uint8_t extended_checksum;
  uint8_t reserved;
};
struct MpProcessor {
  uint8_t type;  // 0
  uint8_t apic_id;
  uint8_t apic_version;
  uint8_t flags;  // 1 enabled, 2 bootstrap processor
  uint32_t signature;
  uint32_t feature_flags;
  uint32_t reserved[2];
};
struct MpBus {
  uint8_t type;  // 1
  uint8_t bus_id;
  char bus_type[6];
};
struct MpIoApic {
  uint8_t type;  // 2
  uint8_t apic_id;
  uint8_t apic_version;
  uint8_t flags;  // 1 enabled
  uint32_t address;
};
struct MpInterrupt {
  uint8_t type;  // 3 I/O interrupt, 4 local interrupt
  uint8_t interrupt_type;  // 0 INT, 1 NMI, 3 ExtINT
  uint16_t flags;          // 0: conforming to the bus (ISA: edge, active high)
  uint8_t source_bus;
  uint8_t source_irq;
  uint8_t destination_apic;
  uint8_t destination_pin;
};
#pragma pack(pop)

static_assert(sizeof(MpFloatingPointer) == 16);
static_assert(sizeof(MpConfigHeader) == 44);
static_assert(sizeof(MpProcessor) == 20);
static_assert(sizeof(MpBus) == 8);
static_assert(sizeof(MpIoApic) == 8);
static_assert(sizeof(MpInterrupt) == 8);

constexpr uint8_t kApicVersion = 0x14;
constexpr uint8_t kIoApicVersion = 0x11;
constexpr uint8_t kIsaBus = 0;

uint8_t Checksum(const uint8_t* bytes, size_t len) {
  uint8_t sum = 0;
  for (size_t i = 0; i < len; ++i) sum = static_cast<uint8_t>(sum + bytes[i]);
  return static_cast<uint8_t>(-sum);
}

template <typename T>
void Append(std::vector<uint8_t>& out, const T& value) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(&value);
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

}  // namespace

uint64_t WriteMpTable(const GuestMemory& memory, GuestAddress address, uint32_t vcpu_count,
                      uint32_t last_gsi) {
  if (vcpu_count == 0 || vcpu_count > kMaxVcpus)
    throw VmmError("mptable: " + std::to_string(vcpu_count) + " vCPUs (1.." +
                   std::to_string(kMaxVcpus) + " supported)");
  if (last_gsi > kLastGsi) throw VmmError("mptable: GSI " + std::to_string(last_gsi) + " past the IOAPIC's pins");

  std::vector<uint8_t> entries;
  uint16_t entry_count = 0;
  for (uint32_t cpu = 0; cpu < vcpu_count; ++cpu) {
    MpProcessor processor{};
    processor.type = 0;
    processor.apic_id = static_cast<uint8_t>(cpu);
    processor.apic_version = kApicVersion;
    processor.flags = static_cast<uint8_t>(1 | (cpu == 0 ? 2 : 0));
    processor.signature = 0x600;        // family 6
    processor.feature_flags = 0x201;    // FPU, APIC
    Append(entries, processor);
    ++entry_count;
  }
  MpBus bus{};
  bus.type = 1;
  bus.bus_id = kIsaBus;
  std::memcpy(bus.bus_type, "ISA   ", 6);
  Append(entries, bus);
  ++entry_count;
  const uint8_t ioapic_id = static_cast<uint8_t>(vcpu_count);
  MpIoApic ioapic{};
  ioapic.type = 2;
  ioapic.apic_id = ioapic_id;
  ioapic.apic_version = kIoApicVersion;
  ioapic.flags = 1;
  ioapic.address = static_cast<uint32_t>(kIoapicAddress);
  Append(entries, ioapic);
  ++entry_count;
  for (uint32_t irq = 0; irq <= last_gsi; ++irq) {
    MpInterrupt interrupt{};
    interrupt.type = 3;
    interrupt.interrupt_type = 0;  // INT
    interrupt.source_bus = kIsaBus;
    interrupt.source_irq = static_cast<uint8_t>(irq);
    interrupt.destination_apic = ioapic_id;
    interrupt.destination_pin = static_cast<uint8_t>(irq);
    Append(entries, interrupt);
    ++entry_count;
  }
  MpInterrupt extint{};
  extint.type = 4;
  extint.interrupt_type = 3;  // ExtINT on LINT0 of every local APIC
  extint.source_bus = kIsaBus;
  extint.destination_apic = 0xff;
  extint.destination_pin = 0;
  Append(entries, extint);
  MpInterrupt nmi = extint;
  nmi.interrupt_type = 1;  // NMI on LINT1
  nmi.destination_pin = 1;
  Append(entries, nmi);
  entry_count = static_cast<uint16_t>(entry_count + 2);

  MpConfigHeader header{};
  std::memcpy(header.signature, "PCMP", 4);
  header.length = static_cast<uint16_t>(sizeof(header) + entries.size());
  header.spec_revision = 4;
  std::memcpy(header.oem_id, "SMOLVM  ", 8);
  std::memcpy(header.product_id, "MICROVM     ", 12);
  header.entry_count = entry_count;
  header.lapic_address = static_cast<uint32_t>(kLapicAddress);

  std::vector<uint8_t> table;
  Append(table, header);
  table.insert(table.end(), entries.begin(), entries.end());
  table[offsetof(MpConfigHeader, checksum)] = Checksum(table.data(), table.size());

  MpFloatingPointer pointer{};
  std::memcpy(pointer.signature, "_MP_", 4);
  pointer.config_table = static_cast<uint32_t>(address + sizeof(MpFloatingPointer));
  pointer.length = 1;
  pointer.spec_revision = 4;
  pointer.checksum = Checksum(reinterpret_cast<const uint8_t*>(&pointer), sizeof(pointer));

  const uint64_t total = sizeof(pointer) + table.size();
  if (address < kEbdaStart || address + total > 0xa0000)
    throw VmmError("mptable: " + std::to_string(total) + " bytes do not fit in base memory");
  if (!memory.WriteObj(address, pointer) ||
      !memory.Write(address + sizeof(pointer), table.data(), table.size()))
    throw VmmError("mptable: base memory is not guest RAM");
  return total;
}

}  // namespace smolvm
