#include "mounts.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "rpc_status.h"

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

/* The mount(2) flags a Mount may carry; bind/rec/remount/propagation come separately. */
#define ALLOWED_FLAGS \
    (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_SYNCHRONOUS | MS_DIRSYNC | MS_NOATIME | MS_NODIRATIME | \
     MS_RELATIME | MS_STRICTATIME | MS_MANDLOCK)
#define PROPAGATION_KINDS (MS_PRIVATE | MS_SHARED | MS_SLAVE | MS_UNBINDABLE)
/* 9p transport options: msize as large as the virtio ring allows comfortably. */
#define NINEP_OPTIONS "trans=virtio,version=9p2000.L,msize=262144"
#define MAX_HOST_FILE (16u << 20)
/* The VM's one 9p share (the host bind-mounts each host directory into it) and where the
 * agent mounts it: in PID 1's namespace only, so a container sees just its own subdirectory.
 * nosuid,nodev here and on every bind of it: a setuid file or a device node in a host
 * directory does nothing in the guest either. Defence in depth only: a guest root can remount;
 * the host's own mounts of the share (read-only root, nosuid,nodev binds) are what hold. */
#define SHARE_TAG "smolvm"
#define SHARES_DIR "/run/smolvm/shares"
#define SHARE_MOUNT_FLAGS (MS_NOSUID | MS_NODEV)
#define MAX_SUBPATH 255

static const char *const fs_types[] = { "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup2" };

static bool is_fs_type(const char *t)
{
    for (size_t i = 0; i < sizeof fs_types / sizeof fs_types[0]; i++)
        if (strcmp(fs_types[i], t) == 0)
            return true;
    return false;
}

static bool valid_tag(const char *tag)
{
    size_t n = strlen(tag);
    if (n == 0 || n > 31)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)tag[i]) && tag[i] != '.' && tag[i] != '_' && tag[i] != '-')
            return false;
    return true;
}

/* A share subpath: relative, '/'-separated components of [A-Za-z0-9._-], none empty, "." or
 * "..", at most MAX_SUBPATH bytes (the decoder already refused NUL bytes). */
static bool valid_share_subpath(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > MAX_SUBPATH || p[0] == '/' || p[n - 1] == '/')
        return false;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && p[i] != '/') {
            if (!isalnum((unsigned char)p[i]) && p[i] != '.' && p[i] != '_' && p[i] != '-')
                return false;
            continue;
        }
        size_t len = i - start;
        if (len == 0 || (len == 1 && p[start] == '.') || (len == 2 && p[start] == '.' && p[start + 1] == '.'))
            return false;
        start = i + 1;
    }
    return true;
}

/* A sysctl name: dotted words of [A-Za-z0-9_-] (no '/', no empty or dot-dot part). */
static bool valid_sysctl_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 200 || name[0] == '.' || name[n - 1] == '.' || strstr(name, ".."))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '.' && name[i] != '_' && name[i] != '-')
            return false;
    return true;
}

