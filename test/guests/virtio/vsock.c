/* vsock mode: a stream server on port=P (default 1024) that echoes every byte back. It answers
   the host's REQUEST with RESPONSE (other ports get RST), echoes each RW payload straight out
   of the receive buffer it arrived in (no copy), keeps to the host's credit (buf_alloc and
   fwd_cnt of every host packet; CREDIT_REQUEST when short), advertises its own and sends
   CREDIT_UPDATE when idle with consumed bytes unreported, answers CREDIT_REQUEST, and meets
   the host's SHUTDOWN with its own. After conns=N connections (default 1) have ended it returns. */
#include "io.h"
#include "modes.h"
#include "virtio.h"

#define VSOCK_HOST_CID 2
#define VSOCK_TYPE_STREAM 1
#define OP_REQUEST 1
#define OP_RESPONSE 2
#define OP_RST 3
#define OP_SHUTDOWN 4
#define OP_RW 5
#define OP_CREDIT_UPDATE 6
#define OP_CREDIT_REQUEST 7
#define SHUTDOWN_RCV 1
#define SHUTDOWN_SEND 2

#define QUEUE_RX 0
#define QUEUE_TX 1
#define QUEUE_EVENT 2

#define RX_BUFFERS 8
#define RX_PAYLOAD 4096
/* What the guest lets the host have in flight: smaller than a 64 KiB burst, so bursts run
   through the credit cycle. */
#define GUEST_BUF_ALLOC 16384
#define MAX_CONNECTIONS 4
/* Polls of the used ring while waiting for host credit before giving up with FAIL (about
   6000 polls a second under PVM's ring-0 emulation, far more on hardware); the test's own
   timeout is the real bound. */
#define CREDIT_WAIT_SPINS 20000000ull

struct vsock_hdr {
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
} __attribute__((packed));
_Static_assert(sizeof(struct vsock_hdr) == 44, "virtio_vsock_hdr is 44 bytes");

struct connection {
  int in_use;
  int shut_down;            /* we sent our SHUTDOWN; waiting for the host's RST */
  uint32_t host_port;
  uint32_t peer_buf_alloc;  /* the host's receive buffer ... */
  uint32_t peer_fwd_cnt;    /* ... and how much of what we sent it has passed on */
  uint32_t tx_cnt;          /* payload bytes we sent */
  uint32_t rx_cnt;          /* payload bytes we received */
  uint32_t fwd_cnt;         /* ... of which consumed (echoed, buffer free again) */
  uint32_t reported_fwd_cnt;
  uint64_t messages;
  uint64_t credit_updates;  /* CREDIT_UPDATEs sent when idle */
  uint64_t credit_updates_received;
  uint64_t credit_waits;    /* echoes that had to wait for the host's credit */
};

static struct virtio_dev vsock;
static struct virtq rx_queue __attribute__((aligned(4096)));
static struct virtq tx_queue __attribute__((aligned(4096)));
static struct virtq event_queue __attribute__((aligned(4096)));
static struct vsock_hdr rx_headers[RX_BUFFERS];
static uint8_t rx_payloads[RX_BUFFERS][RX_PAYLOAD] __attribute__((aligned(4096)));
static struct vsock_hdr tx_header;
static uint32_t event_buffer[2];
static struct connection connections[MAX_CONNECTIONS];
static uint64_t guest_cid;
static uint32_t listen_port;

static void post_rx(int slot) {
  struct vbuf bufs[2] = {
      {&rx_headers[slot], sizeof rx_headers[slot], 1},
      {rx_payloads[slot], RX_PAYLOAD, 1},
  };
  virtq_submit(&rx_queue, bufs, 2, &rx_headers[slot]);
}

