// smolvm guest kernel self-test: runs as PID 1 (/init of a test initramfs) and checks that the
// kernel really has what containers need (tinyconfig silently drops options whose dependencies
// are missing). One line per check on the console:
//   PASS <name>            or   FAIL <name>: <reason>
// then "SELFTEST SUMMARY passed=N failed=M" and a reboot (QEMU started with -no-reboot exits).
//
// Every check runs in its own child process with a deadline, so a check that crashes or hangs
// is reported as a failure instead of taking PID 1 (and the whole guest) with it.
//
// The host side (test/integration/kernel.test.ts) provides:
//   virtio-blk serial "slot0": an erofs image holding hello.txt = "hello from erofs\n"
//   virtio-blk serial "slot1": an empty ext4 filesystem
//   a virtserialport named "smolvm.agent"; we write PORT_HELLO and expect PORT_PING from the host.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pty.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/aio_abi.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <linux/vm_sockets.h>

#define CHECK_TIMEOUT_MS 15000
#define REASON_MAX 512
#define PORT_NAME "smolvm.agent"
#define PORT_HELLO "SMOLVM-SELFTEST-HELLO\n"
#define PORT_PING "HOST-PING\n"
#define EROFS_HELLO "hello from erofs\n"
#define SCRIPT_PROBE_ARG "--binfmt-script-probe"
#define SCRIPT_PROBE_EXIT 42

#define TMPFS_MAGIC_VALUE 0x01021994
#define EROFS_MAGIC_VALUE 0xE0F5E1E2
#define OVERLAY_MAGIC_VALUE 0x794c7630
#define EXT4_MAGIC_VALUE 0xEF53
#define CGROUP2_MAGIC_VALUE 0x63677270

// The failure reason of the check running in this (child) process.
static char reason[REASON_MAX];

// Records why a check failed (printf-style, errno text appended by the caller's format).
__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, sizeof reason, fmt, ap);
  va_end(ap);
  return -1;
}

#define FAIL_ERRNO(what) fail("%s: %s", (what), strerror(errno))

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
  // Unbuffered, one write per line: lines never interleave with kernel messages mid-line.
  (void)!write(STDOUT_FILENO, line, len);
}

static int write_file(const char *path, const char *data) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  size_t len = strlen(data);
  ssize_t n = write(fd, data, len);
  int saved = errno;
  close(fd);
  errno = saved;
  return n == (ssize_t)len ? 0 : -1;
}

// Reads up to cap-1 bytes and NUL-terminates; returns the length or -1.
static ssize_t read_file(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t used = 0;
  while (used + 1 < cap) {
    ssize_t n = read(fd, buf + used, cap - 1 - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      int saved = errno;
      close(fd);
      errno = saved;
      return -1;
    }
    if (n == 0) break;
    used += (size_t)n;
  }
  buf[used] = '\0';
  close(fd);
  return (ssize_t)used;
}

static int expect_fs_magic(const char *path, unsigned long magic, const char *fsname) {
  struct statfs st;
  if (statfs(path, &st) != 0) return FAIL_ERRNO("statfs");
  if ((unsigned long)st.f_type != magic) {
    return fail("%s is not %s (f_type 0x%lx)", path, fsname, (unsigned long)st.f_type);
  }
  return 0;
}

// Finds the virtio-blk disk whose serial is `serial` (/sys/block/<dev>/serial) -> "/dev/<dev>".
static int find_disk_by_serial(const char *serial, char *dev, size_t devcap) {
  DIR *dir = opendir("/sys/block");
  if (!dir) return FAIL_ERRNO("opendir /sys/block");
  struct dirent *entry;
  int found = -1;
  while ((entry = readdir(dir)) != NULL) {
    if (entry->d_name[0] == '.') continue;
    char path[300], value[64];
    snprintf(path, sizeof path, "/sys/block/%s/serial", entry->d_name);
    if (read_file(path, value, sizeof value) < 0) continue;
    value[strcspn(value, "\n")] = '\0';
    if (strcmp(value, serial) == 0) {
      snprintf(dev, devcap, "/dev/%s", entry->d_name);
      found = 0;
      break;
    }
  }
  closedir(dir);
  if (found != 0) return fail("no block device with serial \"%s\" in /sys/block/*/serial", serial);
  return 0;
}

static long long monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// --- checks: each returns 0 (pass) or -1 with `reason` set ----------------------------------

