/* A container's root filesystem: its image disk (erofs, read-only) and writable disk (ext4),
 * found by the serials of the VM's slots, mounted under /run/smolvm/c/<id> and overlaid into
 * the root the container's init pivots into; and the directory of the host files copied in
 * for its file binds (mounts.h). */
#ifndef SMOLVM_ROOTFS_H
#define SMOLVM_ROOTFS_H

#include <stdbool.h>
#include <stddef.h>

#include "agent_pb.h"

#define CONTAINER_ROOT "/run/smolvm/c"

enum rootfs_mounted { ROOTFS_IMAGE = 1, ROOTFS_DISK = 2, ROOTFS_OVERLAY = 4 };

struct rootfs {
    char dir[256]; /* CONTAINER_ROOT/<id> */
    char image_dir[300];
    char disk_dir[300];
    char rootfs_dir[300]; /* the overlay: the container's root */
    char files_dir[300];  /* copies of the host files bind-mounted into the container */
    unsigned mounted;     /* enum rootfs_mounted */
};

/* The directories of container `id` (nothing is made yet). */
void rootfs_init_paths(struct rootfs *fs, const char *id);
/* A slot's filesystem type the agent mounts (erofs, ext4). */
bool rootfs_fs_supported(const char *fs_type);
/* Mounts image, writable disk and their overlay. 0, or -1 with *code and err filled in. */
int rootfs_mount(struct rootfs *fs, const struct create_container_request *req, int *code, char *err, size_t errcap);
/* Unmounts (detached) what rootfs_mount mounted and removes the directories. */
void rootfs_unmount(struct rootfs *fs);

#endif
