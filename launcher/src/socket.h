/* The shim daemon's socket, as shim/src/bootstrap/address.ts names and probes it:
 * /run/containerd/s/<hex(sha256(path.join(address, namespace, group)))>. */
#ifndef SMOLVM_LAUNCHER_SOCKET_H
#define SMOLVM_LAUNCHER_SOCKET_H

#include <stddef.h>

/* containerd's default socket dir (the only one the launcher serves: no 2.3+ BootstrapParams). */
#define SOCKET_DIR "/run/containerd/s"
/* address.ts MAX_SOCKET_PATH: sun_path is 108 bytes with the NUL, containerd keeps to 106. */
#define MAX_SOCKET_PATH 106

/* The socket path into buf (at least MAX_SOCKET_PATH + 1 bytes); -1 when this is not a case
 * the launcher computes byte for byte as node does: the address must be an absolute path that
 * path.join leaves as it is (no trailing '/', no '//', no '.' or '..' component), namespace and
 * group plain names, all of it printable ASCII (node decodes argv as UTF-8 before hashing). */
int shim_socket_path(const char *address, const char *namespace_, const char *group, char *buf, size_t cap);

/* mkdir -p SOCKET_DIR with mode 0711 (as start.ts); 0 or -1. */
int make_socket_dir(void);

/* address.ts socketAnswers + removeStaleSocket: 1 when something accepts connections on the
 * socket (or listens with a full backlog); 0 when nothing does (a socket file left there is
 * removed, as node does); -1 when it cannot be told. */
int probe_socket(const char *path);

#endif