static int check_futex(void) {
  uint32_t word = 7;
  struct timespec timeout = {0, 10 * 1000 * 1000};
  // Value mismatch: EAGAIN at once. Value match: sleeps until the timeout.
  if (syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 8, &timeout, NULL, 0) != -1 || errno != EAGAIN) {
    return fail("FUTEX_WAIT on a mismatched value: expected EAGAIN, got %s", strerror(errno));
  }
  if (syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 7, &timeout, NULL, 0) != -1 || errno != ETIMEDOUT) {
    return fail("FUTEX_WAIT with timeout: expected ETIMEDOUT, got %s", strerror(errno));
  }
  if (syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0) < 0) return FAIL_ERRNO("FUTEX_WAKE");
  return 0;
}

static int check_pipe(void) {
  int fds[2];
  char buf[8];
  if (pipe2(fds, O_CLOEXEC) != 0) return FAIL_ERRNO("pipe2");
  if (write(fds[1], "pipe", 4) != 4) return FAIL_ERRNO("write");
  if (read(fds[0], buf, sizeof buf) != 4 || memcmp(buf, "pipe", 4) != 0) return fail("read back mismatch");
  return 0;
}

static int check_epoll(void) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return FAIL_ERRNO("epoll_create1");
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return FAIL_ERRNO("pipe2");
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[0]};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[0], &ev) != 0) return FAIL_ERRNO("epoll_ctl");
  if (write(fds[1], "x", 1) != 1) return FAIL_ERRNO("write");
  struct epoll_event got;
  int n = epoll_wait(ep, &got, 1, 1000);
  if (n != 1 || got.data.fd != fds[0] || !(got.events & EPOLLIN)) return fail("epoll_wait returned %d", n);
  return 0;
}

static int check_eventfd(void) {
  int fd = eventfd(0, EFD_CLOEXEC);
  if (fd < 0) return FAIL_ERRNO("eventfd");
  uint64_t value = 5;
  if (write(fd, &value, sizeof value) != sizeof value) return FAIL_ERRNO("write");
  value = 0;
  if (read(fd, &value, sizeof value) != sizeof value || value != 5) return fail("read %llu, want 5", (unsigned long long)value);
  return 0;
}

static int check_signalfd(void) {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGUSR1);
  if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0) return FAIL_ERRNO("sigprocmask");
  int fd = signalfd(-1, &mask, SFD_CLOEXEC);
  if (fd < 0) return FAIL_ERRNO("signalfd");
  if (raise(SIGUSR1) != 0) return FAIL_ERRNO("raise");
  struct signalfd_siginfo info;
  if (read(fd, &info, sizeof info) != sizeof info) return FAIL_ERRNO("read");
  if (info.ssi_signo != SIGUSR1) return fail("got signal %u, want SIGUSR1", info.ssi_signo);
  return 0;
}

static int check_timerfd(void) {
  int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
  if (fd < 0) return FAIL_ERRNO("timerfd_create");
  struct itimerspec spec = {.it_value = {0, 10 * 1000 * 1000}};
  if (timerfd_settime(fd, 0, &spec, NULL) != 0) return FAIL_ERRNO("timerfd_settime");
  uint64_t expirations = 0;
  if (read(fd, &expirations, sizeof expirations) != sizeof expirations) return FAIL_ERRNO("read");
  if (expirations < 1) return fail("no expiration");
  return 0;
}

static int check_posix_timers(void) {
  timer_t timer;
  struct sigevent sev = {.sigev_notify = SIGEV_NONE};
  if (timer_create(CLOCK_MONOTONIC, &sev, &timer) != 0) return FAIL_ERRNO("timer_create");
  struct itimerspec spec = {.it_value = {5, 0}};
  if (timer_settime(timer, 0, &spec, NULL) != 0) return FAIL_ERRNO("timer_settime");
  if (timer_delete(timer) != 0) return FAIL_ERRNO("timer_delete");
  return 0;
}

static int check_inotify(void) {
  int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (fd < 0) return FAIL_ERRNO("inotify_init1");
  if (inotify_add_watch(fd, "/tmp", IN_CREATE) < 0) return FAIL_ERRNO("inotify_add_watch /tmp");
  if (write_file("/tmp/inotify-probe", "x") != 0) return FAIL_ERRNO("create /tmp/inotify-probe");
  char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  ssize_t n = read(fd, buf, sizeof buf);
  if (n < (ssize_t)sizeof(struct inotify_event)) return fail("no IN_CREATE event (%s)", n < 0 ? strerror(errno) : "short");
  return 0;
}

static int check_fhandle(void) {
  struct {
    struct file_handle handle;
    unsigned char bytes[MAX_HANDLE_SZ];
  } fh;
  fh.handle.handle_bytes = MAX_HANDLE_SZ;
  int mount_id;
  if (name_to_handle_at(AT_FDCWD, "/tmp", &fh.handle, &mount_id, 0) != 0) return FAIL_ERRNO("name_to_handle_at /tmp");
  return 0;
}

