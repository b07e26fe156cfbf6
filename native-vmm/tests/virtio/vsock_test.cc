// virtio-vsock with the hybrid unix-socket host side: the test plays the guest driver (rx/tx
// queues in guest memory) and a host client on the unix socket, taking turns with the device
// on a single-threaded TestLoop.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <set>

#include "devices/virtio/vsock.h"
#include "harness.h"
#include "test_framework.h"
#include "test_loop.h"

using namespace smolvm::virtio;
using namespace vtest;
using smolvm::UniqueFd;

namespace {

constexpr uint64_t kGuestCid = 3;
constexpr uint32_t kAgentPort = 1024;

struct Packet {
  VsockHeader h;
  std::vector<uint8_t> data;
};

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/vsock-test-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() {
    unlink((path + "/v.sock").c_str());
    rmdir(path.c_str());
  }
  std::string path;
};

// The guest side: receive buffers like Linux 6.1 posts them (header descriptor + 4 KiB
// payload descriptor), packets sent as header + payload descriptors.
class GuestVsock {
 public:
  explicit GuestVsock(Harness& h) : h_(h) {}

  void PostRx(int count) {
    for (int i = 0; i < count; ++i) {
      GuestAddress hdr = h_.Alloc(sizeof(VsockHeader)), payload = h_.Alloc(4096);
      Repost(hdr, payload);
    }
    h_.Notify(kVsockRxQueue);
  }

  std::vector<Packet> DrainRx() {
    std::vector<Packet> packets;
    GuestQueue& rx = *h_.queues[kVsockRxQueue];
    while (auto used = rx.PopUsed()) {
      auto [hdr, payload] = rx_buffers_.at(static_cast<uint16_t>(used->id));
      rx_buffers_.erase(static_cast<uint16_t>(used->id));
      Packet p;
      memcpy(&p.h, h_.Peek(hdr, sizeof p.h).data(), sizeof p.h);
      if (used->len < sizeof p.h || p.h.len != used->len - sizeof p.h || p.h.len > 4096)
        RecordFailure(__FILE__, __LINE__, "rx used length does not match the packet header");
      else
        p.data = h_.Peek(payload, p.h.len);
      packets.push_back(std::move(p));
      Repost(hdr, payload);
    }
    if (!packets.empty()) h_.Notify(kVsockRxQueue);
    return packets;
  }

  void Send(uint32_t guest_port, uint32_t host_port, uint16_t op, const uint8_t* data = nullptr,
            uint32_t len = 0, uint32_t flags = 0) {
    VsockHeader h{};
    h.src_cid = kGuestCid;
    h.dst_cid = kVsockHostCid;
    h.src_port = guest_port;
    h.dst_port = host_port;
    h.len = len;
    h.type = kVsockTypeStream;
    h.op = op;
    h.flags = flags;
    h.buf_alloc = buf_alloc;
    h.fwd_cnt = fwd_cnt;
    GuestAddress hdr = tx_hdr_ ? tx_hdr_ : (tx_hdr_ = h_.Alloc(sizeof h));
    GuestAddress payload = tx_payload_ ? tx_payload_ : (tx_payload_ = h_.Alloc(64 * 1024));
    h_.Fill(hdr, &h, sizeof h);
    std::vector<GuestQueue::Buf> bufs{{hdr, sizeof h, false}};
    if (len) {
      h_.Fill(payload, data, len);
      bufs.push_back({payload, len, false});
    }
    h_.queues[kVsockTxQueue]->Add(bufs);
    h_.Notify(kVsockTxQueue);
    while (h_.queues[kVsockTxQueue]->PopUsed()) {
    }
  }

  uint32_t buf_alloc = 64 * 1024;
  uint32_t fwd_cnt = 0;

