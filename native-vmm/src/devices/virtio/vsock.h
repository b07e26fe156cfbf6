// virtio-vsock (virtio 1.1 §5.10) with a Firecracker-style hybrid host side. The VMM listens
// on a unix socket; a host client connects and writes "CONNECT <port>\n"; the device opens a
// stream to that guest port (REQUEST); when the guest answers RESPONSE the client reads
// "OK <host_port>\n" and from then on the unix connection carries the stream's bytes both
// ways, under vsock credit flow control. A guest RST closes the unix connection; a unix EOF
// becomes a SHUTDOWN to the guest. Guest-initiated connections are refused (RST).
// Connections do not survive a snapshot: after restore the guest gets TRANSPORT_RESET.
// The guest resets every connected socket when it handles that event, also one it accepted
// after the event was queued (Linux's vm_interrupt runs the rx queue's callback before the
// event queue's, and rx and event work are separate work items). So host connections made
// after a restore are held (their REQUEST is not sent) until the driver has handled the event:
// it has made a new event buffer available (Linux re-posts the buffer it took, after
// resetting its sockets) and notified the event queue.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "devices/virtio/device_base.h"
#include "util/event_loop.h"
#include "util/fd.h"

namespace smolvm::virtio {

constexpr uint64_t kVsockHostCid = 2;
constexpr uint16_t kVsockQueueSize = 256;
constexpr uint32_t kVsockRxQueue = 0;
constexpr uint32_t kVsockTxQueue = 1;
constexpr uint32_t kVsockEventQueue = 2;

constexpr uint16_t kVsockTypeStream = 1;
constexpr uint16_t kVsockOpRequest = 1;
constexpr uint16_t kVsockOpResponse = 2;
constexpr uint16_t kVsockOpRst = 3;
constexpr uint16_t kVsockOpShutdown = 4;
constexpr uint16_t kVsockOpRw = 5;
constexpr uint16_t kVsockOpCreditUpdate = 6;
constexpr uint16_t kVsockOpCreditRequest = 7;
constexpr uint32_t kVsockShutdownRcv = 1;
constexpr uint32_t kVsockShutdownSend = 2;
constexpr uint32_t kVsockEventTransportReset = 0;

// Bytes from the guest the host side buffers per connection (our buf_alloc).
constexpr uint32_t kVsockHostBufAlloc = 256 * 1024;
constexpr uint32_t kVsockMaxPayload = 64 * 1024;
constexpr size_t kVsockMaxConnections = 1024;

#pragma pack(push, 1)
struct VsockHeader {
  uint64_t src_cid;
  uint64_t dst_cid;
  uint32_t src_port;
  uint32_t dst_port;
  uint32_t len;
  uint16_t type;
  uint16_t op;
  uint32_t flags;
  uint32_t buf_alloc;
  uint32_t fwd_cnt;
};
#pragma pack(pop)
static_assert(sizeof(VsockHeader) == 44);

class VirtioVsock : public QueueDeviceBase, public std::enable_shared_from_this<VirtioVsock> {
 public:
  // Use MakeVirtioVsock.
  VirtioVsock(uint64_t guest_cid, UniqueFd listener, EventLoop& loop);
  ~VirtioVsock() override;

  uint32_t device_id() const override { return kDeviceIdVsock; }
  const char* name() const override { return "virtio-vsock"; }
  void ReadConfig(uint64_t offset, uint8_t* data, uint32_t len) override;
  void WriteConfig(uint64_t, const uint8_t*, uint32_t) override {}

  uint64_t guest_cid() const { return guest_cid_; }
  size_t connection_count() const;

  // Registers the listener on the loop; called by MakeVirtioVsock once shared.
  void Start();