static int check_aio(void) {
  aio_context_t ctx = 0;
  if (syscall(SYS_io_setup, 4, &ctx) != 0) return FAIL_ERRNO("io_setup");
  if (syscall(SYS_io_destroy, ctx) != 0) return FAIL_ERRNO("io_destroy");
  return 0;
}

static int check_sysvipc(void) {
  int id = msgget(IPC_PRIVATE, 0600);
  if (id < 0) return FAIL_ERRNO("msgget");
  if (msgctl(id, IPC_RMID, NULL) != 0) return FAIL_ERRNO("msgctl IPC_RMID");
  return 0;
}

static int check_mqueue(void) {
  if (mkdir("/dev/mqueue", 0755) != 0 && errno != EEXIST) return FAIL_ERRNO("mkdir /dev/mqueue");
  if (mount("mqueue", "/dev/mqueue", "mqueue", 0, NULL) != 0) return FAIL_ERRNO("mount mqueue");
  struct mq_attr attr = {.mq_maxmsg = 4, .mq_msgsize = 16};
  mqd_t q = mq_open("/smolvm-probe", O_RDWR | O_CREAT | O_EXCL, 0600, &attr);
  if (q == (mqd_t)-1) return FAIL_ERRNO("mq_open");
  if (mq_send(q, "mq", 2, 0) != 0) return FAIL_ERRNO("mq_send");
  char buf[16];
  if (mq_receive(q, buf, sizeof buf, NULL) != 2) return FAIL_ERRNO("mq_receive");
  mq_unlink("/smolvm-probe");
  return 0;
}

static int check_getrandom(void) {
  // Containers block at startup if the kernel's RNG is not ready: it must be, without waiting.
  unsigned char buf[32];
  if (getrandom(buf, sizeof buf, GRND_NONBLOCK) != (ssize_t)sizeof buf) return FAIL_ERRNO("getrandom(GRND_NONBLOCK)");
  return 0;
}

static int check_hwrng_virtio(void) {
  char current[64];
  if (read_file("/sys/class/misc/hw_random/rng_current", current, sizeof current) < 0) {
    return FAIL_ERRNO("read /sys/class/misc/hw_random/rng_current");
  }
  if (strncmp(current, "virtio_rng", 10) != 0) return fail("rng_current is \"%.*s\", want virtio_rng.*", (int)strcspn(current, "\n"), current);
  int fd = open("/dev/hwrng", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return FAIL_ERRNO("open /dev/hwrng");
  unsigned char buf[16];
  if (read(fd, buf, sizeof buf) <= 0) return FAIL_ERRNO("read /dev/hwrng");
  return 0;
}

static int check_unix_socket(void) {
  int pair[2];
  char buf[8];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return FAIL_ERRNO("socketpair");
  if (write(pair[0], "unix", 4) != 4 || read(pair[1], buf, sizeof buf) != 4) return FAIL_ERRNO("socketpair io");

  // A path-bound listener, as daemons in containers use.
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return FAIL_ERRNO("socket");
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof addr.sun_path, "/tmp/selftest.sock");
  unlink(addr.sun_path);
  if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0) return FAIL_ERRNO("bind");
  if (listen(listener, 1) != 0) return FAIL_ERRNO("listen");
  int client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (client < 0 || connect(client, (struct sockaddr *)&addr, sizeof addr) != 0) return FAIL_ERRNO("connect");
  int server = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
  if (server < 0) return FAIL_ERRNO("accept4");
  if (write(client, "path", 4) != 4 || read(server, buf, sizeof buf) != 4) return FAIL_ERRNO("bound socket io");
  return 0;
}

// A fresh kernel's loopback is down; bring it up (needed for every loopback connect).
static int loopback_up(void) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return FAIL_ERRNO("socket(AF_INET)");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
  if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) return FAIL_ERRNO("SIOCGIFFLAGS lo");
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) return FAIL_ERRNO("SIOCSIFFLAGS lo up");
  close(fd);
  return 0;
}