 private:
  void Repost(GuestAddress hdr, GuestAddress payload) {
    uint16_t head = h_.queues[kVsockRxQueue]->Add({{hdr, sizeof(VsockHeader), true},
                                                   {payload, 4096, true}});
    rx_buffers_[head] = {hdr, payload};
  }
  Harness& h_;
  std::map<uint16_t, std::pair<GuestAddress, GuestAddress>> rx_buffers_;
  GuestAddress tx_hdr_ = 0, tx_payload_ = 0;
};

// A host client of the device's unix socket at `path`.
UniqueFd ConnectUnix(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw std::runtime_error("connect to " + path + " failed");
  return fd;
}

struct VsockRig {
  VsockRig()
      : device(MakeVirtioVsock(kGuestCid, ListenUnixSocket(dir.path + "/v.sock"), loop)),
        h(device),
        guest(h) {}

  UniqueFd Connect() { return ConnectUnix(dir.path + "/v.sock"); }

  // Host client connects to the guest port; the guest answers with `answer` (RESPONSE or
  // RST). Returns the client fd (non-blocking) and the host port.
  std::pair<UniqueFd, uint32_t> Open(uint16_t answer = kVsockOpResponse) {
    UniqueFd client = Connect();
    const char line[] = "CONNECT 1024\n";
    if (write(client.get(), line, sizeof line - 1) != sizeof line - 1) abort();
    loop.RunFor(10);
    std::vector<Packet> packets = guest.DrainRx();
    if (packets.size() != 1 || packets[0].h.op != kVsockOpRequest) {
      RecordFailure(__FILE__, __LINE__, "expected one REQUEST packet");
      return {std::move(client), 0};
    }
    const VsockHeader& req = packets[0].h;
    CHECK_EQ(req.dst_port, kAgentPort);
    CHECK_EQ(req.dst_cid, kGuestCid);
    CHECK_EQ(req.src_cid, kVsockHostCid);
    CHECK_EQ(req.type, kVsockTypeStream);
    guest.Send(kAgentPort, req.src_port, answer);
    loop.RunFor(5);
    fcntl(client.get(), F_SETFL, O_NONBLOCK);
    return {std::move(client), req.src_port};
  }

  TempDir dir;
  TestLoop loop;
  std::shared_ptr<VirtioVsock> device;
  Harness h;
  GuestVsock guest;
};

std::string ReadAvailable(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

bool AtEof(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 100) != 1) return false;
  char c;
  ssize_t n = read(fd, &c, 1);
  // A unix peer closed with our bytes unread in its queue reports ECONNRESET.
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

}  // namespace

TEST(vsock_config_holds_guest_cid) {
  VsockRig rig;
  CHECK_EQ(rig.h.ReadConfig64(0), kGuestCid);
}

TEST(vsock_connect_handshake) {
  VsockRig rig;
  REQUIRE(rig.h.Init() & kStatusDriverOk);
  rig.guest.PostRx(8);
  auto [client, port] = rig.Open();
  REQUIRE(port != 0);
  CHECK_EQ(ReadAvailable(client.get()), "OK " + std::to_string(port) + "\n");
  CHECK_EQ(rig.device->connection_count(), 1u);
}

TEST(vsock_connect_before_driver_ready_waits) {
  VsockRig rig;
  UniqueFd client = rig.Connect();
  CHECK_EQ(write(client.get(), "CONNECT 1024\n", 13), 13);
  rig.loop.RunFor(10);
  REQUIRE(rig.h.Init() & kStatusDriverOk);
  rig.guest.PostRx(4);  // the kick delivers the pending REQUEST
  std::vector<Packet> packets = rig.guest.DrainRx();
  REQUIRE(packets.size() == 1);
  CHECK_EQ(packets[0].h.op, kVsockOpRequest);
}

TEST(vsock_guest_refuses_connection) {
  VsockRig rig;
  rig.h.Init();
  rig.guest.PostRx(8);
  auto [client, port] = rig.Open(kVsockOpRst);
  CHECK(AtEof(client.get()));
  CHECK_EQ(rig.device->connection_count(), 0u);
}