 private:
  enum class State { kAwaitingConnectLine, kRequestPending, kRequestSent, kEstablished };
  struct Connection {
    UniqueFd fd;
    State state = State::kAwaitingConnectLine;
    uint32_t host_port = 0;
    uint32_t guest_port = 0;
    uint32_t interest = 0;     // events registered on the loop (0: not registered)
    bool host_readable = false;  // the loop said the unix side has bytes (or EOF)
    bool host_eof = false;       // the unix side will send no more
    bool guest_shut_recv = false;
    bool guest_shut_send = false;
    bool host_write_shut = false;
    bool pending_shutdown_send = false;  // tell the guest: host sends no more
    bool pending_credit_update = false;
    // Guest -> host bytes waiting for the unix socket; the first `unaccounted` bytes are
    // ours ("OK <port>\n"), not the guest's, so they do not move fwd_cnt.
    std::vector<uint8_t> to_host;
    size_t to_host_offset = 0;
    size_t unaccounted = 0;
    uint32_t rx_cnt = 0;   // guest payload bytes received
    uint32_t fwd_cnt = 0;  // ... of which written to the unix socket
    uint32_t last_fwd_cnt_sent = 0;
    uint32_t tx_cnt = 0;   // payload bytes sent to the guest
    uint32_t peer_buf_alloc = 0;
    uint32_t peer_fwd_cnt = 0;
  };

  void ProcessQueueLocked(uint32_t index) override;
  void OnResetLocked() override;
  void SaveDeviceStateLocked(StateWriter& out) const override;
  void RestoreDeviceStateLocked(StateReader& in) override;

  void OnListenerReady();
  void AcceptAllLocked();
  void OnConnectionEvent(uint32_t host_port, uint32_t events);
  void ReadConnectLineLocked(Connection& c);
  void HandleTxLocked();
  void HandleGuestPacketLocked(const VsockHeader& header, SegmentCursor& payload);
  void ProcessRxLocked();
  void ProcessEventQueueLocked();
  Connection* NextConnectionWithWorkLocked();
  bool HasWorkLocked(const Connection& c) const;
  bool HoldingRequestsLocked() const;
  bool CanSendDataLocked(const Connection& c) const;
  uint32_t PeerCreditLocked(const Connection& c) const;
  void FlushToHostLocked(Connection& c);
  void UpdateInterestLocked(Connection& c);
  void UpdateAllInterestsLocked();
  void CloseConnectionLocked(uint32_t host_port, bool send_rst);
  void QueueRstLocked(uint32_t host_port, uint32_t guest_port);
  VsockHeader HeaderFor(const Connection& c, uint16_t op) const;
  uint32_t AllocateHostPortLocked();
  bool Usable() const;  // active and not failed

  const uint64_t guest_cid_;
  UniqueFd listener_;
  EventLoop& loop_;
  bool listener_registered_ = false;
  std::map<uint32_t, std::unique_ptr<Connection>> connections_;  // by host port
  std::deque<VsockHeader> orphan_packets_;  // RSTs for packets of no live connection
  uint32_t next_host_port_ = 1u << 30;
  uint32_t round_robin_after_ = 0;
  bool rx_starved_ = false;  // something to send but no receive buffer posted
  bool pending_transport_reset_ = false;  // restored: the event still has to be delivered
  // Delivered, but the driver has not yet shown that it handled the event: new REQUESTs wait.
  bool transport_reset_unacknowledged_ = false;
  uint16_t event_avail_at_reset_ = 0;  // the event queue's avail index when we delivered it
};

// Listens on `listener` (a bound, listening, non-blocking unix stream socket) using `loop`,
// which must outlive the device. Throws VmmError for an invalid fd or a CID below 3.
std::shared_ptr<VirtioVsock> MakeVirtioVsock(uint64_t guest_cid, UniqueFd listener,
                                             EventLoop& loop);

// socket + bind + listen on `path` (non-blocking, close-on-exec). Fails (VmmError) when the
// path is too long or already exists; the caller unlinks the path when done.
UniqueFd ListenUnixSocket(const std::string& path);

}  // namespace smolvm::virtio
