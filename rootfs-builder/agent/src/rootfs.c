#include "rootfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blkdev.h"
#include "fsutil.h"
#include "log.h"
#include "rpc_status.h"

void rootfs_init_paths(struct rootfs *fs, const char *id)
{
    snprintf(fs->dir, sizeof fs->dir, "%s/%s", CONTAINER_ROOT, id);
    snprintf(fs->image_dir, sizeof fs->image_dir, "%s/image", fs->dir);
    snprintf(fs->disk_dir, sizeof fs->disk_dir, "%s/disk", fs->dir);
    snprintf(fs->rootfs_dir, sizeof fs->rootfs_dir, "%s/rootfs", fs->dir);
    snprintf(fs->files_dir, sizeof fs->files_dir, "%s/files", fs->dir);
}

bool rootfs_fs_supported(const char *fs)
{
    return strcmp(fs, "erofs") == 0 || strcmp(fs, "ext4") == 0;
}

/* /dev/vdX (virtio-blk slot) or /dev/sdX (a pod VM's hot-added SCSI disk) whose serial is
 * `serial`, waiting a bounded time for a hot-added disk to appear (blkdev.c). */
static int find_slot_device(const char *serial, char *dev, size_t cap)
{
    return blkdev_wait_by_serial("/sys/block", "/dev", serial, BLKDEV_WAIT_MS, dev, cap);
}

#define SLOT_RESIZE_WAIT_MS 5000

/* A pod's slot the host has just refilled: the new size reaches the guest through virtio-blk's
 * config-change interrupt, which the kernel handles in a work item. Wait (bounded) until the
 * device's capacity (BLKGETSIZE64: the size /sys/block/<name>/size shows, without a walk
 * through sysfs) is the size the host announced, so that the mount sees the whole new file,
 * never the placeholder's or the previous container's size. size_bytes 0: nothing to wait for. */
static int wait_slot_capacity(int fd, const char *dev, const struct disk_slot *slot, int *code, char *err,
                              size_t errcap)
{
    if (slot->size_bytes == 0)
        return 0;
    if (slot->size_bytes % 512 != 0) {
        *code = RPC_INVALID_ARGUMENT;
        snprintf(err, errcap, "disk slot %s: size_bytes %llu is not a whole number of 512-byte sectors", slot->serial,
                 (unsigned long long)slot->size_bytes);
        return -1;
    }
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    uint64_t have = 0;
    for (;;) {
        bool known = fd >= 0 && ioctl(fd, BLKGETSIZE64, &have) == 0;
        if (known && have == slot->size_bytes)
            return 0;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long waited_ms = (now.tv_sec - start.tv_sec) * 1000LL + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (waited_ms >= SLOT_RESIZE_WAIT_MS) {
            *code = RPC_FAILED_PRECONDITION;
            if (known)
                snprintf(err, errcap,
                         "disk slot %s (%s): the device holds %llu bytes, the host announced %llu; the size change "
                         "did not reach the guest within %d ms",
                         slot->serial, dev, (unsigned long long)have, (unsigned long long)slot->size_bytes,
                         SLOT_RESIZE_WAIT_MS);
            else
                snprintf(err, errcap, "disk slot %s (%s): cannot read its capacity: %s", slot->serial, dev,
                         fd < 0 ? "cannot open it" : strerror(errno));
            return -1;
        }
        struct timespec pause = { 0, 1000000 }; /* 1 ms */
        nanosleep(&pause, NULL);
    }
}

/* Before a slot's disk is mounted: its size as the host announced it (wait_slot_capacity),
 * then its cached blocks dropped (after a snapshot restore, or in a pod's reused slot, the
 * slot may hold a new file). 0, or -1 with code and err filled in. */
static int prepare_slot_device(const char *dev, const struct disk_slot *slot, int *code, char *err, size_t errcap)
{
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    int rc = wait_slot_capacity(fd, dev, slot, code, err, errcap);
    if (rc == 0 && fd >= 0 && ioctl(fd, BLKFLSBUF, 0) < 0)
        LOG_WARN("BLKFLSBUF %s: %s", dev, strerror(errno));
    if (fd >= 0)
        close(fd);
    return rc;
}

void rootfs_unmount(struct rootfs *fs)
{
    /* Detached: the dying init's mount namespace may still pin them for a moment. */
    if (fs->mounted & ROOTFS_OVERLAY)
        umount2(fs->rootfs_dir, MNT_DETACH);
    if (fs->mounted & ROOTFS_DISK)
        umount2(fs->disk_dir, MNT_DETACH);
    if (fs->mounted & ROOTFS_IMAGE)
        umount2(fs->image_dir, MNT_DETACH);
    fs->mounted = 0;
    DIR *files = opendir(fs->files_dir);
    if (files) {
        struct dirent *e;
        while ((e = readdir(files)) != NULL)
            if (e->d_name[0] != '.')
                unlinkat(dirfd(files), e->d_name, 0);
        closedir(files);
        rmdir(fs->files_dir);
    }
    rmdir(fs->rootfs_dir);
    rmdir(fs->disk_dir);
    rmdir(fs->image_dir);
    rmdir(fs->dir);
}

/* The writable disk's mount. ext4 without no_prefetch_block_bitmaps starts its lazyinit
 * kthread at every mount to read each group's block bitmap ahead (for the allocator's
 * choice of groups; they are read on demand otherwise): a kthread and reads competing with
 * the container's start on the VM's one vCPU, for a throwaway disk of a few groups. Only the
 * allocator's placement heuristics see the difference. 0, or -1 with errno. */