// Listens on the loopback address of `family` (port chosen by the kernel), connects, echoes.
static int tcp_loopback(int family) {
  if (loopback_up() != 0) return -1;
  struct sockaddr_storage addr;
  socklen_t addrlen;
  memset(&addr, 0, sizeof addr);
  if (family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)&addr;
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addrlen = sizeof *in;
  } else {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&addr;
    in6->sin6_family = AF_INET6;
    in6->sin6_addr = in6addr_loopback;
    addrlen = sizeof *in6;
  }
  int listener = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return FAIL_ERRNO("socket");
  if (bind(listener, (struct sockaddr *)&addr, addrlen) != 0) return FAIL_ERRNO("bind loopback");
  if (listen(listener, 1) != 0) return FAIL_ERRNO("listen");
  if (getsockname(listener, (struct sockaddr *)&addr, &addrlen) != 0) return FAIL_ERRNO("getsockname");
  int client = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (client < 0) return FAIL_ERRNO("socket");
  if (connect(client, (struct sockaddr *)&addr, addrlen) != 0) return FAIL_ERRNO("connect loopback");
  int server = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
  if (server < 0) return FAIL_ERRNO("accept4");
  char buf[8];
  if (write(client, "tcp!", 4) != 4) return FAIL_ERRNO("write");
  if (read(server, buf, sizeof buf) != 4 || memcmp(buf, "tcp!", 4) != 0) return fail("echo mismatch");
  return 0;
}

static int check_inet_tcp(void) { return tcp_loopback(AF_INET); }
static int check_inet6_tcp(void) { return tcp_loopback(AF_INET6); }

static int check_vsock_socket(void) {
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return FAIL_ERRNO("socket(AF_VSOCK)");
  return 0;
}

static int check_pty(void) {
  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) return FAIL_ERRNO("posix_openpt (/dev/ptmx)");
  if (grantpt(master) != 0 || unlockpt(master) != 0) return FAIL_ERRNO("grantpt/unlockpt");
  char name[64];
  if (ptsname_r(master, name, sizeof name) != 0) return FAIL_ERRNO("ptsname_r");
  int slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) return fail("open %s: %s", name, strerror(errno));
  if (write(master, "pty\n", 4) != 4) return FAIL_ERRNO("write master");
  char buf[16];
  ssize_t n = read(slave, buf, sizeof buf);
  if (n < 3 || memcmp(buf, "pty", 3) != 0) return fail("slave read %zd bytes", n);
  return 0;
}

static int unshare_one(int flag, const char *what) {
  if (unshare(flag) != 0) return fail("unshare(%s): %s", what, strerror(errno));
  return 0;
}

