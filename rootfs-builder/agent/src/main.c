/* smolvm-init: PID 1 of every smolvm guest and the agent the host drives.
 *
 * Boot: the kernel starts /init from the initramfs. pivot_root cannot leave the initramfs
 * (EINVAL), and every container pivots into its own root, so the first step copies this
 * binary to a fresh tmpfs, moves that tmpfs onto / (switch_root style), chroots and re-execs.
 * Then it mounts /proc, /sys, /dev, /dev/pts, /dev/shm, /run and the cgroup2 tree, finds the
 * agent channel and serves the agent API on it, forever: PID 1 never exits (that would
 * panic the kernel) and reaps every child. Nothing about a container is on the kernel
 * command line: everything arrives through the channel.
 *
 * main makes the agent's objects (the host connection, the stdio streams, the RPC layer) and
 * wires them: the connection's frames go to the RPC layer, the container layer's events to
 * it, the streams send through the connection. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blkdev.h"
#include "cgroups.h"
#include "channel.h"
#include "child.h"
#include "container.h"
#include "event_loop.h"
#include "host_conn.h"
#include "log.h"
#include "rpc.h"
#include "stdio_pump.h"

#define STAGE2_ARG "--in-tmpfs-root"
#define NEW_ROOT "/.smolvm-root"

/* The agent's objects, made once by main and passed to each other explicitly. */
struct agent {
    struct host_conn conn;
    struct stream_set streams;
    struct rpc rpc;
    bool shutting_down;
    struct loop_timer shutdown_timer;
};

/* ------------------------------------------------------------------ shutdown */

static __attribute__((noreturn)) void power_off(void)
{
    sync();
    LOG_INFO("rebooting (the VMM exits)");
    reboot(RB_AUTOBOOT);
    LOG_ERR("reboot: %s", strerror(errno));
    reboot(RB_POWER_OFF);
    for (;;)
        pause(); /* PID 1 must not exit */
}

/* Shutdown was answered: flush, sync and reboot (QEMU -no-reboot exits). */
static void begin_shutdown(void *ctx)
{
    struct agent *a = ctx;
    a->shutting_down = true;
    container_kill_all();
    sync();
    /* Give the answer a moment to reach the host, but never hang on a host that is gone. */
    if (a->shutdown_timer.fd >= 0)
        loop_timer_set(&a->shutdown_timer, 1000, false);
}

static void on_shutdown_timer(void *ctx, uint32_t events)
{
    LOG_WARN("shutdown: the host did not take the answer in time");
    power_off();
}

/* ------------------------------------------------------------------ wiring */

static void conn_frame(void *ctx, const struct ttrpc_frame *f)
{
    struct agent *a = ctx;
    rpc_on_frame(&a->rpc, f);
}

static void conn_oversized(void *ctx, uint32_t stream_id, uint8_t type, uint32_t len)
{
    struct agent *a = ctx;
    rpc_on_oversized(&a->rpc, stream_id, type, len);
}

static void conn_data_room(void *ctx)
{
    struct agent *a = ctx;
    stream_update_all(&a->streams);
}

static void conn_lost(void *ctx)
{
    struct agent *a = ctx;
    stream_detach_all(&a->streams);
    channel_conn_lost();
    if (a->shutting_down)
        power_off();
}

static const struct host_conn_ops conn_ops = { conn_frame, conn_oversized, conn_data_room, conn_lost };

static void stream_send(void *conn, enum wq_lane lane, uint32_t stream_id, uint8_t flags, const void *payload,
                        size_t len)
{
    host_conn_send(conn, lane, stream_id, TTRPC_DATA, flags, payload, len);
}

static size_t stream_data_queued(const void *conn)
{
    return host_conn_queued(conn, WQ_DATA);
}

/* After every batch of events: what was queued goes to the host. */
static void after_batch(void *ctx)
{
    struct agent *a = ctx;
    host_conn_flush(&a->conn);
    if (a->shutting_down && (!host_conn_connected(&a->conn) || host_conn_drained(&a->conn)))
        power_off();
}

/* ------------------------------------------------------------------ boot */

static void mount_or_log(const char *src, const char *target, const char *fs, unsigned long flags,
                         const char *data)
{
    if (mkdir(target, 0755) < 0 && errno != EEXIST)
        LOG_WARN("mkdir %s: %s", target, strerror(errno));
    if (mount(src, target, fs, flags, data) < 0 && errno != EBUSY)
        LOG_ERR("mount %s on %s: %s", fs, target, strerror(errno));
}

