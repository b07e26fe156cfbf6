/* smolvm-init: PID 1 of every smolvm guest and the agent the host drives.
 *
 * Boot: the kernel starts /init from the initramfs. pivot_root cannot leave the initramfs
 * (EINVAL), and every container pivots into its own root, so the first step copies this
 * binary to a fresh tmpfs, moves that tmpfs onto / (switch_root style), chroots and re-execs.
 * Then it mounts /proc, /sys, /dev, /dev/pts, /dev/shm, /run and the cgroup2 tree, finds the
 * agent channel and serves the agent API on it, forever: PID 1 never exits (that would
 * panic the kernel) and reaps every child. Nothing about a container is on the kernel
 * command line: everything arrives through the channel. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "blkdev.h"
#include "cgroups.h"
#include "channel.h"
#include "child.h"
#include "container.h"
#include "log.h"
#include "service.h"
#include "stdio_pump.h"

#define STAGE2_ARG "--in-tmpfs-root"
#define NEW_ROOT "/.smolvm-root"
/* While the host end of the virtio port is closed, re-check this often (ms). The kernel also
 * wakes us on connect; this is the fallback, cheap enough to be invisible. */
#define RECONNECT_POLL_MS 20

struct host_conn g_conn;

static struct ttrpc_reader g_reader;
static struct write_queue g_wq;
static bool g_read_blocked; /* stopped reading requests: control lane full */
static bool g_shutting_down;

/* Channel state: at most one connection, on the vport or on an accepted vsock socket. */
static int g_chan_fd = -1;
static bool g_chan_is_vport;
static int g_vport_fd = -1;
static int g_vsock_listen_fd = -1;
static int g_uevent_fd = -1;
static struct loop_timer g_reconnect_timer = { .fd = -1 };
static bool g_reconnect_armed;
static struct loop_timer g_shutdown_timer = { .fd = -1 };

static void on_vport_event(void *unused, uint32_t events);
static void on_vsock_conn_event(void *unused, uint32_t events);
static void on_vsock_accept(void *unused, uint32_t events);
static void on_uevent(void *unused, uint32_t events);
static void on_cgroup_events(void *unused, uint32_t events);

static struct watch w_vport = { on_vport_event, NULL };
static struct watch w_vsock_conn = { on_vsock_conn_event, NULL };
static struct watch w_vsock_listen = { on_vsock_accept, NULL };
static struct watch w_uevent = { on_uevent, NULL };
static struct watch w_cgroup_events = { on_cgroup_events, NULL };

/* ------------------------------------------------------------------ output to the host */

void agent_queue_frame(enum wq_lane lane, uint32_t stream_id, uint8_t type, uint8_t flags,
                       const void *payload, size_t len)
{
    if (!g_conn.connected)
        return;
    if (wq_push_frame(&g_wq, lane, stream_id, type, flags, payload, len) < 0)
        LOG_ERR("dropping a %zu-byte frame on stream %u: out of memory", len, stream_id);
}

size_t agent_data_queued(void)
{
    return wq_queued(&g_wq, WQ_DATA);
}

void agent_respond(uint64_t gen, uint32_t stream_id, enum wq_lane lane, int32_t code,
                   const char *message, const pb_writer *payload)
{
    if (!g_conn.connected || gen != g_conn.gen)
        return; /* the request came on a connection that is gone */
    pb_writer w;
    pb_writer_init(&w);
    if (payload && payload->failed) {
        code = RPC_INTERNAL;
        message = "out of memory encoding the response";
        payload = NULL;
    }
    ttrpc_encode_response(&w, code, message, payload ? payload->buf : NULL, payload ? payload->len : 0);
    if (w.failed)
        LOG_ERR("out of memory encoding the response on stream %u", stream_id);
    else
        agent_queue_frame(lane, stream_id, TTRPC_RESPONSE, 0, w.buf, w.len);
    pb_writer_free(&w);
}