/* runc's rule: only sysctls of namespaces the container has (ipc, uts, net of the VM). */
static bool namespaced_sysctl(const char *name)
{
    static const char *const exact[] = { "kernel.sem", "kernel.hostname", "kernel.domainname" };
    static const char *const prefixes[] = { "kernel.msg", "kernel.shm", "fs.mqueue.", "net." };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (strcmp(name, exact[i]) == 0)
            return true;
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

int mounts_validate(const struct create_container_request *req, char *err, size_t errcap)
{
    for (size_t i = 0; i < req->nmounts; i++) {
        const struct agent_mount *m = &req->mounts[i];
        const char *dest = m->destination ? m->destination : "";
        const char *type = m->type ? m->type : "";
        if (dest[0] != '/' || strcmp(dest, "/") == 0) {
            snprintf(err, errcap, "mounts[%zu]: destination \"%.200s\" must be an absolute path other than /", i, dest);
            return RPC_INVALID_ARGUMENT;
        }
        if (strcmp(type, "bind") == 0) {
            int sources = (m->file.present ? 1 : 0) + (m->share_tag ? 1 : 0) + (m->share_subpath ? 1 : 0);
            if (sources != 1) {
                snprintf(err, errcap,
                         "mount %.200s: a bind mount needs exactly one source: the host file's content, a 9p share "
                         "tag or a subpath of the VM's share",
                         dest);
                return RPC_INVALID_ARGUMENT;
            }
            if (m->share_tag && !valid_tag(m->share_tag)) {
                snprintf(err, errcap, "mount %.200s: invalid 9p share tag \"%.64s\"", dest, m->share_tag);
                return RPC_INVALID_ARGUMENT;
            }
            if (m->share_subpath && !valid_share_subpath(m->share_subpath)) {
                snprintf(err, errcap,
                         "mount %.200s: invalid share subpath \"%.255s\" (want a relative path of [A-Za-z0-9._-] "
                         "components, no \".\" or \"..\", at most %d bytes)",
                         dest, m->share_subpath, MAX_SUBPATH);
                return RPC_INVALID_ARGUMENT;
            }
            if (m->file.present && m->file.len > MAX_HOST_FILE) {
                snprintf(err, errcap, "mount %.200s: host file of %zu bytes is too large (max %u)", dest, m->file.len,
                         MAX_HOST_FILE);
                return RPC_INVALID_ARGUMENT;
            }
        } else if (is_fs_type(type)) {
            if (m->file.present || m->share_tag || m->share_subpath) {
                snprintf(err, errcap, "mount %.200s: a %s mount takes no host source", dest, type);
                return RPC_INVALID_ARGUMENT;
            }
        } else {
            snprintf(err, errcap,
                     "mount %.200s: type \"%.64s\" is not supported in the guest (want proc, sysfs, tmpfs, devpts, "
                     "mqueue, cgroup2 or bind)",
                     dest, type);
            return RPC_INVALID_ARGUMENT;
        }
        if (m->flags & ~(uint64_t)ALLOWED_FLAGS) {
            snprintf(err, errcap, "mount %.200s: unsupported mount flags 0x%llx", dest,
                     (unsigned long long)(m->flags & ~(uint64_t)ALLOWED_FLAGS));
            return RPC_INVALID_ARGUMENT;
        }
        uint64_t kind = m->propagation & ~(uint64_t)MS_REC;
        if ((m->propagation & ~(uint64_t)(PROPAGATION_KINDS | MS_REC)) || (kind & (kind - 1)) ||
            (m->propagation && !kind)) {
            snprintf(err, errcap, "mount %.200s: invalid propagation 0x%llx", dest, (unsigned long long)m->propagation);
            return RPC_INVALID_ARGUMENT;
        }
    }
    const struct agent_linux *l = &req->linux_sec;
    char *const *lists[2] = { l->masked_paths, l->readonly_paths };
    size_t counts[2] = { l->nmasked, l->nreadonly };
    static const char *const list_names[2] = { "linux.maskedPaths", "linux.readonlyPaths" };
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < counts[k]; i++) {
            if (lists[k][i][0] != '/') {
                snprintf(err, errcap, "%s: \"%.200s\" is not an absolute path", list_names[k], lists[k][i]);
                return RPC_INVALID_ARGUMENT;
            }
        }
    }
    for (size_t i = 0; i < l->nsysctls; i++) {
        const char *name = l->sysctls[i].name ? l->sysctls[i].name : "";
        if (!valid_sysctl_name(name)) {
            snprintf(err, errcap, "linux.sysctl: invalid name \"%.200s\"", name);
            return RPC_INVALID_ARGUMENT;
        }
        if (!namespaced_sysctl(name)) {
            snprintf(err, errcap, "linux.sysctl: \"%.200s\" is not in a namespace the container owns (allowed: "
                     "kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*, kernel.hostname, kernel.domainname, net.*)",
                     name);
            return RPC_INVALID_ARGUMENT;
        }
    }
    return RPC_OK;
}

