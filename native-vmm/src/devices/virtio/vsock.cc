#include "devices/virtio/vsock.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace smolvm::virtio {
namespace {

constexpr size_t kMaxConnectLine = 64;  // "CONNECT 4294967295\n" fits with room to spare
constexpr size_t kMaxOrphanPackets = 1024;

// "CONNECT <port>\n" (the newline already stripped); false on anything else.
bool ParseConnectLine(const std::string& line, uint32_t* port) {
  static const char kPrefix[] = "CONNECT ";
  if (line.compare(0, sizeof kPrefix - 1, kPrefix) != 0) return false;
  std::string digits = line.substr(sizeof kPrefix - 1);
  if (!digits.empty() && digits.back() == '\r') digits.pop_back();
  if (digits.empty() || digits.size() > 10) return false;
  uint64_t value = 0;
  for (char ch : digits) {
    if (ch < '0' || ch > '9') return false;
    value = value * 10 + static_cast<uint64_t>(ch - '0');
  }
  if (value > UINT32_MAX) return false;
  *port = static_cast<uint32_t>(value);
  return true;
}

}  // namespace

UniqueFd ListenUnixSocket(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path)
    throw VmmError("vsock: unix socket path '" + path + "' is empty or longer than " +
                   std::to_string(sizeof addr.sun_path - 1) + " bytes");
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) throw SysError("vsock: socket");
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw SysError("vsock: bind " + path);
  if (listen(fd.get(), 64) != 0) {
    VmmError error = SysError("vsock: listen on " + path);
    unlink(path.c_str());
    throw error;
  }
  return fd;
}

std::shared_ptr<VirtioVsock> MakeVirtioVsock(uint64_t guest_cid, UniqueFd listener,
                                             EventLoop& loop) {
  if (guest_cid < 3 || guest_cid > UINT32_MAX)
    throw VmmError("vsock: guest CID " + std::to_string(guest_cid) +
                   " is reserved or too large (use 3 .. 2^32-1)");
  if (!listener.valid()) throw VmmError("vsock: no listening socket");
  auto device = std::make_shared<VirtioVsock>(guest_cid, std::move(listener), loop);
  device->Start();
  return device;
}

VirtioVsock::VirtioVsock(uint64_t guest_cid, UniqueFd listener, EventLoop& loop)
    : QueueDeviceBase({kVsockQueueSize, kVsockQueueSize, kVsockQueueSize}, 0),
      guest_cid_(guest_cid),
      listener_(std::move(listener)),
      loop_(loop) {}

VirtioVsock::~VirtioVsock() {
  // No callback can be running into us now (they hold a strong reference while they run).
  for (auto& entry : connections_)
    if (entry.second->interest != 0) loop_.Remove(entry.second->fd.get());
  if (listener_registered_) loop_.Remove(listener_.get());
}

void VirtioVsock::Start() {
  std::weak_ptr<VirtioVsock> weak = weak_from_this();
  std::lock_guard<std::mutex> lock(mutex_);
  loop_.Add(listener_.get(), EPOLLIN, [weak](uint32_t) {
    if (auto self = weak.lock()) self->OnListenerReady();
  });
  listener_registered_ = true;
}

size_t VirtioVsock::connection_count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return connections_.size();
}

bool VirtioVsock::Usable() const { return active_locked(); }

void VirtioVsock::ReadConfig(uint64_t offset, uint8_t* data, uint32_t len) {
  memset(data, 0, len);
  uint8_t config[8];
  memcpy(config, &guest_cid_, 8);  // struct virtio_vsock_config { le64 guest_cid; }
  if (offset >= sizeof config) return;
  memcpy(data, config + offset, std::min<uint64_t>(len, sizeof config - offset));
}

// ---- host side: unix sockets on the event loop ----

uint32_t VirtioVsock::AllocateHostPortLocked() {
  for (;;) {
    uint32_t port = next_host_port_++;
    if (next_host_port_ == 0) next_host_port_ = 1u << 30;
    if (connections_.count(port) == 0) return port;
  }
}