static int mount_writable_disk(const char *dev, const char *dir, const char *fs, unsigned long flags)
{
    if (strcmp(fs, "ext4") != 0)
        return mount(dev, dir, fs, flags, NULL);
    if (mount(dev, dir, fs, flags, "no_prefetch_block_bitmaps") == 0)
        return 0;
    if (errno != EINVAL)
        return -1;
    return mount(dev, dir, fs, flags, NULL); /* a kernel without the option (before 5.9) */
}

int rootfs_mount(struct rootfs *fs, const struct create_container_request *req,
                           int *code, char *err, size_t errcap)
{
    char image_dev[64], disk_dev[64];
    const char *image_fs = req->image.fs_type && req->image.fs_type[0] ? req->image.fs_type : "erofs";
    if (find_slot_device(req->image.serial, image_dev, sizeof image_dev) < 0) {
        *code = RPC_NOT_FOUND;
        snprintf(err, errcap, "no disk with serial \"%s\" (image slot) appeared within %d ms", req->image.serial,
                 BLKDEV_WAIT_MS);
        return -1;
    }
    TIMING_MARK("find_image");
    const char *disk_fs = NULL;
    if (req->writable.present) {
        disk_fs = req->writable.fs_type && req->writable.fs_type[0] ? req->writable.fs_type : "ext4";
        if (find_slot_device(req->writable.serial, disk_dev, sizeof disk_dev) < 0) {
            *code = RPC_NOT_FOUND;
            snprintf(err, errcap, "no disk with serial \"%s\" (writable slot) appeared within %d ms",
                     req->writable.serial, BLKDEV_WAIT_MS);
            return -1;
        }
        TIMING_MARK("find_disk");
    }
    if (prepare_slot_device(image_dev, &req->image, code, err, errcap) < 0 ||
        (req->writable.present && prepare_slot_device(disk_dev, &req->writable, code, err, errcap) < 0))
        return -1;
    TIMING_MARK("capacity");
    *code = RPC_INTERNAL;
    if (mkdir_p(fs->dir, 0700) < 0 || mkdir_one(fs->image_dir, 0700) < 0 || mkdir_one(fs->disk_dir, 0700) < 0 ||
        mkdir_one(fs->rootfs_dir, 0755) < 0) {
        snprintf(err, errcap, "mkdir under %s: %s", fs->dir, strerror(errno));
        return -1;
    }
    TIMING_MARK("mkdirs");
    if (mount(image_dev, fs->image_dir, image_fs, MS_RDONLY | MS_NODEV, NULL) < 0) {
        snprintf(err, errcap, "mount image %s (%s, slot %s): %s", image_dev, image_fs, req->image.serial,
                 strerror(errno));
        return -1;
    }
    fs->mounted |= ROOTFS_IMAGE;
    TIMING_MARK("mount_image");
    if (!req->writable.present) {
        /* No writable layer: the image itself is the (read-only) root. */
        if (mount(fs->image_dir, fs->rootfs_dir, NULL, MS_BIND, NULL) < 0 ||
            mount(NULL, fs->rootfs_dir, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0) {
            snprintf(err, errcap, "bind image as rootfs: %s", strerror(errno));
            return -1;
        }
        fs->mounted |= ROOTFS_OVERLAY;
        return 0;
    }
    unsigned long disk_flags = MS_NODEV | (req->writable.read_only ? MS_RDONLY : 0);
    if (mount_writable_disk(disk_dev, fs->disk_dir, disk_fs, disk_flags) < 0) {
        snprintf(err, errcap, "mount writable disk %s (%s, slot %s): %s", disk_dev, disk_fs,
                 req->writable.serial, strerror(errno));
        return -1;
    }
    fs->mounted |= ROOTFS_DISK;
    TIMING_MARK("mount_disk");
    char upper[320], work[320];
    snprintf(upper, sizeof upper, "%s/upper", fs->disk_dir);
    snprintf(work, sizeof work, "%s/work", fs->disk_dir);
    if (!req->writable.read_only) {
        if ((mkdir(upper, 0755) < 0 && errno != EEXIST) || (mkdir(work, 0700) < 0 && errno != EEXIST)) {
            snprintf(err, errcap, "mkdir upper/work on the writable disk: %s", strerror(errno));
            return -1;
        }
    }
    if (!req->writable.read_only) {
        /* The overlay's root takes the upper dir's mode and owner: give it the image root's
         * (as runc's root is the image's own root dir), whatever made the disk; nothing to
         * write when the disk already has them (a fresh disk for the usual root-owned 0755). */
        struct stat img_root, up;
        bool same = stat(fs->image_dir, &img_root) == 0 && stat(upper, &up) == 0 && up.st_uid == img_root.st_uid &&
                    up.st_gid == img_root.st_gid && (up.st_mode & 07777) == (img_root.st_mode & 07777);
        if (!same && (stat(fs->image_dir, &img_root) < 0 || chown(upper, img_root.st_uid, img_root.st_gid) < 0 ||
                      chmod(upper, img_root.st_mode & 07777) < 0)) {
            snprintf(err, errcap, "give the writable layer the image root's mode and owner: %s", strerror(errno));
            return -1;
        }
    }
    TIMING_MARK("upper_work");
    char opts[1024];
    /* The ids allowed in paths exclude ',' and ':', the overlay option separators. */
    snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s", fs->image_dir, upper, work);
    /* root.readonly is applied in the container after its mounts (their mount points may
     * have to be made first), as runc does. */
    unsigned long flags = req->writable.read_only ? MS_RDONLY : 0;
    if (mount("overlay", fs->rootfs_dir, "overlay", flags, opts) < 0) {
        snprintf(err, errcap, "mount overlay (%s): %s", opts, strerror(errno));
        return -1;
    }
    fs->mounted |= ROOTFS_OVERLAY;
    TIMING_MARK("overlay");
    return 0;
}
