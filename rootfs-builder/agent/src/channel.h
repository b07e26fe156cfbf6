/* The agent channel: the virtio-serial port named "smolvm.agent" (tcg backend, /dev/vportNpM
 * found through /sys/class/virtio-ports/NAME/name) or a vsock listener (kvm backend, port
 * 1024). Ports appear asynchronously after boot (the host announces them), so the channel
 * watches kernel uevents instead of sleeping. Every connection's fd goes to the host
 * connection (host_conn.h); at most one at a time: a new vsock connection replaces the old
 * one, and while the host end of the port is closed it is polled until the host is back. */
#ifndef SMOLVM_CHANNEL_H
#define SMOLVM_CHANNEL_H

#include "host_conn.h"

/* Starts looking for the channel and hands every connection to host. */
void channel_start(struct host_conn *host);
/* The host connection ended: a vsock socket is closed, the port is polled for the host. */
void channel_conn_lost(void);

#endif