TEST(vsock_bad_connect_lines_are_closed) {
  VsockRig rig;
  rig.h.Init();
  rig.guest.PostRx(8);
  for (const char* line : {"HELLO 1024\n", "CONNECT\n", "CONNECT 99999999999\n",
                           "CONNECT 12x\n"}) {
    UniqueFd client = rig.Connect();
    CHECK_EQ(write(client.get(), line, strlen(line)), static_cast<ssize_t>(strlen(line)));
    rig.loop.RunFor(10);
    CHECK(AtEof(client.get()));
  }
  UniqueFd endless = rig.Connect();  // no newline within the limit
  std::string junk(100, 'a');
  CHECK_EQ(write(endless.get(), junk.data(), junk.size()), 100);
  rig.loop.RunFor(10);
  CHECK(AtEof(endless.get()));
  CHECK(rig.guest.DrainRx().empty());
  CHECK_EQ(rig.device->connection_count(), 0u);
}

TEST(vsock_bytes_after_connect_line_are_kept) {
  VsockRig rig;
  rig.h.Init();
  rig.guest.PostRx(8);
  UniqueFd client = rig.Connect();
  const char msg[] = "CONNECT 1024\nearly";
  CHECK_EQ(write(client.get(), msg, sizeof msg - 1), static_cast<ssize_t>(sizeof msg - 1));
  rig.loop.RunFor(10);
  std::vector<Packet> packets = rig.guest.DrainRx();
  REQUIRE(packets.size() == 1);
  rig.guest.Send(kAgentPort, packets[0].h.src_port, kVsockOpResponse);
  rig.loop.RunFor(10);
  packets = rig.guest.DrainRx();
  REQUIRE(packets.size() == 1);
  CHECK_EQ(packets[0].h.op, kVsockOpRw);
  CHECK_EQ(std::string(packets[0].data.begin(), packets[0].data.end()), std::string("early"));
}

// 1.5 MiB each way at once, byte-exact, with a slow guest reader so that the host must honour
// the guest's credit, and a host client that reads in bursts so the guest honours ours.
TEST(vsock_bulk_transfer_both_ways_with_credit) {
  VsockRig rig;
  REQUIRE(rig.h.Init() & kStatusDriverOk);
  rig.guest.PostRx(64);
  auto [client, port] = rig.Open();
  REQUIRE(port != 0);
  REQUIRE(ReadAvailable(client.get()) == "OK " + std::to_string(port) + "\n");

  constexpr size_t kBytes = 1536 * 1024;
  std::vector<uint8_t> to_guest(kBytes), to_host(kBytes);
  for (size_t i = 0; i < kBytes; ++i) {
    to_guest[i] = static_cast<uint8_t>(i * 31 + (i >> 11));
    to_host[i] = static_cast<uint8_t>(i * 17 + (i >> 13) + 5);
  }
  std::vector<uint8_t> got_guest, got_host;
  size_t host_sent = 0, guest_sent = 0;
  uint32_t guest_unread = 0;             // received by the guest, not yet consumed
  uint32_t host_buf_alloc = 0, host_fwd_cnt = 0, guest_tx_cnt = 0;
  uint32_t last_credit_sent = 0;
  size_t credit_violations = 0, resets = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int round = 0;
  while ((got_guest.size() < kBytes || got_host.size() < kBytes) &&
         std::chrono::steady_clock::now() < deadline) {
    ++round;
    // Host client: write what the socket takes, read in bursts (every other round).
    if (host_sent < kBytes) {
      ssize_t n = write(client.get(), to_guest.data() + host_sent,
                        std::min<size_t>(kBytes - host_sent, 96 * 1024));
      if (n > 0) host_sent += static_cast<size_t>(n);
    }
    if (round % 2 == 0) {
      std::string chunk = ReadAvailable(client.get());
      got_host.insert(got_host.end(), chunk.begin(), chunk.end());
    }
    rig.loop.RunFor(1);
    // Guest: take packets, consume slowly, send credit updates, send data within credit.
    for (Packet& p : rig.guest.DrainRx()) {
      host_buf_alloc = p.h.buf_alloc;
      host_fwd_cnt = p.h.fwd_cnt;
      if (p.h.op == kVsockOpRst) ++resets;
      if (p.h.op != kVsockOpRw) continue;
      got_guest.insert(got_guest.end(), p.data.begin(), p.data.end());
      guest_unread += p.h.len;
      if (guest_unread > rig.guest.buf_alloc) ++credit_violations;
    }
    const uint32_t consume = std::min<uint32_t>(guest_unread, 24 * 1024);
    guest_unread -= consume;
    rig.guest.fwd_cnt += consume;
    if (rig.guest.fwd_cnt - last_credit_sent >= rig.guest.buf_alloc / 4 ||
        (guest_unread == 0 && rig.guest.fwd_cnt != last_credit_sent)) {
      rig.guest.Send(kAgentPort, port, kVsockOpCreditUpdate);
      last_credit_sent = rig.guest.fwd_cnt;
    }
    for (int i = 0; i < 4 && guest_sent < kBytes; ++i) {
      const uint32_t credit = host_buf_alloc - (guest_tx_cnt - host_fwd_cnt);
      const uint32_t len = static_cast<uint32_t>(
          std::min<size_t>({credit, kBytes - guest_sent, 16 * 1024}));
      if (len == 0) break;
      rig.guest.Send(kAgentPort, port, kVsockOpRw, to_host.data() + guest_sent, len);
      guest_sent += len;
      guest_tx_cnt += len;
    }
  }
  CHECK_EQ(got_guest.size(), kBytes);
  CHECK_EQ(got_host.size(), kBytes);
  CHECK(got_guest == to_guest);
  CHECK(got_host == to_host);
  CHECK_EQ(credit_violations, 0u);
  CHECK_EQ(resets, 0u);
  CHECK(!rig.h.NeedsReset());
  CHECK_EQ(rig.device->connection_count(), 1u);
}