void VirtioVsock::OnListenerReady() {
  std::lock_guard<std::mutex> lock(mutex_);
  try {
    AcceptAllLocked();
  } catch (const std::exception& e) {
    Log(std::string("virtio-vsock: accepting a host connection: ") + e.what());
  }
}

void VirtioVsock::AcceptAllLocked() {
  for (;;) {
    UniqueFd client(accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!client.valid()) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        Log(std::string("virtio-vsock: accept: ") + strerror(errno));
      return;
    }
    if (connections_.size() >= kVsockMaxConnections) {
      Log("virtio-vsock: too many host connections, refused one");
      continue;  // closing it tells the client
    }
    auto c = std::make_unique<Connection>();
    c->fd = std::move(client);
    c->host_port = AllocateHostPortLocked();
    Connection& ref = *c;
    const uint32_t port = ref.host_port;
    connections_.emplace(port, std::move(c));
    try {
      UpdateInterestLocked(ref);
    } catch (...) {
      connections_.erase(port);  // never watched: drop (and close) it
      throw;
    }
  }
}

void VirtioVsock::OnConnectionEvent(uint32_t host_port, uint32_t events) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = connections_.find(host_port);
  if (it == connections_.end()) return;  // closed meanwhile
  Connection& c = *it->second;
  try {
    switch (c.state) {
      case State::kAwaitingConnectLine:
        ReadConnectLineLocked(c);
        return;
      case State::kRequestPending:
      case State::kRequestSent:
        // The client gave up before the guest answered.
        if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
          CloseConnectionLocked(host_port, c.state == State::kRequestSent);
        return;
      case State::kEstablished:
        if (events & EPOLLERR) {
          CloseConnectionLocked(host_port, true);
          break;
        }
        if (events & (EPOLLIN | EPOLLHUP)) c.host_readable = true;
        if (events & EPOLLOUT) FlushToHostLocked(c);
        break;
    }
    if (Usable()) ProcessRxLocked();
    if (auto again = connections_.find(host_port); again != connections_.end())
      UpdateInterestLocked(*again->second);
  } catch (const GuestError& e) {
    FailLocked(e.what());
  } catch (const std::exception& e) {
    FailLocked(std::string("internal error: ") + e.what());
  }
}

void VirtioVsock::ReadConnectLineLocked(Connection& c) {
  // Peek, then consume only through the newline: bytes after it belong to the stream.
  char buf[kMaxConnectLine];
  ssize_t n = recv(c.fd.get(), buf, sizeof buf, MSG_PEEK);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  const void* newline = n > 0 ? memchr(buf, '\n', static_cast<size_t>(n)) : nullptr;
  if (newline == nullptr) {
    if (n <= 0 || static_cast<size_t>(n) == sizeof buf) {
      if (n > 0) Log("virtio-vsock: host client sent no CONNECT line, closed");
      CloseConnectionLocked(c.host_port, false);
    }
    return;  // partial line: wait for more
  }
  const size_t line_len = static_cast<size_t>(static_cast<const char*>(newline) - buf);
  std::string line(buf, line_len);
  ssize_t consumed = recv(c.fd.get(), buf, line_len + 1, 0);
  uint32_t guest_port = 0;
  if (consumed != static_cast<ssize_t>(line_len + 1) || !ParseConnectLine(line, &guest_port)) {
    Log("virtio-vsock: bad host request '" + line + "', expected 'CONNECT <port>', closed");
    CloseConnectionLocked(c.host_port, false);
    return;
  }
  c.guest_port = guest_port;
  c.state = State::kRequestPending;
  UpdateInterestLocked(c);
  if (Usable()) ProcessRxLocked();
}