static int copy_file(const char *from, const char *to, mode_t mode)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -1;
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (out < 0) {
        close(in);
        return -1;
    }
    char buf[65536];
    ssize_t n;
    int rc = 0;
    while ((n = read(in, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w <= 0) {
                rc = -1;
                break;
            }
            off += w;
        }
        if (rc < 0)
            break;
    }
    if (n < 0)
        rc = -1;
    close(in);
    if (close(out) < 0)
        rc = -1;
    return rc;
}

/* Stage 1: initramfs root -> tmpfs root, then re-exec. Returns only on failure. */
static void move_to_tmpfs_root(const char *self)
{
    if (mkdir(NEW_ROOT, 0755) < 0 && errno != EEXIST)
        goto fail;
    if (mount("tmpfs", NEW_ROOT, "tmpfs", 0, "mode=0755") < 0)
        goto fail;
    if (copy_file(self, NEW_ROOT "/init", 0755) < 0)
        goto fail;
    static const char *const dirs[] = { "dev", "proc", "sys", "run", "tmp" };
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char path[64];
        snprintf(path, sizeof path, NEW_ROOT "/%s", dirs[i]);
        mkdir(path, 0755);
    }
    chmod(NEW_ROOT "/tmp", 01777);
    unlink(self); /* the initramfs stays in memory underneath: keep it small */
    if (chdir(NEW_ROOT) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0)
        goto fail;
    char *const argv[] = { "/init", STAGE2_ARG, NULL };
    /* Unknown kernel parameters of the form k=v reach init as environment: keep the debug
     * switch (SMOLVM_DEBUG=1 on the command line), drop the rest. */
    char debug_env[32];
    const char *debug = getenv("SMOLVM_DEBUG");
    snprintf(debug_env, sizeof debug_env, "SMOLVM_DEBUG=%s", debug ? debug : "");
    char *const envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", debug ? debug_env : NULL, NULL };
    execve("/init", argv, envp);
fail:
    LOG_ERR("moving to a tmpfs root failed: %s (containers will not be able to pivot_root)", strerror(errno));
}

static void mount_system(void)
{
    mount_or_log("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_or_log("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_or_log("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    mount_or_log("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
    mount_or_log("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777");
    mount_or_log("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    mount_or_log("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    cgroups_init();
    blkdev_remember("/sys/block");
    if (mkdir("/run/smolvm", 0700) < 0 || mkdir("/run/smolvm/c", 0700) < 0)
        LOG_ERR("mkdir /run/smolvm/c: %s", strerror(errno));
}

static void on_signalfd(void *obj, uint32_t events)
{
    int fd = *(int *)obj;
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) {
        /* Only SIGCHLD is routed here; reaping covers every coalesced signal. */
    }
    container_reap_children();
}

int main(int argc, char **argv)
{
    log_init();
    if (getpid() != 1) {
        LOG_ERR("smolvm-init must run as PID 1 of a smolvm guest");
        return 2;
    }
    if (argc < 2 || strcmp(argv[1], STAGE2_ARG) != 0)
        move_to_tmpfs_root(argv[0] && argv[0][0] == '/' ? argv[0] : "/init");
    umask(022);
    mount_system();
    child_prewarm_namespaces();
    const char *debug = getenv("SMOLVM_DEBUG");
    log_debug_enabled = debug && debug[0] && strcmp(debug, "0") != 0;
    LOG_DEBUG("debug logging on (SMOLVM_DEBUG on the kernel command line)");

    signal(SIGPIPE, SIG_IGN);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    static int sfd;
    sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    static struct watch w_signal = { on_signalfd, &sfd };

    if (event_loop_init() < 0 || sfd < 0) {
        LOG_ERR("epoll/signalfd: %s: the agent cannot run", strerror(errno));
        for (;;)
            pause();
    }
    watch_add(sfd, EPOLLIN, &w_signal);

    static struct agent agent;
    struct agent *a = &agent;
    host_conn_init(&a->conn, &conn_ops, a);
    struct stream_link link = { stream_send, stream_data_queued, &a->conn };
    stream_set_init(&a->streams, &link);
    rpc_init(&a->rpc, &a->conn, &a->streams, begin_shutdown, a);
    struct container_events events = rpc_container_events(&a->rpc);
    containers_init(&events, &a->streams);
    loop_timer_open(&a->shutdown_timer, on_shutdown_timer, a);
    channel_start(&a->conn);

    event_loop_run(after_batch, a);
}