static int write_all(int fd, const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

int mounts_write_files(const struct create_container_request *req, const char *files_dir, char *err, size_t errcap)
{
    bool made_dir = false;
    for (size_t i = 0; i < req->nmounts; i++) {
        const struct agent_mount *m = &req->mounts[i];
        if (!m->file.present)
            continue;
        if (!made_dir && mkdir(files_dir, 0700) < 0 && errno != EEXIST) {
            snprintf(err, errcap, "mkdir %s: %s", files_dir, strerror(errno));
            return RPC_INTERNAL;
        }
        made_dir = true;
        char path[512];
        snprintf(path, sizeof path, "%s/%zu", files_dir, i);
        mode_t mode = m->file.mode ? (mode_t)(m->file.mode & 07777) : 0644;
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 || write_all(fd, m->file.content, m->file.len) < 0 || fchown(fd, m->file.uid, m->file.gid) < 0 ||
            fchmod(fd, mode) < 0) {
            snprintf(err, errcap, "mount %.200s: write the host file's copy %s: %s", m->destination, path,
                     strerror(errno));
            if (fd >= 0)
                close(fd);
            return RPC_INTERNAL;
        }
        close(fd);
    }
    return RPC_OK;
}

static bool g_share_mounted;

int mounts_prepare_share(const struct create_container_request *req, char *err, size_t errcap)
{
    bool wanted = false;
    for (size_t i = 0; i < req->nmounts; i++)
        wanted |= req->mounts[i].share_subpath != NULL;
    if (!wanted || g_share_mounted)
        return RPC_OK;
    /* Not at boot: QEMU refuses to save (template) a VM whose 9p share is attached. */
    if (mkdir(SHARES_DIR, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errcap, "mkdir %s: %s", SHARES_DIR, strerror(errno));
        return RPC_INTERNAL;
    }
    if (mount(SHARE_TAG, SHARES_DIR, "9p", SHARE_MOUNT_FLAGS, NINEP_OPTIONS) < 0) {
        int e = errno;
        snprintf(err, errcap, "mount the VM's 9p share \"%s\" at %s: %s%s", SHARE_TAG, SHARES_DIR, strerror(e),
                 e == ENOENT ? " (this VM has no 9p share device: its backend cannot serve host directories)" : "");
        return RPC_INTERNAL;
    }
    g_share_mounted = true;
    return RPC_OK;
}

/* ---------------------------------------------------------------- in the child */

static int open_in_root(int rootfd, const char *path, int flags)
{
    struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC), .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
    return (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
}

/* The mount point `dest` inside the root, created when missing (directories on the way; the
 * last component a directory, or an empty file when is_file). An O_PATH fd, or -errno. */
static int make_mountpoint(int rootfd, const char *dest, bool is_file)
{
    char buf[4096];
    size_t n = strlen(dest);
    if (n >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, dest, n + 1);
    size_t pos = 0;
    while (buf[pos] == '/')
        pos++;
    if (!buf[pos])
        return -EINVAL;
    for (;;) {
        size_t end = pos;
        while (buf[end] && buf[end] != '/')
            end++;
        bool last = true;
        for (size_t k = end; buf[k]; k++)
            if (buf[k] != '/')
                last = false;
        char saved = buf[end];
        buf[end] = 0;
        int fd = open_in_root(rootfd, buf, O_PATH);
        if (fd < 0 && errno == ENOENT) {
            /* Create this component in its (already resolved) parent. */
            char name[256];
            size_t nlen = end - pos;
            if (nlen >= sizeof name)
                return -ENAMETOOLONG;
            memcpy(name, buf + pos, nlen);
            name[nlen] = 0;
            buf[pos] = 0;
            int parent = open_in_root(rootfd, pos > 0 ? buf : ".", O_PATH | O_DIRECTORY);
            buf[pos] = name[0];
            if (parent < 0)
                return -errno;
            int rc;
            if (last && is_file) {
                int f = openat(parent, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
                rc = f < 0 ? -1 : 0;
                if (f >= 0)
                    close(f);
            } else {
                rc = mkdirat(parent, name, 0755);
            }
            int e = errno;
            close(parent);
            if (rc < 0 && e != EEXIST)
                return -e;
            fd = open_in_root(rootfd, buf, O_PATH);
        }
        if (fd < 0)
            return -errno;
        buf[end] = saved;
        if (last)
            return fd;
        close(fd);
        pos = end;
        while (buf[pos] == '/')
            pos++;
    }
}

static void fd_path(int fd, char *out, size_t cap)
{
    snprintf(out, cap, "/proc/self/fd/%d", fd);
}

/* The standard device nodes and links of a fresh /dev tmpfs (devfd: that directory). */
static int populate_dev(int devfd, char *err, size_t errcap)
{
    static const struct {
        const char *name;
        unsigned major, minor;
    } nodes[] = {
        { "null", 1, 3 }, { "zero", 1, 5 }, { "full", 1, 7 }, { "random", 1, 8 }, { "urandom", 1, 9 }, { "tty", 5, 0 },
    };
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        if (mknodat(devfd, nodes[i].name, S_IFCHR | 0666, makedev(nodes[i].major, nodes[i].minor)) < 0 &&
            errno != EEXIST) {
            snprintf(err, errcap, "mknod /dev/%s: %s", nodes[i].name, strerror(errno));
            return RPC_INTERNAL;
        }
        fchmodat(devfd, nodes[i].name, 0666, 0); /* umask-proof */
    }
    static const char *const links[][2] = {
        { "pts/ptmx", "ptmx" }, { "/proc/self/fd", "fd" }, { "/proc/self/fd/0", "stdin" },
        { "/proc/self/fd/1", "stdout" }, { "/proc/self/fd/2", "stderr" },
    };
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        if (symlinkat(links[i][0], devfd, links[i][1]) < 0 && errno != EEXIST) {
            snprintf(err, errcap, "symlink /dev/%s: %s", links[i][1], strerror(errno));
            return RPC_INTERNAL;
        }
    }
    return RPC_OK;
}