static int check_ns_mnt(void) {
  if (unshare_one(CLONE_NEWNS, "CLONE_NEWNS") != 0) return -1;
  // Mounts made in the new namespace must stay invisible outside it.
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return FAIL_ERRNO("make / private");
  if (mkdir("/mnt/ns-probe", 0755) != 0 && errno != EEXIST) return FAIL_ERRNO("mkdir /mnt/ns-probe");
  if (mount("tmpfs", "/mnt/ns-probe", "tmpfs", 0, "size=64k") != 0) return FAIL_ERRNO("mount in the new namespace");
  pid_t outsider = fork();  // unshare(CLONE_NEWNS) moved us, not the parent: fork a process that
  if (outsider < 0) return FAIL_ERRNO("fork");  // joins the init namespace via /proc/1/ns/mnt.
  if (outsider == 0) {
    int nsfd = open("/proc/1/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (nsfd < 0 || setns(nsfd, CLONE_NEWNS) != 0) _exit(2);
    if (chdir("/") != 0) _exit(2);
    // The probe dir itself is visible (it lives on /mnt's tmpfs); a mount on it would differ in st_dev.
    struct stat probe, parent;
    if (stat("/mnt/ns-probe", &probe) != 0 || stat("/mnt", &parent) != 0) _exit(2);
    _exit(probe.st_dev != parent.st_dev ? 1 : 0);
  }
  int status;
  if (waitpid(outsider, &status, 0) != outsider) return FAIL_ERRNO("waitpid");
  if (!WIFEXITED(status) || WEXITSTATUS(status) == 2) return fail("setns/stat from the initial mount namespace failed");
  if (WEXITSTATUS(status) == 1) return fail("a mount made in the new namespace is visible outside it");
  return 0;
}

static int check_ns_uts(void) {
  if (unshare_one(CLONE_NEWUTS, "CLONE_NEWUTS") != 0) return -1;
  if (sethostname("in-uts-ns", 9) != 0) return FAIL_ERRNO("sethostname");
  return 0;
}

static int check_ns_ipc(void) { return unshare_one(CLONE_NEWIPC, "CLONE_NEWIPC"); }
static int check_ns_user(void) { return unshare_one(CLONE_NEWUSER, "CLONE_NEWUSER"); }

static int check_ns_net(void) {
  if (unshare_one(CLONE_NEWNET, "CLONE_NEWNET") != 0) return -1;
  return loopback_up();
}

static int check_ns_pid(void) {
  if (unshare_one(CLONE_NEWPID, "CLONE_NEWPID") != 0) return -1;
  pid_t child = fork();
  if (child < 0) return FAIL_ERRNO("fork into the new pid namespace");
  if (child == 0) _exit(getpid() == 1 ? 0 : 1);
  int status;
  if (waitpid(child, &status, 0) != child) return FAIL_ERRNO("waitpid");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return fail("first process of the new pid namespace is not pid 1");
  return 0;
}

static int check_cgroup2(void) {
  const char *root = "/sys/fs/cgroup";
  if (mount("cgroup2", root, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) return FAIL_ERRNO("mount cgroup2");
  if (expect_fs_magic(root, CGROUP2_MAGIC_VALUE, "cgroup2") != 0) return -1;
  char controllers[256];
  if (read_file("/sys/fs/cgroup/cgroup.controllers", controllers, sizeof controllers) < 0) return FAIL_ERRNO("read cgroup.controllers");
  controllers[strcspn(controllers, "\n")] = '\0';
  const char *wanted[] = {"cpu", "memory", "pids"};
  for (size_t i = 0; i < sizeof wanted / sizeof *wanted; i++) {
    char padded[300], needle[32];
    snprintf(padded, sizeof padded, " %s ", controllers);
    snprintf(needle, sizeof needle, " %s ", wanted[i]);
    if (!strstr(padded, needle)) return fail("controller %s missing from \"%s\"", wanted[i], controllers);
  }
  // Delegate to a child group and set limits there, as a container runtime does.
  if (write_file("/sys/fs/cgroup/cgroup.subtree_control", "+cpu +memory +pids") != 0) return FAIL_ERRNO("enable controllers in subtree_control");
  if (mkdir("/sys/fs/cgroup/selftest", 0755) != 0) return FAIL_ERRNO("mkdir a child cgroup");
  if (write_file("/sys/fs/cgroup/selftest/memory.max", "67108864") != 0) return FAIL_ERRNO("write memory.max");
  if (write_file("/sys/fs/cgroup/selftest/pids.max", "16") != 0) return FAIL_ERRNO("write pids.max");
  if (write_file("/sys/fs/cgroup/selftest/cpu.max", "50000 100000") != 0) return FAIL_ERRNO("write cpu.max");
  char pid[32];
  snprintf(pid, sizeof pid, "%d", (int)getpid());
  if (write_file("/sys/fs/cgroup/selftest/cgroup.procs", pid) != 0) return FAIL_ERRNO("move into the child cgroup");
  say("INFO cgroup2 controllers: %s\n", controllers);
  return 0;
}

static int check_seccomp(void) {
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return FAIL_ERRNO("PR_SET_NO_NEW_PRIVS");
  // Deny uname(2) with a distinctive errno; allow everything else.
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_uname, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EADDRNOTAVAIL & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = sizeof code / sizeof *code, .filter = code};
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) return FAIL_ERRNO("seccomp(SECCOMP_SET_MODE_FILTER)");
  struct utsname uts;
  if (syscall(SYS_uname, &uts) != -1 || errno != EADDRNOTAVAIL) return fail("uname was not denied by the filter");
  if (getpid() <= 0) return fail("getpid broken under the filter");
  return 0;
}

static int check_binfmt_script(void) {
  // A script whose interpreter is this very program: the kernel must run "/init <probe> <script>".
  if (write_file("/tmp/probe.sh", "#!/init " SCRIPT_PROBE_ARG "\n") != 0) return FAIL_ERRNO("write /tmp/probe.sh");
  if (chmod("/tmp/probe.sh", 0755) != 0) return FAIL_ERRNO("chmod");
  pid_t child = fork();
  if (child < 0) return FAIL_ERRNO("fork");
  if (child == 0) {
    char *argv[] = {"/tmp/probe.sh", NULL};
    char *envp[] = {NULL};
    execve(argv[0], argv, envp);
    _exit(errno == ENOEXEC ? 126 : 127);
  }
  int status;
  if (waitpid(child, &status, 0) != child) return FAIL_ERRNO("waitpid");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != SCRIPT_PROBE_EXIT) {
    return fail("#! script did not run its interpreter (status 0x%x)", status);
  }
  return 0;
}

static int check_tmpfs(void) {
  if (mkdir("/mnt/tmpfs", 0755) != 0 && errno != EEXIST) return FAIL_ERRNO("mkdir");
  if (mount("tmpfs", "/mnt/tmpfs", "tmpfs", 0, "size=1m,mode=0755") != 0) return FAIL_ERRNO("mount tmpfs");
  if (expect_fs_magic("/mnt/tmpfs", TMPFS_MAGIC_VALUE, "tmpfs") != 0) return -1;
  if (write_file("/mnt/tmpfs/f", "tmpfs") != 0) return FAIL_ERRNO("write");
  char buf[16];
  if (read_file("/mnt/tmpfs/f", buf, sizeof buf) != 5 || strcmp(buf, "tmpfs") != 0) return fail("read back mismatch");
  if (umount("/mnt/tmpfs") != 0) return FAIL_ERRNO("umount");
  return 0;
}