TEST(vsock_guest_overrunning_credit_is_reset) {
  VsockRig rig;
  rig.h.Init();
  rig.guest.PostRx(8);
  auto [client, port] = rig.Open();
  ReadAvailable(client.get());
  std::vector<uint8_t> chunk(60 * 1024, 'x');
  // The host client reads nothing; the guest ignores buf_alloc (256 KiB) and fills the unix
  // socket buffer and then ours.
  bool got_rst = false;
  for (int i = 0; i < 64 && !got_rst; ++i) {
    rig.guest.Send(kAgentPort, port, kVsockOpRw, chunk.data(), static_cast<uint32_t>(chunk.size()));
    rig.loop.RunFor(1);
    for (Packet& p : rig.guest.DrainRx()) got_rst |= p.h.op == kVsockOpRst;
  }
  CHECK(got_rst);
  CHECK_EQ(rig.device->connection_count(), 0u);
  CHECK(!rig.h.NeedsReset());  // a stream error, not a broken device
}

TEST(vsock_packets_for_unknown_connections_get_rst) {
  VsockRig rig;
  rig.h.Init();
  rig.guest.PostRx(8);
  uint8_t byte = 1;
  rig.guest.Send(5000, 4242, kVsockOpRw, &byte, 1);
  rig.guest.Send(5001, 80, kVsockOpRequest);  // guest-initiated connects are refused
  rig.guest.Send(5002, 81, kVsockOpRst);      // never answered
  std::vector<Packet> packets = rig.guest.DrainRx();
  REQUIRE(packets.size() == 2);
  CHECK_EQ(packets[0].h.op, kVsockOpRst);
  CHECK_EQ(packets[0].h.dst_port, 5000u);
  CHECK_EQ(packets[0].h.src_port, 4242u);
  CHECK_EQ(packets[1].h.op, kVsockOpRst);
  CHECK_EQ(packets[1].h.dst_port, 5001u);
}

