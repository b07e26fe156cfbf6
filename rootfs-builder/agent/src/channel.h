/* Finding the agent channel: the virtio-serial port named "smolvm.agent" (tcg backend,
 * /dev/vportNpM found through /sys/class/virtio-ports/NAME/name) or a vsock listener
 * (kvm backend, port 1024). Ports appear asynchronously after boot (the host announces
 * them), so callers watch kernel uevents instead of sleeping. */
#ifndef SMOLVM_CHANNEL_H
#define SMOLVM_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Opens the named virtio-serial port (O_RDWR|O_NONBLOCK|O_CLOEXEC). fd, or -1 (not present). */
int channel_open_vport(const char *name, char *path_out, size_t path_cap);
/* True while the host side of a virtio-serial port is not connected (poll reports POLLHUP). */
bool channel_vport_host_absent(int fd);
/* A netlink socket receiving kernel uevents (non-blocking), or -1. */
int channel_uevent_open(void);
/* Reads and discards pending uevents; true when any arrived. */
bool channel_uevent_drain(int fd);
/* Non-blocking vsock listener on the port, or -1 (no vsock transport in this guest). */
int channel_vsock_listen(uint32_t port);

#endif