static int check_virtio_blk_serial(void) {
  char dev0[300], dev1[300];
  if (find_disk_by_serial("slot0", dev0, sizeof dev0) != 0) return -1;
  if (find_disk_by_serial("slot1", dev1, sizeof dev1) != 0) return -1;
  say("INFO slot0=%s slot1=%s\n", dev0, dev1);
  return 0;
}

static int check_overlay_on_erofs(void) {
  char dev[300];
  if (find_disk_by_serial("slot0", dev, sizeof dev) != 0) return -1;
  const char *dirs[] = {"/mnt/lower", "/mnt/rw", "/mnt/merged"};
  for (size_t i = 0; i < 3; i++) {
    if (mkdir(dirs[i], 0755) != 0 && errno != EEXIST) return fail("mkdir %s: %s", dirs[i], strerror(errno));
  }
  if (mount(dev, "/mnt/lower", "erofs", MS_RDONLY, NULL) != 0) return fail("mount %s erofs: %s", dev, strerror(errno));
  if (expect_fs_magic("/mnt/lower", EROFS_MAGIC_VALUE, "erofs") != 0) return -1;
  if (mount("tmpfs", "/mnt/rw", "tmpfs", 0, "mode=0755") != 0) return FAIL_ERRNO("mount tmpfs upper");
  if (mkdir("/mnt/rw/upper", 0755) != 0 || mkdir("/mnt/rw/work", 0755) != 0) return FAIL_ERRNO("mkdir upper/work");
  if (mount("overlay", "/mnt/merged", "overlay", 0, "lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work") != 0) {
    return FAIL_ERRNO("mount overlay");
  }
  if (expect_fs_magic("/mnt/merged", OVERLAY_MAGIC_VALUE, "overlay") != 0) return -1;
  char buf[64];
  if (read_file("/mnt/merged/hello.txt", buf, sizeof buf) < 0) return FAIL_ERRNO("read hello.txt through the overlay");
  if (strcmp(buf, EROFS_HELLO) != 0) return fail("hello.txt is \"%s\"", buf);
  // A new file and a copy-up of a lower file; the lower layer must stay untouched.
  if (write_file("/mnt/merged/new.txt", "new") != 0) return FAIL_ERRNO("create a file in the overlay");
  if (write_file("/mnt/merged/hello.txt", "changed") != 0) return FAIL_ERRNO("copy-up hello.txt");
  if (read_file("/mnt/rw/upper/hello.txt", buf, sizeof buf) < 0 || strcmp(buf, "changed") != 0) return fail("copy-up not in the upper layer");
  if (read_file("/mnt/lower/hello.txt", buf, sizeof buf) < 0 || strcmp(buf, EROFS_HELLO) != 0) return fail("the erofs lower layer changed");
  if (write_file("/mnt/lower/x", "x") == 0 || errno != EROFS) return fail("erofs accepted a write");
  if (umount("/mnt/merged") != 0 || umount("/mnt/rw") != 0 || umount("/mnt/lower") != 0) return FAIL_ERRNO("umount");
  return 0;
}

static int check_ext4(void) {
  char dev[300];
  if (find_disk_by_serial("slot1", dev, sizeof dev) != 0) return -1;
  if (mkdir("/mnt/ext4", 0755) != 0 && errno != EEXIST) return FAIL_ERRNO("mkdir");
  if (mount(dev, "/mnt/ext4", "ext4", 0, NULL) != 0) return fail("mount %s ext4: %s", dev, strerror(errno));
  if (expect_fs_magic("/mnt/ext4", EXT4_MAGIC_VALUE, "ext4") != 0) return -1;
  if (write_file("/mnt/ext4/written-by-guest", "ext4") != 0) return FAIL_ERRNO("write");
  sync();
  char buf[16];
  if (read_file("/mnt/ext4/written-by-guest", buf, sizeof buf) != 4 || strcmp(buf, "ext4") != 0) return fail("read back mismatch");
  if (umount("/mnt/ext4") != 0) return FAIL_ERRNO("umount");
  return 0;
}

