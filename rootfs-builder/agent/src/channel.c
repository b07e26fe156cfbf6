#include "channel.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/vm_sockets.h>

#include "agent.h"
#include "event_loop.h"
#include "log.h"

/* While the host end of the virtio port is closed, re-check this often (ms). The kernel also
 * wakes us on connect; this is the fallback, cheap enough to be invisible. */
#define RECONNECT_POLL_MS 20

/* ------------------------------------------------------------------ finding the channel */

/* Reads a small sysfs attribute without its trailing newline. */
static int read_attr(const char *path, char *out, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, out, cap - 1);
    close(fd);
    if (n < 0)
        return -1;
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
        n--;
    out[n] = 0;
    return 0;
}

static int channel_open_vport(const char *name, char *path_out, size_t path_cap)
{
    DIR *d = opendir("/sys/class/virtio-ports");
    if (!d)
        return -1;
    struct dirent *e;
    int fd = -1;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strlen(e->d_name) > 64)
            continue;
        char attr[320], value[128];
        snprintf(attr, sizeof attr, "/sys/class/virtio-ports/%s/name", e->d_name);
        if (read_attr(attr, value, sizeof value) < 0 || strcmp(value, name) != 0)
            continue;
        snprintf(path_out, path_cap, "/dev/%s", e->d_name);
        fd = open(path_out, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
            LOG_WARN("open %s (virtio port %s): %s", path_out, name, strerror(errno));
        break;
    }
    closedir(d);
    return fd;
}

static bool channel_vport_host_absent(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, 0) < 0)
        return true;
    return (p.revents & POLLHUP) != 0;
}

static int channel_uevent_open(void)
{
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
    if (fd < 0)
        return -1;
    struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_groups = 1 };
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool channel_uevent_drain(int fd)
{
    char buf[4096];
    bool any = false;
    while (recv(fd, buf, sizeof buf, 0) > 0)
        any = true;
    return any;
}

static int channel_vsock_listen(uint32_t port)
{
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_ANY };
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 4) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* ------------------------------------------------------------------ keeping it */

/* At most one connection, on the vport or on an accepted vsock socket: the host connection
 * is connected on the vport when it is connected and no vsock socket is in use. */
static struct host_conn *g_host;
static int g_vport_fd = -1;
static int g_vsock_fd = -1; /* the accepted vsock connection in use, -1: none */
static int g_vsock_listen_fd = -1;
static int g_uevent_fd = -1;
static struct loop_timer g_reconnect_timer = { .fd = -1 };
static bool g_reconnect_armed;

static void on_vport_event(void *unused, uint32_t events);
static void on_vsock_conn_event(void *unused, uint32_t events);
static void on_vsock_accept(void *unused, uint32_t events);
static void on_uevent(void *unused, uint32_t events);

static struct watch w_vport = { on_vport_event, NULL };
static struct watch w_vsock_conn = { on_vsock_conn_event, NULL };
static struct watch w_vsock_listen = { on_vsock_accept, NULL };
static struct watch w_uevent = { on_uevent, NULL };

static bool vport_in_use(void)
{
    return host_conn_connected(g_host) && g_vsock_fd < 0;
}

static void begin(int fd, bool is_vport)
{
    if (g_reconnect_armed) {
        loop_timer_set(&g_reconnect_timer, 0, false);
        g_reconnect_armed = false;
    }
    host_conn_begin(g_host, fd, is_vport ? "virtio-serial" : "vsock");
}

static void arm_reconnect(void)
{
    if (!g_reconnect_armed && g_reconnect_timer.fd >= 0) {
        loop_timer_set(&g_reconnect_timer, RECONNECT_POLL_MS, true);
        g_reconnect_armed = true;
    }
}

void channel_conn_lost(void)
{
    if (g_vsock_fd >= 0) {
        watch_del(g_vsock_fd);
        close(g_vsock_fd);
        g_vsock_fd = -1;
    } else {
        arm_reconnect(); /* the port stays open; wait for the host to come back */
    }
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
    if (!host_conn_connected(g_host)) {
        if (channel_vport_host_absent(fd))
            arm_reconnect();
        else
            begin(fd, true);
    }
}

static void on_vport_event(void *unused, uint32_t events)
{
    if (!vport_in_use()) {
        if (host_conn_connected(g_host))
            return; /* a vsock connection is active */
        if (channel_vport_host_absent(g_vport_fd)) {
            arm_reconnect();
            return;
        }
        begin(g_vport_fd, true);
    }
    host_conn_read(g_host);
}

static void on_vsock_conn_event(void *unused, uint32_t events)
{
    if (g_vsock_fd >= 0)
        host_conn_read(g_host);
}

static void on_vsock_accept(void *unused, uint32_t events)
{
    for (;;) {
        int fd = accept4(g_vsock_listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (vport_in_use()) {
            LOG_WARN("vsock connection refused: the virtio-serial channel is in use");
            close(fd);
            continue;
        }
        host_conn_end(g_host, "replaced by a new vsock connection"); /* nothing when none */
        if (watch_add(fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, &w_vsock_conn) < 0) {
            LOG_ERR("epoll add vsock connection: %s", strerror(errno));
            close(fd);
            continue;
        }
        g_vsock_fd = fd;
        begin(fd, false);
        host_conn_read(g_host);
    }
}

static void on_reconnect_timer(void *unused, uint32_t events)
{
    loop_timer_ack(&g_reconnect_timer);
    if (host_conn_connected(g_host) || g_vport_fd < 0) {
        loop_timer_set(&g_reconnect_timer, 0, false);
        g_reconnect_armed = false;
        return;
    }
    if (!channel_vport_host_absent(g_vport_fd)) {
        begin(g_vport_fd, true);
        host_conn_read(g_host);
    }
}

static void on_uevent(void *unused, uint32_t events)
{
    if (channel_uevent_drain(g_uevent_fd))
        try_open_vport();
}

void channel_start(struct host_conn *host)
{
    g_host = host;
    loop_timer_open(&g_reconnect_timer, on_reconnect_timer, NULL);
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
}