/* Mounts a filesystem on `dest` inside the root and returns an O_PATH fd of the result. */
static int mount_at(int rootfd, const char *dest, bool is_file, const char *src, const char *fstype,
                    unsigned long flags, const char *data, char *err, size_t errcap)
{
    int fd = make_mountpoint(rootfd, dest, is_file);
    if (fd < 0) {
        snprintf(err, errcap, "mount %.200s: create the mount point: %s", dest, strerror(-fd));
        return -1;
    }
    char target[64];
    fd_path(fd, target, sizeof target);
    int rc = mount(src, target, fstype, flags, data);
    int e = errno;
    close(fd);
    if (rc < 0) {
        snprintf(err, errcap, "mount %.200s (%s%s%.200s): %s", dest, fstype ? fstype : "bind", data && data[0] ? ", " : "",
                 data ? data : "", strerror(e));
        return -1;
    }
    /* Reopen: the fd from before names the covered directory, not the new mount. */
    fd = open_in_root(rootfd, dest, O_PATH);
    if (fd < 0) {
        snprintf(err, errcap, "mount %.200s: reopen after mounting: %s", dest, strerror(errno));
        return -1;
    }
    return fd;
}

static int legacy_mounts(int rootfd, char *err, size_t errcap)
{
    int fd;
    if ((fd = mount_at(rootfd, "/proc", false, "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, err, errcap)) < 0)
        return RPC_INTERNAL;
    close(fd);
    if ((fd = mount_at(rootfd, "/dev", false, "tmpfs", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k", err,
                       errcap)) < 0)
        return RPC_INTERNAL;
    int dev_rc = populate_dev(fd, err, errcap);
    close(fd);
    if (dev_rc)
        return dev_rc;
    if ((fd = mount_at(rootfd, "/dev/pts", false, "devpts", "devpts", MS_NOSUID | MS_NOEXEC,
                       "newinstance,ptmxmode=0666,mode=0620", err, errcap)) < 0)
        return RPC_INTERNAL;
    close(fd);
    if ((fd = mount_at(rootfd, "/dev/shm", false, "shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                       "mode=1777,size=65536k", err, errcap)) < 0)
        return RPC_INTERNAL;
    close(fd);
    if ((fd = mount_at(rootfd, "/sys", false, "sysfs", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, err,
                       errcap)) < 0)
        return RPC_INTERNAL;
    close(fd);
    return RPC_OK;
}

static int spec_mount(int rootfd, const struct agent_mount *m, size_t index, const char *files_dir, char *err,
                      size_t errcap)
{
    const char *dest = m->destination;
    unsigned long flags = (unsigned long)m->flags;
    int fd;
    if (strcmp(m->type, "bind") == 0) {
        char src[512];
        if (m->file.present) {
            snprintf(src, sizeof src, "%s/%zu", files_dir, index);
            fd = mount_at(rootfd, dest, true, src, NULL, MS_BIND | (m->recursive ? MS_REC : 0), NULL, err, errcap);
        } else if (m->share_subpath) {
            /* A host directory the host bind-mounted into the VM's share: resolved beneath the
             * share's root without following any symlink, then bind-mounted from that fd. */
            int share = open(SHARES_DIR, O_PATH | O_DIRECTORY | O_CLOEXEC);
            struct open_how how = { .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
                                    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
            int dir = share < 0 ? -1 : (int)syscall(SYS_openat2, share, m->share_subpath, &how, sizeof how);
            int e = errno;
            if (share >= 0)
                close(share);
            if (dir < 0) {
                snprintf(err, errcap, "mount %.200s: the VM's share has no directory \"%.255s\": %s", dest,
                         m->share_subpath, strerror(e));
                return RPC_INTERNAL;
            }
            fd_path(dir, src, sizeof src);
            fd = mount_at(rootfd, dest, false, src, NULL, MS_BIND | (m->recursive ? MS_REC : 0), NULL, err, errcap);
            close(dir);
            /* The remount below sets exactly `flags`: the share's nosuid,nodev must be in them. */
            flags |= SHARE_MOUNT_FLAGS;
        } else {
            /* A host directory: the 9p device exporting it (read-only is enforced by the VMM
             * too). Mounted directly, with the flags. */
            fd = mount_at(rootfd, dest, false, m->share_tag, "9p", flags, NINEP_OPTIONS, err, errcap);
            flags = 0;
        }
        if (fd < 0)
            return RPC_INTERNAL;
        if (flags) {
            /* Bind mounts take their flags only from a remount. */
            char target[64];
            fd_path(fd, target, sizeof target);
            if (mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | flags, NULL) < 0) {
                snprintf(err, errcap, "mount %.200s: remount with flags 0x%lx: %s", dest, flags, strerror(errno));
                close(fd);
                return RPC_INTERNAL;
            }
        }
    } else {
        const char *fstype = m->type;
        const char *src = m->source && m->source[0] ? m->source : fstype;
        fd = mount_at(rootfd, dest, false, src, fstype, flags, m->data && m->data[0] ? m->data : NULL, err, errcap);
        if (fd < 0)
            return RPC_INTERNAL;
        if (strcmp(dest, "/dev") == 0 && strcmp(fstype, "tmpfs") == 0) {
            int rc = populate_dev(fd, err, errcap);
            if (rc) {
                close(fd);
                return rc;
            }
        }
    }
    if (m->propagation) {
        char target[64];
        fd_path(fd, target, sizeof target);
        if (mount(NULL, target, NULL, (unsigned long)m->propagation, NULL) < 0) {
            snprintf(err, errcap, "mount %.200s: set propagation 0x%llx: %s", dest, (unsigned long long)m->propagation,
                     strerror(errno));
            close(fd);
            return RPC_INTERNAL;
        }
    }
    close(fd);
    return RPC_OK;
}

int mounts_apply(const struct create_container_request *req, const char *files_dir, char *err, size_t errcap)
{
    int rootfd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        snprintf(err, errcap, "open the container root: %s", strerror(errno));
        return RPC_INTERNAL;
    }
    int rc = RPC_OK;
    if (!req->has_mounts) {
        rc = legacy_mounts(rootfd, err, errcap);
        close(rootfd);
        return rc;
    }
    bool has_dev = false;
    for (size_t i = 0; i < req->nmounts; i++)
        has_dev |= strcmp(req->mounts[i].destination, "/dev") == 0;
    if (!has_dev) {
        /* No /dev in the spec: the container still gets the standard nodes (as runc does). */
        int fd = mount_at(rootfd, "/dev", false, "tmpfs", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k",
                          err, errcap);
        if (fd < 0) {
            close(rootfd);
            return RPC_INTERNAL;
        }
        rc = populate_dev(fd, err, errcap);
        close(fd);
    }
    for (size_t i = 0; i < req->nmounts && rc == RPC_OK; i++)
        rc = spec_mount(rootfd, &req->mounts[i], i, files_dir, err, errcap);
    close(rootfd);
    return rc;
}

static int write_sysctl(const struct agent_sysctl *s, char *err, size_t errcap)
{
    char path[300];
    int n = snprintf(path, sizeof path, "/proc/sys/%s", s->name);
    if (n < 0 || (size_t)n >= sizeof path) {
        snprintf(err, errcap, "linux.sysctl %.200s: name too long", s->name);
        return RPC_INVALID_ARGUMENT;
    }
    for (char *p = path + strlen("/proc/sys/"); *p; p++)
        if (*p == '.')
            *p = '/';
    struct stat st;
    if (stat("/proc/sys", &st) < 0) {
        snprintf(err, errcap, "linux.sysctl %.200s: /proc is not mounted in the container (the spec's mounts have no proc)",
                 s->name);
        return RPC_INVALID_ARGUMENT;
    }
    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
    const char *value = s->value ? s->value : "";
    if (fd < 0 || write_all(fd, (const uint8_t *)value, strlen(value)) < 0) {
        int e = errno;
        snprintf(err, errcap, "linux.sysctl %.200s=%.200s: %s", s->name, value,
                 e == ENOENT ? "no such sysctl in the guest kernel" : strerror(e));
        if (fd >= 0)
            close(fd);
        return RPC_INVALID_ARGUMENT;
    }
    close(fd);
    return RPC_OK;
}

static int readonly_path(const char *path, char *err, size_t errcap)
{
    if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0) {
        if (errno == ENOENT)
            return RPC_OK;
        snprintf(err, errcap, "linux.readonlyPaths %.200s: bind: %s", path, strerror(errno));
        return RPC_INTERNAL;
    }
    /* Keep the flags the mount already has (proc's nosuid, nodev, noexec). */
    struct statvfs sv;
    unsigned long keep = 0;
    if (statvfs(path, &sv) == 0)
        keep = (sv.f_flag & ST_NOSUID ? MS_NOSUID : 0) | (sv.f_flag & ST_NODEV ? MS_NODEV : 0) |
               (sv.f_flag & ST_NOEXEC ? MS_NOEXEC : 0);
    if (mount(path, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC | keep, NULL) < 0) {
        snprintf(err, errcap, "linux.readonlyPaths %.200s: remount read-only: %s", path, strerror(errno));
        return RPC_INTERNAL;
    }
    return RPC_OK;
}

static int mask_path(const char *path, char *err, size_t errcap)
{
    if (mount("/dev/null", path, NULL, MS_BIND, NULL) == 0 || errno == ENOENT)
        return RPC_OK;
    if (errno == ENOTDIR) {
        /* A directory: an empty read-only tmpfs over it. */
        if (mount("tmpfs", path, "tmpfs", MS_RDONLY, NULL) == 0)
            return RPC_OK;
    }
    snprintf(err, errcap, "linux.maskedPaths %.200s: %s", path, strerror(errno));
    return RPC_INTERNAL;
}

int mounts_finish(const struct create_container_request *req, char *err, size_t errcap)
{
    if (req->readonly_rootfs && mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0) {
        snprintf(err, errcap, "root.readonly: remount / read-only: %s", strerror(errno));
        return RPC_INTERNAL;
    }
    const struct agent_linux *l = &req->linux_sec;
    int rc;
    for (size_t i = 0; i < l->nsysctls; i++)
        if ((rc = write_sysctl(&l->sysctls[i], err, errcap)))
            return rc;
    for (size_t i = 0; i < l->nreadonly; i++)
        if ((rc = readonly_path(l->readonly_paths[i], err, errcap)))
            return rc;
    for (size_t i = 0; i < l->nmasked; i++)
        if ((rc = mask_path(l->masked_paths[i], err, errcap)))
            return rc;
    return RPC_OK;
}