void agent_respond_error(uint64_t gen, uint32_t stream_id, int32_t code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    LOG_DEBUG("stream %u: error %d: %s", stream_id, code, msg);
    agent_respond(gen, stream_id, WQ_CONTROL, code, msg, NULL);
}

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

void agent_begin_shutdown(void)
{
    g_shutting_down = true;
    container_kill_all();
    sync();
    /* Give the answer a moment to reach the host, but never hang on a host that is gone. */
    if (g_shutdown_timer.fd >= 0)
        loop_timer_set(&g_shutdown_timer, 1000, false);
}

/* ------------------------------------------------------------------ the connection */

static void on_frame(void *ctx, const struct ttrpc_frame *f)
{
    service_on_frame(f);
}

static void on_oversized(void *ctx, uint32_t stream_id, uint8_t type, uint32_t len)
{
    service_on_oversized(stream_id, type, len);
}

static const struct ttrpc_reader_ops reader_ops = { on_frame, on_oversized };

static void conn_begin(int fd, bool is_vport)
{
    g_chan_fd = fd;
    g_chan_is_vport = is_vport;
    g_conn.connected = true;
    g_conn.handshake_done = false;
    g_conn.gen++;
    ttrpc_reader_reset(&g_reader);
    wq_clear(&g_wq);
    g_read_blocked = false;
    if (g_reconnect_armed) {
        loop_timer_set(&g_reconnect_timer, 0, false);
        g_reconnect_armed = false;
    }
    LOG_INFO("host connected (%s)", is_vport ? "virtio-serial" : "vsock");
}

static void arm_reconnect(void)
{
    if (!g_reconnect_armed && g_reconnect_timer.fd >= 0) {
        loop_timer_set(&g_reconnect_timer, RECONNECT_POLL_MS, true);
        g_reconnect_armed = true;
    }
}

static void conn_end(const char *why)
{
    if (!g_conn.connected)
        return;
    LOG_INFO("host disconnected: %s", why);
    g_conn.connected = false;
    g_conn.handshake_done = false;
    ttrpc_reader_reset(&g_reader);
    wq_clear(&g_wq);
    g_read_blocked = false;
    stream_detach_all();
    if (g_chan_is_vport) {
        arm_reconnect(); /* the port stays open; wait for the host to come back */
    } else {
        watch_del(g_chan_fd);
        close(g_chan_fd);
    }
    g_chan_fd = -1;
    if (g_shutting_down)
        power_off();
}