TEST(vsock_host_close_becomes_guest_shutdown_then_rst) {
  VsockRig rig;
  rig.h.Init();
  rig.guest.PostRx(8);
  auto [client, port] = rig.Open();
  ReadAvailable(client.get());
  CHECK_EQ(write(client.get(), "bye", 3), 3);
  client.reset();
  rig.loop.RunFor(10);
  std::vector<Packet> packets = rig.guest.DrainRx();
  REQUIRE(packets.size() == 2);
  CHECK_EQ(packets[0].h.op, kVsockOpRw);
  CHECK_EQ(packets[1].h.op, kVsockOpShutdown);
  CHECK_EQ(packets[1].h.flags, kVsockShutdownSend);
  // The guest closes its side: the host answers RST and forgets the connection.
  rig.guest.Send(kAgentPort, port, kVsockOpShutdown, nullptr, 0,
                 kVsockShutdownSend | kVsockShutdownRcv);
  packets = rig.guest.DrainRx();
  REQUIRE(packets.size() == 1);
  CHECK_EQ(packets[0].h.op, kVsockOpRst);
  CHECK_EQ(rig.device->connection_count(), 0u);
}

TEST(vsock_guest_shutdown_send_half_closes_host) {
  VsockRig rig;
  rig.h.Init();
  rig.guest.PostRx(8);
  auto [client, port] = rig.Open();
  ReadAvailable(client.get());
  const uint8_t msg[] = "last words";
  rig.guest.Send(kAgentPort, port, kVsockOpRw, msg, 10);
  rig.guest.Send(kAgentPort, port, kVsockOpShutdown, nullptr, 0, kVsockShutdownSend);
  rig.loop.RunFor(5);
  CHECK_EQ(ReadAvailable(client.get()), std::string("last words"));
  CHECK(AtEof(client.get()));
  // The host can still send to the guest.
  CHECK_EQ(write(client.get(), "ack", 3), 3);
  rig.loop.RunFor(10);
  std::vector<Packet> packets = rig.guest.DrainRx();
  bool got_ack = false;
  for (Packet& p : packets)
    got_ack |= p.h.op == kVsockOpRw && std::string(p.data.begin(), p.data.end()) == "ack";
  CHECK(got_ack);
}

TEST(vsock_guest_rst_closes_host_client) {
  VsockRig rig;
  rig.h.Init();
  rig.guest.PostRx(8);
  auto [client, port] = rig.Open();
  ReadAvailable(client.get());
  rig.guest.Send(kAgentPort, port, kVsockOpRst);
  CHECK(AtEof(client.get()));
  CHECK_EQ(rig.device->connection_count(), 0u);
}

TEST(vsock_rx_buffer_smaller_than_header_fails_device) {
  VsockRig rig;
  rig.h.Init();
  GuestAddress tiny = rig.h.Alloc(16);
  rig.h.queues[kVsockRxQueue]->Add({{tiny, 16, true}});
  rig.h.Notify(kVsockRxQueue);
  UniqueFd client = rig.Connect();
  CHECK_EQ(write(client.get(), "CONNECT 1024\n", 13), 13);
  rig.loop.RunFor(10);
  CHECK(rig.h.NeedsReset());
  CHECK(rig.h.FailureReason().find("header") != std::string::npos);
}

TEST(vsock_reset_closes_streams) {
  VsockRig rig;
  rig.h.Init();
  rig.guest.PostRx(8);
  auto [client, port] = rig.Open();
  ReadAvailable(client.get());
  rig.h.Write32(mmio::kStatus, 0);
  CHECK(AtEof(client.get()));
  CHECK_EQ(rig.device->connection_count(), 0u);
}