// Writes buffered guest bytes to the unix socket; moves fwd_cnt and decides on credit updates.
void VirtioVsock::FlushToHostLocked(Connection& c) {
  while (c.to_host_offset < c.to_host.size()) {
    ssize_t n = send(c.fd.get(), c.to_host.data() + c.to_host_offset,
                     c.to_host.size() - c.to_host_offset, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) {
      // The host client is gone: the guest's stream is reset.
      CloseConnectionLocked(c.host_port, true);
      return;
    }
    size_t sent = static_cast<size_t>(n);
    c.to_host_offset += sent;
    size_t ours = std::min(sent, c.unaccounted);
    c.unaccounted -= ours;
    c.fwd_cnt += static_cast<uint32_t>(sent - ours);
  }
  if (c.to_host_offset == c.to_host.size()) {
    c.to_host.clear();
    c.to_host_offset = 0;
  } else if (c.to_host_offset > c.to_host.size() / 2) {
    c.to_host.erase(c.to_host.begin(), c.to_host.begin() + static_cast<std::ptrdiff_t>(c.to_host_offset));
    c.to_host_offset = 0;
  }
  // The guest stalls once it believes our buffer is full; tell it about freed space before
  // it gets there (any packet we send carries fwd_cnt, an explicit update when none is due).
  const uint32_t guest_view_used = c.rx_cnt - c.last_fwd_cnt_sent;
  if (c.fwd_cnt != c.last_fwd_cnt_sent && guest_view_used >= kVsockHostBufAlloc / 2)
    c.pending_credit_update = true;
  if (c.to_host.empty()) {
    if (c.guest_shut_send && c.guest_shut_recv) {
      CloseConnectionLocked(c.host_port, true);  // orderly close complete
      return;
    }
    if (c.guest_shut_send && !c.host_write_shut) {
      shutdown(c.fd.get(), SHUT_WR);
      c.host_write_shut = true;
    }
  }
}

uint32_t VirtioVsock::PeerCreditLocked(const Connection& c) const {
  const uint32_t in_flight = c.tx_cnt - c.peer_fwd_cnt;
  if (in_flight >= c.peer_buf_alloc) return 0;  // also covers a guest reporting nonsense
  return c.peer_buf_alloc - in_flight;
}

bool VirtioVsock::CanSendDataLocked(const Connection& c) const {
  return c.state == State::kEstablished && !c.host_eof && !c.guest_shut_recv &&
         PeerCreditLocked(c) > 0;
}

void VirtioVsock::UpdateInterestLocked(Connection& c) {
  uint32_t want = 0;
  switch (c.state) {
    case State::kAwaitingConnectLine:
      want = EPOLLIN;
      break;
    case State::kRequestPending:
    case State::kRequestSent:
      want = EPOLLRDHUP;
      break;
    case State::kEstablished:
      // Read only when the bytes have somewhere to go: level-triggered readiness that we
      // cannot act on would spin the loop.
      if (CanSendDataLocked(c) && !rx_starved_ && !c.host_readable && Usable()) want |= EPOLLIN;
      if (c.to_host_offset < c.to_host.size()) want |= EPOLLOUT;
      break;
  }
  if (want == c.interest) return;
  const int fd = c.fd.get();
  if (want == 0) {
    loop_.Remove(fd);
  } else if (c.interest == 0) {
    std::weak_ptr<VirtioVsock> weak = weak_from_this();
    const uint32_t port = c.host_port;
    loop_.Add(fd, want, [weak, port](uint32_t events) {
      if (auto self = weak.lock()) self->OnConnectionEvent(port, events);
    });
  } else {
    loop_.Modify(fd, want);
  }
  c.interest = want;
}

void VirtioVsock::UpdateAllInterestsLocked() {
  for (auto& entry : connections_) UpdateInterestLocked(*entry.second);
}

void VirtioVsock::CloseConnectionLocked(uint32_t host_port, bool send_rst) {
  auto it = connections_.find(host_port);
  if (it == connections_.end()) return;
  Connection& c = *it->second;
  if (c.interest != 0) loop_.Remove(c.fd.get());
  if (send_rst) QueueRstLocked(c.host_port, c.guest_port);
  connections_.erase(it);  // closes the unix socket
}

void VirtioVsock::QueueRstLocked(uint32_t host_port, uint32_t guest_port) {
  if (orphan_packets_.size() >= kMaxOrphanPackets) return;  // a flooding guest gets fewer
  VsockHeader h{};
  h.src_cid = kVsockHostCid;
  h.dst_cid = guest_cid_;
  h.src_port = host_port;
  h.dst_port = guest_port;
  h.type = kVsockTypeStream;
  h.op = kVsockOpRst;
  orphan_packets_.push_back(h);
}

