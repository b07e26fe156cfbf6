#include "channel.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/vm_sockets.h>

#include "log.h"

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

int channel_open_vport(const char *name, char *path_out, size_t path_cap)
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

bool channel_vport_host_absent(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, 0) < 0)
        return true;
    return (p.revents & POLLHUP) != 0;
}

int channel_uevent_open(void)
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

bool channel_uevent_drain(int fd)
{
    char buf[4096];
    bool any = false;
    while (recv(fd, buf, sizeof buf, 0) > 0)
        any = true;
    return any;
}

int channel_vsock_listen(uint32_t port)
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