TEST(vsock_restore_sends_transport_reset_event) {
  VsockRig rig;
  rig.h.Init();
  GuestAddress event = rig.h.Alloc(4);
  rig.h.queues[kVsockEventQueue]->Add({{event, 4, true}});
  rig.h.Notify(kVsockEventQueue);
  std::vector<uint8_t> state = rig.h.transport->SaveState();

  TestLoop loop2;
  TempDir dir2;
  auto device2 = MakeVirtioVsock(kGuestCid, ListenUnixSocket(dir2.path + "/v.sock"), loop2);
  MmioTransport restored(device2, *rig.h.memory, rig.h.irq);
  uint32_t marker = 0xffffffff;
  rig.h.Fill(event, &marker, 4);
  restored.RestoreState(state);
  auto used = rig.h.queues[kVsockEventQueue]->PopUsed();
  REQUIRE(used.has_value());
  CHECK_EQ(used->len, 4u);
  CHECK(rig.h.Peek(event, 4) == std::vector<uint8_t>(4, 0));  // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET

  auto other_cid = MakeVirtioVsock(9, ListenUnixSocket(dir2.path + "/w.sock"), loop2);
  unlink((dir2.path + "/w.sock").c_str());
  MmioTransport wrong(other_cid, *rig.h.memory, rig.h.irq);
  bool threw = false;
  try {
    wrong.RestoreState(state);
  } catch (const smolvm::VmmError& e) {
    threw = std::string(e.what()).find("CID") != std::string::npos;
  }
  CHECK(threw);
}

namespace {

// A restored machine for the tests below: the guest driver (queues in rig.h's memory) was set
// up like Linux 6.1 (8 event buffers of 4 bytes, rx buffers), then the device state was saved
// and restored into a second device listening on its own socket, which replaces the first in
// the harness (so the guest's notifies reach it).
struct RestoredVsock {
  explicit RestoredVsock(VsockRig& rig, int event_buffers = 8) : rig_(rig) {
    REQUIRE_INIT(rig.h.Init() & kStatusDriverOk);
    rig.guest.PostRx(16);
    for (int i = 0; i < event_buffers; ++i) PostEventBuffer(rig.h.Alloc(4));
    rig.h.Notify(kVsockEventQueue);
    std::vector<uint8_t> state = rig.h.transport->SaveState();
    auto device = MakeVirtioVsock(kGuestCid, ListenUnixSocket(dir.path + "/v.sock"), rig.loop);
    auto transport = std::make_unique<MmioTransport>(device, *rig.h.memory, rig.h.irq);
    transport->RestoreState(state);
    rig.h.transport = std::move(transport);
    rig.h.device = device;
    restored = device;
  }

  void PostEventBuffer(GuestAddress buffer) {
    uint16_t head = rig_.h.queues[kVsockEventQueue]->Add({{buffer, 4, true}});
    event_buffers_[head] = buffer;
  }

  // A host client that connected to the restored VMM and asked for the agent's port.
  UniqueFd ConnectToAgent() {
    UniqueFd fd = ConnectUnix(dir.path + "/v.sock");
    if (write(fd.get(), "CONNECT 1024\n", 13) != 13) abort();
    fcntl(fd.get(), F_SETFL, O_NONBLOCK);
    return fd;
  }