VsockHeader VirtioVsock::HeaderFor(const Connection& c, uint16_t op) const {
  VsockHeader h{};
  h.src_cid = kVsockHostCid;
  h.dst_cid = guest_cid_;
  h.src_port = c.host_port;
  h.dst_port = c.guest_port;
  h.type = kVsockTypeStream;
  h.op = op;
  h.buf_alloc = kVsockHostBufAlloc;
  h.fwd_cnt = c.fwd_cnt;
  return h;
}

// ---- guest side: the queues ----

void VirtioVsock::ProcessQueueLocked(uint32_t index) {
  switch (index) {
    case kVsockRxQueue:
      if (rx_starved_) {
        rx_starved_ = false;
        UpdateAllInterestsLocked();
      }
      break;
    case kVsockTxQueue:
      HandleTxLocked();
      break;
    case kVsockEventQueue:
      ProcessEventQueueLocked();
      return;
    default:
      return;
  }
  ProcessRxLocked();
  UpdateAllInterestsLocked();
}

void VirtioVsock::HandleTxLocked() {
  Queue& queue = queues_[kVsockTxQueue];
  if (!queue.ready()) return;
  bool used = false;
  while (std::optional<DescriptorChain> chain = queue.Pop()) {
    SegmentCursor in(*memory_, chain->readable);
    if (in.remaining() < sizeof(VsockHeader)) {
      Log("virtio-vsock: guest packet shorter than its header, dropped");
    } else {
      VsockHeader header;
      in.Read(&header, sizeof header);
      HandleGuestPacketLocked(header, in);
    }
    queue.AddUsed(chain->head, 0);
    used = true;
  }
  if (used) InterruptIfWanted(queue);
}

void VirtioVsock::HandleGuestPacketLocked(const VsockHeader& h, SegmentCursor& payload) {
  if (h.src_cid != guest_cid_ || h.dst_cid != kVsockHostCid) {
    Log("virtio-vsock: guest packet from cid " + std::to_string(h.src_cid) + " to cid " +
        std::to_string(h.dst_cid) + ", dropped");
    return;
  }
  auto it = connections_.find(h.dst_port);
  Connection* c = it == connections_.end() ? nullptr : it->second.get();
  if (c != nullptr && (c->guest_port != h.src_port || c->state == State::kAwaitingConnectLine ||
                       c->state == State::kRequestPending))
    c = nullptr;
  if (c == nullptr) {
    // Nobody on our side: refuse (guest-initiated connects included), never answer an RST.
    if (h.op != kVsockOpRst) QueueRstLocked(h.dst_port, h.src_port);
    return;
  }
  if (h.type != kVsockTypeStream || h.len > payload.remaining() || h.len > kVsockMaxPayload) {
    Log("virtio-vsock: malformed guest packet (type " + std::to_string(h.type) + ", len " +
        std::to_string(h.len) + "), connection reset");
    CloseConnectionLocked(c->host_port, true);
    return;
  }
  c->peer_buf_alloc = h.buf_alloc;
  c->peer_fwd_cnt = h.fwd_cnt;

  switch (h.op) {
    case kVsockOpResponse: {
      if (c->state != State::kRequestSent) {
        CloseConnectionLocked(c->host_port, true);
        return;
      }
      c->state = State::kEstablished;
      const std::string ok = "OK " + std::to_string(c->host_port) + "\n";
      c->to_host.insert(c->to_host.end(), ok.begin(), ok.end());
      c->unaccounted += ok.size();
      FlushToHostLocked(*c);
      return;
    }
    case kVsockOpRst:
      CloseConnectionLocked(c->host_port, false);
      return;
    case kVsockOpShutdown:
      if (c->state != State::kEstablished) {
        CloseConnectionLocked(c->host_port, true);
        return;
      }
      c->guest_shut_recv |= (h.flags & kVsockShutdownRcv) != 0;
      c->guest_shut_send |= (h.flags & kVsockShutdownSend) != 0;
      FlushToHostLocked(*c);  // acts on the shutdown once the buffer is empty
      return;
    case kVsockOpRw: {
      if (c->state != State::kEstablished || c->guest_shut_send) {
        CloseConnectionLocked(c->host_port, true);
        return;
      }
      // The guest may only send what our advertised buffer can hold.
      const uint32_t buffered = c->rx_cnt - c->fwd_cnt;
      if (h.len > kVsockHostBufAlloc - std::min(buffered, kVsockHostBufAlloc)) {
        Log("virtio-vsock: guest overran its send credit on port " +
            std::to_string(c->guest_port) + ", connection reset");
        CloseConnectionLocked(c->host_port, true);
        return;
      }
      const size_t old_size = c->to_host.size();
      c->to_host.resize(old_size + h.len);
      payload.Read(c->to_host.data() + old_size, h.len);
      c->rx_cnt += h.len;
      FlushToHostLocked(*c);
      return;
    }
    case kVsockOpCreditUpdate:
      return;  // the credit fields above were the point
    case kVsockOpCreditRequest:
      c->pending_credit_update = true;
      return;
    default:  // REQUEST on a live connection, unknown ops
      CloseConnectionLocked(c->host_port, true);
      return;
  }
}

