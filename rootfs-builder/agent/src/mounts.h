/* A container's filesystem view, as runc builds it: the spec's mounts inside its root (proc,
 * sysfs, tmpfs, devpts, mqueue, cgroup2; binds of host files, copied in by the agent, and of
 * host directories, served by virtio-9p), the standard /dev nodes, then after pivot_root the
 * sysctls, read-only and masked paths and the read-only root.
 *
 * Mount points are resolved with openat2(RESOLVE_IN_ROOT): a symlink in the image cannot
 * send a mount outside the container's root. Functions return 0 or an RPC code with the
 * message in err. */
#ifndef SMOLVM_MOUNTS_H
#define SMOLVM_MOUNTS_H

#include <stddef.h>

#include "agent_pb.h"

/* Agent side, before anything is made: checks the mounts, paths and sysctls. */
int mounts_validate(const struct create_container_request *req, char *err, size_t errcap);
/* Agent side: writes the content of every host-file bind into files_dir/<mount index>. */
int mounts_write_files(const struct create_container_request *req, const char *files_dir, char *err,
                       size_t errcap);
/* Agent side, before the container's process is cloned: mounts the VM's 9p share once at
 * /run/smolvm/shares when a mount names a share_subpath (not at boot: a VM with an attached 9p
 * share cannot be saved as a template). */
int mounts_prepare_share(const struct create_container_request *req, char *err, size_t errcap);
/* Child, in the container's mount namespace, cwd = the root (before pivot_root). */
int mounts_apply(const struct create_container_request *req, const char *files_dir, char *err, size_t errcap);
/* Child, after pivot_root: sysctls, read-only paths, masked paths, read-only root. */
int mounts_finish(const struct create_container_request *req, char *err, size_t errcap);

#endif