// Finds the virtio-serial port named `name` (QEMU: virtserialport,name=...) -> "/dev/vportNpM".
// The N in vportNpM is the virtio device index, which depends on device order: look up by name.
static int find_port_by_name(const char *name, char *dev, size_t devcap) {
  DIR *dir = opendir("/sys/class/virtio-ports");
  if (!dir) return FAIL_ERRNO("opendir /sys/class/virtio-ports");
  struct dirent *entry;
  int found = -1;
  while ((entry = readdir(dir)) != NULL) {
    if (entry->d_name[0] == '.') continue;
    char path[300], value[128];
    snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", entry->d_name);
    if (read_file(path, value, sizeof value) < 0) continue;
    value[strcspn(value, "\n")] = '\0';
    if (strcmp(value, name) == 0) {
      snprintf(dev, devcap, "/dev/%s", entry->d_name);
      found = 0;
      break;
    }
  }
  closedir(dir);
  if (found != 0) return fail("no virtio-serial port named \"%s\" in /sys/class/virtio-ports/*/name", name);
  return 0;
}

static int check_virtio_serial_port(void) {
  char dev[300];
  // Ports are announced by the host over the control queue after probe: allow them a moment.
  long long deadline = monotonic_ms() + 5000;
  while (find_port_by_name(PORT_NAME, dev, sizeof dev) != 0) {
    if (monotonic_ms() > deadline) return -1;
    usleep(20 * 1000);
  }
  say("INFO port %s is %s\n", PORT_NAME, dev);
  struct stat st;
  if (stat(dev, &st) != 0) return fail("stat %s: %s", dev, strerror(errno));
  if (!S_ISCHR(st.st_mode)) return fail("%s is not a character device", dev);
  int fd = open(dev, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return fail("open %s: %s", dev, strerror(errno));
  // Writes wait for the host end to connect: poll with a deadline rather than block.
  struct pollfd pfd = {.fd = fd, .events = POLLOUT};
  if (poll(&pfd, 1, 10000) != 1) return fail("host side never connected (no POLLOUT in 10 s)");
  if (write(fd, PORT_HELLO, strlen(PORT_HELLO)) != (ssize_t)strlen(PORT_HELLO)) return FAIL_ERRNO("write hello");
  char buf[64];
  size_t used = 0;
  while (used < strlen(PORT_PING)) {
    pfd.events = POLLIN;
    if (poll(&pfd, 1, 10000) != 1) return fail("no \"HOST-PING\" from the host in 10 s");
    ssize_t n = read(fd, buf + used, strlen(PORT_PING) - used);
    if (n < 0 && errno == EAGAIN) continue;
    if (n <= 0) return fail("read: %s", n < 0 ? strerror(errno) : "EOF");
    used += (size_t)n;
  }
  if (memcmp(buf, PORT_PING, strlen(PORT_PING)) != 0) return fail("unexpected bytes from the host");
  return 0;
}

// --- runner -----------------------------------------------------------------------------------

struct check {
  const char *name;
  int (*run)(void);
};

static const struct check checks[] = {
    {"futex", check_futex},
    {"pipe", check_pipe},
    {"epoll", check_epoll},
    {"eventfd", check_eventfd},
    {"signalfd", check_signalfd},
    {"timerfd", check_timerfd},
    {"posix_timers", check_posix_timers},
    {"inotify", check_inotify},
    {"fhandle", check_fhandle},
    {"aio", check_aio},
    {"sysvipc", check_sysvipc},
    {"mqueue", check_mqueue},
    {"getrandom_nonblock", check_getrandom},
    {"hwrng_virtio", check_hwrng_virtio},
    {"unix_socket", check_unix_socket},
    {"inet_tcp_loopback", check_inet_tcp},
    {"inet6_tcp_loopback", check_inet6_tcp},
    {"vsock_socket", check_vsock_socket},
    {"pty", check_pty},
    {"ns_pid", check_ns_pid},
    {"ns_mnt", check_ns_mnt},
    {"ns_uts", check_ns_uts},
    {"ns_ipc", check_ns_ipc},
    {"ns_net", check_ns_net},
    {"ns_user", check_ns_user},
    {"cgroup2", check_cgroup2},
    {"seccomp_filter", check_seccomp},
    {"binfmt_script", check_binfmt_script},
    {"tmpfs", check_tmpfs},
    {"virtio_blk_serial", check_virtio_blk_serial},
    {"overlay_on_erofs", check_overlay_on_erofs},
    {"ext4", check_ext4},
    {"virtio_serial_port", check_virtio_serial_port},
};

// Runs one check in a child; returns 1 on PASS. The reason travels back through a pipe.
static int run_check(const struct check *check) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    say("FAIL %s: pipe2: %s\n", check->name, strerror(errno));
    return 0;
  }
  pid_t child = fork();
  if (child < 0) {
    say("FAIL %s: fork: %s\n", check->name, strerror(errno));
    close(fds[0]);
    close(fds[1]);
    return 0;
  }
  if (child == 0) {
    close(fds[0]);
    int rc = check->run();
    if (rc != 0) (void)!write(fds[1], reason, strnlen(reason, sizeof reason));
    _exit(rc == 0 ? 0 : 1);
  }
  close(fds[1]);
  char msg[REASON_MAX + 1];
  size_t used = 0;
  int timed_out = 0;
  long long deadline = monotonic_ms() + CHECK_TIMEOUT_MS;
  for (;;) {
    long long left = deadline - monotonic_ms();
    if (left <= 0) {
      timed_out = 1;
      break;
    }
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    int ready = poll(&pfd, 1, (int)left);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      timed_out = ready == 0;
      break;
    }
    ssize_t n = read(fds[0], msg + used, REASON_MAX - used);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the child exited
    used += (size_t)n;
    if (used == REASON_MAX) break;
  }
  msg[used] = '\0';
  close(fds[0]);
  if (timed_out) kill(child, SIGKILL);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    say("FAIL %s: timed out after %d ms\n", check->name, CHECK_TIMEOUT_MS);
    return 0;
  }
  if (WIFSIGNALED(status)) {
    say("FAIL %s: killed by signal %d\n", check->name, WTERMSIG(status));
    return 0;
  }
  if (WEXITSTATUS(status) != 0) {
    say("FAIL %s: %s\n", check->name, used ? msg : "failed without a reason");
    return 0;
  }
  say("PASS %s\n", check->name);
  return 1;
}