bool VirtioVsock::HoldingRequestsLocked() const {
  return pending_transport_reset_ || transport_reset_unacknowledged_;
}

bool VirtioVsock::HasWorkLocked(const Connection& c) const {
  // A REQUEST the guest could take before the restore's TRANSPORT_RESET would be reset by it.
  if (c.state == State::kRequestPending) return !HoldingRequestsLocked();
  if (c.state != State::kEstablished) return false;
  return c.pending_shutdown_send || c.pending_credit_update ||
         (c.host_readable && CanSendDataLocked(c));
}

VirtioVsock::Connection* VirtioVsock::NextConnectionWithWorkLocked() {
  // Round robin from the connection after the last one served, so one busy stream cannot
  // starve the others.
  for (auto it = connections_.upper_bound(round_robin_after_); it != connections_.end(); ++it)
    if (HasWorkLocked(*it->second)) return it->second.get();
  for (auto it = connections_.begin();
       it != connections_.end() && it->first <= round_robin_after_; ++it)
    if (HasWorkLocked(*it->second)) return it->second.get();
  return nullptr;
}

void VirtioVsock::ProcessRxLocked() {
  if (!Usable()) return;
  Queue& queue = queues_[kVsockRxQueue];
  if (!queue.ready()) return;
  bool used = false;
  for (;;) {
    Connection* c = nullptr;
    if (orphan_packets_.empty()) {
      c = NextConnectionWithWorkLocked();
      if (c == nullptr) break;
    }
    std::optional<DescriptorChain> chain = queue.Pop();
    if (!chain) {
      rx_starved_ = true;
      break;
    }
    if (chain->writable_len < sizeof(VsockHeader))
      throw GuestError("receive buffer of " + std::to_string(chain->writable_len) +
                       " bytes cannot hold a packet header");
    SegmentCursor out(*memory_, chain->writable);
    VsockHeader h;
    if (c == nullptr) {
      h = orphan_packets_.front();
      orphan_packets_.pop_front();
    } else {
      round_robin_after_ = c->host_port;
      if (c->state == State::kRequestPending) {
        h = HeaderFor(*c, kVsockOpRequest);
        c->state = State::kRequestSent;
      } else if (c->host_readable && CanSendDataLocked(*c)) {
        out.Advance(sizeof(VsockHeader));
        const uint64_t room = std::min<uint64_t>(PeerCreditLocked(*c), kVsockMaxPayload);
        std::vector<iovec> spans = out.PeekSpans(room);
        const uint64_t asked = std::min<uint64_t>(room, out.remaining());
        ssize_t n = spans.empty() ? 0
                                  : readv(c->fd.get(), spans.data(),
                                          static_cast<int>(spans.size()));
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
          c->host_readable = false;
          queue.UndoPop();
          continue;
        }
        if (n < 0) {  // reset by the host client
          queue.UndoPop();
          CloseConnectionLocked(c->host_port, true);
          continue;
        }
        if (n == 0 && !spans.empty()) {
          c->host_eof = true;
          c->host_readable = false;
          h = HeaderFor(*c, kVsockOpShutdown);
          h.flags = kVsockShutdownSend;
          c->pending_shutdown_send = false;
        } else if (n == 0) {
          queue.UndoPop();  // a buffer with no payload room: wait for the next
          c->host_readable = false;
          continue;
        } else {
          if (static_cast<uint64_t>(n) < asked) c->host_readable = false;
          h = HeaderFor(*c, kVsockOpRw);
          h.len = static_cast<uint32_t>(n);
          c->tx_cnt += static_cast<uint32_t>(n);
        }
      } else if (c->pending_shutdown_send) {
        h = HeaderFor(*c, kVsockOpShutdown);
        h.flags = kVsockShutdownSend;
        c->pending_shutdown_send = false;
      } else {
        h = HeaderFor(*c, kVsockOpCreditUpdate);
      }
      c->pending_credit_update = false;  // every packet carries fwd_cnt
      c->last_fwd_cnt_sent = c->fwd_cnt;
    }
    SegmentCursor header_out(*memory_, chain->writable);
    header_out.Write(&h, sizeof h);
    queue.AddUsed(chain->head, static_cast<uint32_t>(sizeof h + h.len));
    used = true;
  }
  if (used) InterruptIfWanted(queue);
}