  // What Linux 6.1's virtio_transport does for one interrupt: vm_interrupt runs the
  // callbacks in queue order, rx (0) before event (2); rx work accepts REQUESTs on the
  // listening port into the connected table; event work takes each event, resets EVERY
  // connected socket on TRANSPORT_RESET (virtio_vsock_reset_sock: TCP_CLOSE, nothing sent to
  // the host), re-posts the buffer and kicks the event queue once after its loop.
  // Data for a socket that is not connected any more is answered with RST.
  void LinuxInterrupt() {
    for (Packet& p : rig_.guest.DrainRx()) {
      const uint32_t host_port = p.h.src_port;
      switch (p.h.op) {
        case kVsockOpRequest:
          if (p.h.dst_port == kAgentPort) {
            connected.insert(host_port);
            ++accepted;
            rig_.guest.Send(kAgentPort, host_port, kVsockOpResponse);
          } else {
            rig_.guest.Send(p.h.dst_port, host_port, kVsockOpRst);
          }
          break;
        case kVsockOpRw:
          if (connected.count(host_port) == 0) {
            ++rst_for_dead_sockets;
            rig_.guest.Send(kAgentPort, host_port, kVsockOpRst);
            break;
          }
          // The agent echoes.
          rig_.guest.Send(kAgentPort, host_port, kVsockOpRw, p.data.data(),
                          static_cast<uint32_t>(p.data.size()));
          break;
        default:
          break;
      }
    }
    bool took_event = false;
    GuestQueue& events = *rig_.h.queues[kVsockEventQueue];
    while (auto used = events.PopUsed()) {
      GuestAddress buffer = event_buffers_.at(static_cast<uint16_t>(used->id));
      event_buffers_.erase(static_cast<uint16_t>(used->id));
      uint32_t id = 0xffffffff;
      memcpy(&id, rig_.h.Peek(buffer, 4).data(), 4);
      if (used->len == 4 && id == kVsockEventTransportReset) {
        ++transport_resets;
        connected.clear();
      }
      PostEventBuffer(buffer);
      took_event = true;
    }
    if (took_event) rig_.h.Notify(kVsockEventQueue);
  }

  TempDir dir;
  std::shared_ptr<VirtioVsock> restored;
  std::set<uint32_t> connected;  // the guest's connected table (host ports)
  int accepted = 0;
  int transport_resets = 0;
  int rst_for_dead_sockets = 0;

 private:
  static void REQUIRE_INIT(bool ok) {
    if (!ok) throw std::runtime_error("driver init failed");
  }
  VsockRig& rig_;
  std::map<uint16_t, GuestAddress> event_buffers_;
};

std::string ReadFor(int fd, int ms) {
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 10};
    if (poll(&p, 1, 10) == 1) {
      std::string chunk = ReadAvailable(fd);
      if (chunk.empty()) break;
      out += chunk;
    }
  }
  return out;
}

}  // namespace

// The race: the host connects right after the restore, before the guest ran. Its first
// interrupt then finds both the restore's TRANSPORT_RESET (event queue) and the host's REQUEST
// (rx queue); Linux handles rx first, accepts the connection, and then resets it with all the
// others when it handles the event. The device must not send that REQUEST before the guest
// has handled the event, so the connection is accepted after the reset and lasts.
TEST(vsock_host_connection_made_right_after_restore_survives_the_transport_reset) {
  VsockRig rig;
  RestoredVsock vm(rig);
  UniqueFd client = vm.ConnectToAgent();
  rig.loop.RunFor(10);
  vm.LinuxInterrupt();  // takes the reset (and, without the hold, the REQUEST first)
  rig.loop.RunFor(10);
  vm.LinuxInterrupt();  // the REQUEST released by the event queue's kick
  rig.loop.RunFor(10);
  CHECK_EQ(vm.transport_resets, 1);
  CHECK_EQ(vm.accepted, 1);
  REQUIRE(vm.connected.size() == 1);
  const uint32_t port = *vm.connected.begin();
  CHECK_EQ(ReadFor(client.get(), 100), "OK " + std::to_string(port) + "\n");
  CHECK_EQ(write(client.get(), "ping", 4), 4);
  std::string echoed;
  for (int i = 0; i < 20 && echoed.size() < 4; ++i) {
    rig.loop.RunFor(5);
    vm.LinuxInterrupt();
    rig.loop.RunFor(5);
    echoed += ReadAvailable(client.get());
  }
  CHECK_EQ(echoed, std::string("ping"));
  CHECK_EQ(vm.rst_for_dead_sockets, 0);
  CHECK_EQ(vm.restored->connection_count(), 1u);
  CHECK(!rig.h.NeedsReset());
}