// PID 1 has to build its own world: the initramfs holds only /init and /dev/console.
static void mount_basics(void) {
  struct {
    const char *source, *target, *type, *options;
    unsigned long flags;
  } mounts[] = {
      {"proc", "/proc", "proc", NULL, MS_NOSUID | MS_NODEV | MS_NOEXEC},
      {"sysfs", "/sys", "sysfs", NULL, MS_NOSUID | MS_NODEV | MS_NOEXEC},
      {"devtmpfs", "/dev", "devtmpfs", "mode=0755", MS_NOSUID},
      {"devpts", "/dev/pts", "devpts", "ptmxmode=0666,mode=0620", MS_NOSUID | MS_NOEXEC},
      {"tmpfs", "/tmp", "tmpfs", "mode=1777", MS_NOSUID | MS_NODEV},
      {"tmpfs", "/mnt", "tmpfs", "mode=0755", MS_NOSUID | MS_NODEV},
  };
  for (size_t i = 0; i < sizeof mounts / sizeof *mounts; i++) {
    if (mkdir(mounts[i].target, 0755) != 0 && errno != EEXIST) {
      say("WARN mkdir %s: %s\n", mounts[i].target, strerror(errno));
    }
    if (mount(mounts[i].source, mounts[i].target, mounts[i].type, mounts[i].flags, mounts[i].options) != 0 && errno != EBUSY) {
      say("WARN mount %s on %s: %s\n", mounts[i].type, mounts[i].target, strerror(errno));
    }
  }
  // cgroup2's mount point lives inside sysfs.
  if (mkdir("/sys/fs/cgroup", 0755) != 0 && errno != EEXIST) say("WARN mkdir /sys/fs/cgroup: %s\n", strerror(errno));
}

int main(int argc, char **argv) {
  // Re-entered as the interpreter of the binfmt_script probe.
  if (argc >= 2 && strcmp(argv[1], SCRIPT_PROBE_ARG) == 0) return SCRIPT_PROBE_EXIT;

  struct timespec boot;
  clock_gettime(CLOCK_BOOTTIME, &boot);
  long long boot_ms = (long long)boot.tv_sec * 1000 + boot.tv_nsec / 1000000;
  say("SELFTEST START pid=%d boot_to_init_ms=%lld\n", (int)getpid(), boot_ms);
  if (getpid() != 1) say("WARN not PID 1: mounts and reboot will affect this system\n");

  mount_basics();
  struct utsname uts;
  if (uname(&uts) == 0) say("SELFTEST RELEASE %s\n", uts.release);
  say("INFO online cpus: %ld\n", sysconf(_SC_NPROCESSORS_ONLN));

  size_t passed = 0, total = sizeof checks / sizeof *checks;
  for (size_t i = 0; i < total; i++) passed += (size_t)run_check(&checks[i]);
  say("SELFTEST SUMMARY passed=%zu failed=%zu\n", passed, total - passed);

  sync();
  if (getpid() == 1) reboot(RB_AUTOBOOT);
  return passed == total ? 0 : 1;
}