void VirtioVsock::ProcessEventQueueLocked() {
  Queue& queue = queues_[kVsockEventQueue];
  if (!queue.ready()) return;
  if (pending_transport_reset_) {
    std::optional<DescriptorChain> chain = queue.Pop();
    if (!chain) return;  // delivered when the driver posts a buffer (and notifies)
    const uint32_t event = kVsockEventTransportReset;  // struct virtio_vsock_event { le32 id; }
    SegmentCursor out(*memory_, chain->writable);
    out.Write(&event, sizeof event);  // throws GuestError when the buffer is too small
    queue.AddUsed(chain->head, sizeof event);
    pending_transport_reset_ = false;
    transport_reset_unacknowledged_ = true;
    event_avail_at_reset_ = queue.avail_index();
    InterruptIfWanted(queue);
    return;
  }
  // A notify: Linux's event work takes the used buffer, resets its connected sockets, re-posts
  // the buffer (the avail index moves) and kicks once after its loop. Only then may a REQUEST
  // reach the guest. (A driver that posts a buffer without handling the event only hurts its
  // own new connections.)
  if (transport_reset_unacknowledged_ && queue.avail_index() != event_avail_at_reset_) {
    transport_reset_unacknowledged_ = false;
    ProcessRxLocked();
    UpdateAllInterestsLocked();
  }
}

void VirtioVsock::OnResetLocked() {
  // Streams die with the driver; their host clients see the unix sockets close.
  std::vector<uint32_t> ports;
  for (auto& entry : connections_)
    if (entry.second->state != State::kAwaitingConnectLine) ports.push_back(entry.first);
  for (uint32_t port : ports) CloseConnectionLocked(port, false);
  orphan_packets_.clear();
  rx_starved_ = false;
  pending_transport_reset_ = false;
  transport_reset_unacknowledged_ = false;
}

void VirtioVsock::SaveDeviceStateLocked(StateWriter& out) const { out.U64(guest_cid_); }

void VirtioVsock::RestoreDeviceStateLocked(StateReader& in) {
  const uint64_t cid = in.U64();
  if (cid != guest_cid_)
    in.Fail("guest CID " + std::to_string(cid) + " differs from this device's " +
            std::to_string(guest_cid_));
  // The guest's streams pointed at host clients of another process: tell it they are gone.
  // (A driver without an event queue could never take the event, nor need it.)
  if (active_locked() && queues_[kVsockEventQueue].ready()) {
    pending_transport_reset_ = true;
    try {
      ProcessEventQueueLocked();
    } catch (const GuestError& e) {
      FailLocked(e.what());
    }
  }
}

}  // namespace smolvm::virtio