// The ordering guarantee itself: a REQUEST waits for the driver to re-post an event buffer
// and notify the event queue; rx kicks or an event-queue kick without a new buffer do not
// release it; a client that gives up meanwhile is closed quietly (nothing reached the guest).
TEST(vsock_restore_holds_requests_until_the_event_buffer_is_reposted) {
  VsockRig rig;
  RestoredVsock vm(rig);
  UniqueFd impatient = vm.ConnectToAgent();
  UniqueFd client = vm.ConnectToAgent();
  rig.loop.RunFor(10);
  CHECK(rig.guest.DrainRx().empty());
  rig.guest.PostRx(4);  // an rx kick
  rig.h.Notify(kVsockEventQueue);  // an event kick with nothing new posted
  rig.loop.RunFor(10);
  CHECK(rig.guest.DrainRx().empty());
  CHECK_EQ(vm.restored->connection_count(), 2u);
  impatient.reset();
  rig.loop.RunFor(10);
  CHECK_EQ(vm.restored->connection_count(), 1u);
  // The driver handles the event: takes it, re-posts the buffer, kicks.
  auto used = rig.h.queues[kVsockEventQueue]->PopUsed();
  REQUIRE(used.has_value());
  CHECK_EQ(used->len, 4u);
  vm.PostEventBuffer(rig.h.Alloc(4));
  rig.h.Notify(kVsockEventQueue);
  std::vector<Packet> packets = rig.guest.DrainRx();
  REQUIRE(packets.size() == 1);  // the REQUEST, and no RST for the client that left
  CHECK_EQ(packets[0].h.op, kVsockOpRequest);
  CHECK_EQ(packets[0].h.dst_port, kAgentPort);
  // From now on connections are not held.
  UniqueFd later = vm.ConnectToAgent();
  rig.loop.RunFor(10);
  packets = rig.guest.DrainRx();
  REQUIRE(packets.size() == 1);
  CHECK_EQ(packets[0].h.op, kVsockOpRequest);
}

// A driver that had no event buffer posted at restore gets the event when it posts one; the
// hold then lasts until it posts the next.
TEST(vsock_restore_without_event_buffers_delivers_the_reset_later) {
  VsockRig rig;
  RestoredVsock vm(rig, 0);
  UniqueFd client = vm.ConnectToAgent();
  rig.loop.RunFor(10);
  CHECK(rig.guest.DrainRx().empty());
  vm.PostEventBuffer(rig.h.Alloc(4));
  rig.h.Notify(kVsockEventQueue);  // delivers the event
  CHECK(rig.guest.DrainRx().empty());
  vm.LinuxInterrupt();  // handles it, re-posts, kicks: the REQUEST follows
  CHECK_EQ(vm.transport_resets, 1);
  vm.LinuxInterrupt();
  CHECK_EQ(vm.accepted, 1);
  CHECK_EQ(vm.connected.size(), 1u);
}

// A driver reset forgets the hold: a fresh driver has no connections to lose.
TEST(vsock_driver_reset_after_restore_clears_the_hold) {
  VsockRig rig;
  RestoredVsock vm(rig);
  rig.h.Init();  // status 0 first: the device is reset, then set up anew
  GuestVsock guest(rig.h);
  guest.PostRx(8);
  UniqueFd client = vm.ConnectToAgent();
  rig.loop.RunFor(10);
  std::vector<Packet> packets = guest.DrainRx();
  REQUIRE(packets.size() == 1);
  CHECK_EQ(packets[0].h.op, kVsockOpRequest);
}

TEST(vsock_factory_rejects_bad_input) {
  TestLoop loop;
  auto throws = [](auto&& fn) {
    try {
      fn();
    } catch (const smolvm::VmmError&) {
      return true;
    }
    return false;
  };
  CHECK(throws([&] { MakeVirtioVsock(2, UniqueFd(), loop); }));
  CHECK(throws([&] { MakeVirtioVsock(3, UniqueFd(), loop); }));
  CHECK(throws([] { ListenUnixSocket(std::string(200, 'a')); }));
  CHECK(throws([] { ListenUnixSocket("/nonexistent-dir/x.sock"); }));
}