static uint32_t peer_credit(const struct connection *c) {
  uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;
  return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

/* Takes the host's credit fields, never moving fwd_cnt backwards (packets peeked at while
   waiting may be newer than the one being handled). */
static void note_peer_credit(struct connection *c, const struct vsock_hdr *h) {
  c->peer_buf_alloc = h->buf_alloc;
  if ((int32_t)(h->fwd_cnt - c->peer_fwd_cnt) > 0) c->peer_fwd_cnt = h->fwd_cnt;
}

/* Sends one packet to host port `host_port` from our port `port`, synchronously (the VMM
   serves the tx notify before the guest runs on; we still wait for the used buffer). */
static void send_packet(struct connection *c, uint32_t host_port, uint32_t port, uint16_t op,
                        uint32_t flags, const void *payload, uint32_t len) {
  tx_header = (struct vsock_hdr){
      .src_cid = guest_cid,
      .dst_cid = VSOCK_HOST_CID,
      .src_port = port,
      .dst_port = host_port,
      .len = len,
      .type = VSOCK_TYPE_STREAM,
      .op = op,
      .flags = flags,
      .buf_alloc = GUEST_BUF_ALLOC,
      .fwd_cnt = c ? c->fwd_cnt : 0,
  };
  if (c) c->reported_fwd_cnt = c->fwd_cnt;
  struct vbuf bufs[2] = {{&tx_header, sizeof tx_header, 0}, {payload, len, 0}};
  virtq_transact(&tx_queue, bufs, len ? 2 : 1);
}

static void send_rst(uint32_t host_port, uint32_t port) {
  send_packet(0, host_port, port, OP_RST, 0, 0, 0);
}

static struct connection *find_connection(uint32_t host_port) {
  for (int i = 0; i < MAX_CONNECTIONS; i++)
    if (connections[i].in_use && connections[i].host_port == host_port) return &connections[i];
  return 0;
}

/* Waits until the host can take `len` more bytes from `c`: looks at the credit fields of
   packets already received but not yet handled, and asks the host once. The host's answer
   needs a free receive buffer: our credit (16 KiB) keeps the host's data to four 4 KiB packets
   of the seven buffers left, unless the host splits its data into tiny packets; then this
   gives up with FAIL after CREDIT_WAIT_SPINS (a test guest, not a general driver). */
static void wait_for_credit(struct connection *c, uint32_t len) {
  int asked = 0;
  if (peer_credit(c) >= len) return;
  c->credit_waits++;
  for (uint64_t spin = 0; spin < CREDIT_WAIT_SPINS; spin++) {
    uint16_t pending = virtq_used_pending(&rx_queue);
    for (uint16_t k = 0; k < pending && k < VIRTQ_SIZE; k++) {
      uint32_t used_len;
      const struct vsock_hdr *h = virtq_peek_used(&rx_queue, k, &used_len);
      if (used_len >= sizeof *h && h->src_cid == VSOCK_HOST_CID && h->src_port == c->host_port)
        note_peer_credit(c, h);
    }
    if (peer_credit(c) >= len) return;
    if (!asked) {
      send_packet(c, c->host_port, listen_port, OP_CREDIT_REQUEST, 0, 0, 0);
      asked = 1;
    }
    cpu_relax();
  }
  fail_value("vsock: no send credit from the host for bytes:", len);
}

static void print_port_event(const char *what, uint32_t host_port) {
  put_str("vsock: ");
  put_str(what);
  put_str(" host port ");
  put_dec(host_port);
  put_char('\n');
}

/* Handles the packet in receive slot `slot`. Returns 1 when a connection ended. */
static int handle_packet(int slot, uint32_t used_len) {
  const struct vsock_hdr *h = &rx_headers[slot];
  if (used_len < sizeof *h) fail_value("vsock: used receive buffer shorter than a header:", used_len);
  if (h->len > used_len - sizeof *h || h->len > RX_PAYLOAD)
    fail_value("vsock: packet length beyond the used buffer:", h->len);
  if (h->src_cid != VSOCK_HOST_CID || h->dst_cid != guest_cid)
    fail_value("vsock: packet not from the host to us, src_cid", h->src_cid);
  struct connection *c = h->dst_port == listen_port ? find_connection(h->src_port) : 0;
  if (h->op == OP_REQUEST) {
    if (c || h->dst_port != listen_port || h->type != VSOCK_TYPE_STREAM) {
      print_port_event("refused", h->src_port);
      send_rst(h->src_port, h->dst_port);
      return 0;
    }
    for (int i = 0; i < MAX_CONNECTIONS && !c; i++)
      if (!connections[i].in_use) c = &connections[i];
    if (!c) {
      print_port_event("too many connections, refused", h->src_port);
      send_rst(h->src_port, h->dst_port);
      return 0;
    }
    *c = (struct connection){.in_use = 1, .host_port = h->src_port};
    note_peer_credit(c, h);
    c->peer_fwd_cnt = h->fwd_cnt;
    send_packet(c, c->host_port, listen_port, OP_RESPONSE, 0, 0, 0);
    print_port_event("accepted", c->host_port);
    return 0;
  }
  if (!c) {
    if (h->op != OP_RST) send_rst(h->src_port, h->dst_port);
    return 0;
  }
  note_peer_credit(c, h);
  switch (h->op) {
    case OP_RW:
      c->rx_cnt += h->len;
      if (c->rx_cnt - c->fwd_cnt > GUEST_BUF_ALLOC) fail("vsock: the host overran our credit");
      if (c->shut_down) return 0;  /* we said we take no more; drop it */
      c->messages++;
      wait_for_credit(c, h->len);
      send_packet(c, c->host_port, listen_port, OP_RW, 0, rx_payloads[slot], h->len);
      c->tx_cnt += h->len;
      c->fwd_cnt += h->len;  /* the echo is out: the receive buffer is free again */
      return 0;
    case OP_CREDIT_UPDATE:
      c->credit_updates_received++;
      return 0;
    case OP_CREDIT_REQUEST:
      send_packet(c, c->host_port, listen_port, OP_CREDIT_UPDATE, 0, 0, 0);
      return 0;
    case OP_SHUTDOWN:
      if (!c->shut_down) {
        put_str("vsock: host port ");
        put_dec(c->host_port);
        put_str(" shut down (flags ");
        put_dec(h->flags);
        put_str(") after ");
        put_dec(c->tx_cnt);
        put_str(" bytes echoed in ");
        put_dec(c->messages);
        put_str(" packets, ");
        put_dec(c->credit_updates);
        put_str(" credit updates sent, ");
        put_dec(c->credit_updates_received);
        put_str(" received, ");
        put_dec(c->credit_waits);
        put_str(" waits for credit\n");
        send_packet(c, c->host_port, listen_port, OP_SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND, 0, 0);
        c->shut_down = 1;
      }
      return 0;
    case OP_RST:
      print_port_event(c->shut_down ? "closed" : "reset by", c->host_port);
      c->in_use = 0;
      return 1;
    default:
      print_port_event("unexpected op, reset", c->host_port);
      send_rst(c->host_port, listen_port);
      c->in_use = 0;
      return 1;
  }
}

/* When idle: tell the host about bytes consumed since the last packet it got from us (the echo
   of a packet carries the count from before that packet was consumed), so a host that ran
   out of credit for us never waits for traffic that will not come. */
static void report_consumed_when_idle(void) {
  for (int i = 0; i < MAX_CONNECTIONS; i++) {
    struct connection *c = &connections[i];
    if (!c->in_use || c->shut_down || c->fwd_cnt == c->reported_fwd_cnt) continue;
    send_packet(c, c->host_port, listen_port, OP_CREDIT_UPDATE, 0, 0, 0);
    c->credit_updates++;
  }
}

void run_vsock(const char *cmdline) {
  listen_port = (uint32_t)cmdline_number(cmdline, "port", 1024);
  const uint64_t wanted_connections = cmdline_number(cmdline, "conns", 1);
  if (!virtio_find(cmdline, VIRTIO_ID_VSOCK, 0, &vsock)) fail("vsock: no virtio-vsock device");
  virtio_begin_init(&vsock, 0);
  guest_cid = virtio_config64(&vsock, 0);
  virtq_setup(&vsock, &rx_queue, QUEUE_RX);
  virtq_setup(&vsock, &tx_queue, QUEUE_TX);
  virtq_setup(&vsock, &event_queue, QUEUE_EVENT);
  /* Buffers posted before DRIVER_OK: the device must look at them on activation. */
  for (int i = 0; i < RX_BUFFERS; i++) post_rx(i);
  struct vbuf event = {event_buffer, sizeof event_buffer, 1};
  virtq_submit(&event_queue, &event, 1, event_buffer);
  virtio_driver_ok(&vsock);
  put_str("vsock: guest cid ");
  put_dec(guest_cid);
  put_str(", listening on port ");
  put_dec(listen_port);
  put_char('\n');

  uint64_t ended = 0;
  while (ended < wanted_connections) {
    int reposted = 0;
    uint32_t used_len;
    void *cookie;
    while (virtq_take_used(&rx_queue, &used_len, &cookie)) {
      int slot = (int)((struct vsock_hdr *)cookie - rx_headers);
      if (slot < 0 || slot >= RX_BUFFERS) fail("vsock: unknown receive buffer came back");
      ended += (uint64_t)handle_packet(slot, used_len);
      post_rx(slot);
      reposted = 1;
    }
    if (reposted) virtq_notify(&rx_queue);
    report_consumed_when_idle();
    if (virtq_used_pending(&event_queue)) fail("vsock: unexpected transport event");
    cpu_relax();
  }
  put_str("vsock: served ");
  put_dec(ended);
  put_str(" connections: ok\n");
  virtio_reset(&vsock);
}