static void channel_read(void)
{
    static uint8_t buf[65536];
    while (g_conn.connected) {
        if (wq_queued(&g_wq, WQ_CONTROL) >= CONTROL_QUEUE_LIMIT) {
            g_read_blocked = true;
            return;
        }
        ssize_t n = read(g_chan_fd, buf, sizeof buf);
        if (n > 0) {
            if (ttrpc_reader_push(&g_reader, buf, (size_t)n, &reader_ops, NULL) < 0)
                conn_end("out of memory reading a frame");
            continue;
        }
        if (n == 0) {
            conn_end("end of stream");
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            conn_end(strerror(errno));
        return;
    }
}

static void channel_flush(void)
{
    for (int round = 0; round < 16 && g_conn.connected; round++) {
        int rc = wq_flush(&g_wq, g_chan_fd);
        if (rc < 0) {
            conn_end(strerror(errno));
            return;
        }
        /* Room in the data lane: let blocked output streams read again. */
        stream_update_all();
        if (g_read_blocked && wq_queued(&g_wq, WQ_CONTROL) < CONTROL_QUEUE_LIMIT) {
            g_read_blocked = false;
            channel_read();
            continue;
        }
        break;
    }
    if (g_shutting_down && (!g_conn.connected || wq_empty(&g_wq)))
        power_off();
}

static void try_open_vport(void)
{
    if (g_vport_fd >= 0)
        return;
    char path[128];
    int fd = channel_open_vport(AGENT_VPORT_NAME, path, sizeof path);
    if (fd < 0)
        return;
    g_vport_fd = fd;
    LOG_INFO("agent channel: %s", path);
    /* Edge-triggered: while the host is away the port reports POLLHUP continuously; the
     * kernel wakes the port's waitqueue when the host connects. */
    if (watch_add(fd, EPOLLIN | EPOLLOUT | EPOLLET, &w_vport) < 0)
        LOG_ERR("epoll add %s: %s", path, strerror(errno));
    if (g_chan_fd < 0) {
        if (channel_vport_host_absent(fd))
            arm_reconnect();
        else
            conn_begin(fd, true);
    }
}

static void on_vport_event(void *unused, uint32_t events)
{
    if (g_chan_fd != g_vport_fd) {
        if (g_chan_fd >= 0)
            return; /* a vsock connection is active */
        if (channel_vport_host_absent(g_vport_fd)) {
            arm_reconnect();
            return;
        }
        conn_begin(g_vport_fd, true);
    }
    channel_read();
}

static void on_vsock_conn_event(void *unused, uint32_t events)
{
    if (g_conn.connected && !g_chan_is_vport)
        channel_read();
}

static void on_vsock_accept(void *unused, uint32_t events)
{
    for (;;) {
        int fd = accept4(g_vsock_listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (g_chan_fd >= 0 && g_chan_is_vport) {
            LOG_WARN("vsock connection refused: the virtio-serial channel is in use");
            close(fd);
            continue;
        }
        if (g_chan_fd >= 0)
            conn_end("replaced by a new vsock connection");
        if (watch_add(fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, &w_vsock_conn) < 0) {
            LOG_ERR("epoll add vsock connection: %s", strerror(errno));
            close(fd);
            continue;
        }
        conn_begin(fd, false);
        channel_read();
    }
}

static void on_reconnect_timer(void *unused, uint32_t events)
{
    loop_timer_ack(&g_reconnect_timer);
    if (g_chan_fd >= 0 || g_vport_fd < 0) {
        loop_timer_set(&g_reconnect_timer, 0, false);
        g_reconnect_armed = false;
        return;
    }
    if (!channel_vport_host_absent(g_vport_fd)) {
        conn_begin(g_vport_fd, true);
        channel_read();
    }
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

static void on_uevent(void *unused, uint32_t events)
{
    if (channel_uevent_drain(g_uevent_fd))
        try_open_vport();
}

static void on_cgroup_events(void *unused, uint32_t events)
{
    container_on_cgroup_events();
}

static void on_shutdown_timer(void *unused, uint32_t events)
{
    LOG_WARN("shutdown: the host did not take the answer in time");
    power_off();
}

static void after_batch(void *unused)
{
    channel_flush();
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
    ttrpc_reader_init(&g_reader, TTRPC_MAX_PAYLOAD);
    wq_init(&g_wq);
    loop_timer_open(&g_reconnect_timer, on_reconnect_timer, NULL);
    loop_timer_open(&g_shutdown_timer, on_shutdown_timer, NULL);
    if (cgroups_events_fd() >= 0)
        watch_add(cgroups_events_fd(), EPOLLIN, &w_cgroup_events);

    /* Listen for uevents before looking, so a port announced in between is not missed. */
    g_uevent_fd = channel_uevent_open();
    if (g_uevent_fd >= 0)
        watch_add(g_uevent_fd, EPOLLIN, &w_uevent);
    try_open_vport();
    g_vsock_listen_fd = channel_vsock_listen(AGENT_VSOCK_PORT);
    if (g_vsock_listen_fd >= 0) {
        watch_add(g_vsock_listen_fd, EPOLLIN, &w_vsock_listen);
        LOG_INFO("agent channel: vsock port %u", AGENT_VSOCK_PORT);
    }
    if (g_vport_fd < 0 && g_vsock_listen_fd < 0)
        LOG_INFO("waiting for the agent channel (virtio port \"%s\")", AGENT_VPORT_NAME);

    event_loop_run(after_batch, NULL);
}
