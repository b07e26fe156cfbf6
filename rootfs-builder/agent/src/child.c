#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroups.h"
#include "fsutil.h"
#include "log.h"
#include "mounts.h"
#include "rpc_status.h"

#define CHILD_STACK_SIZE (256 * 1024)
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static int child_status_fd = -1;

static __attribute__((noreturn, format(printf, 2, 3))) void child_fail(int code, const char *fmt, ...)
{
    struct child_report rep;
    memset(&rep, 0, sizeof rep);
    rep.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep.message, sizeof rep.message, fmt, ap);
    va_end(ap);
    if (child_status_fd >= 0) {
        ssize_t w = write(child_status_fd, &rep, sizeof rep);
        (void)w;
    }
    _exit(127);
}

static int rlimit_resource(const char *name)
{
    static const struct { const char *name; int res; } table[] = {
        { "RLIMIT_CPU", RLIMIT_CPU }, { "RLIMIT_FSIZE", RLIMIT_FSIZE }, { "RLIMIT_DATA", RLIMIT_DATA },
        { "RLIMIT_STACK", RLIMIT_STACK }, { "RLIMIT_CORE", RLIMIT_CORE }, { "RLIMIT_RSS", RLIMIT_RSS },
        { "RLIMIT_NPROC", RLIMIT_NPROC }, { "RLIMIT_NOFILE", RLIMIT_NOFILE },
        { "RLIMIT_MEMLOCK", RLIMIT_MEMLOCK }, { "RLIMIT_AS", RLIMIT_AS }, { "RLIMIT_LOCKS", RLIMIT_LOCKS },
        { "RLIMIT_SIGPENDING", RLIMIT_SIGPENDING }, { "RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE },
        { "RLIMIT_NICE", RLIMIT_NICE }, { "RLIMIT_RTPRIO", RLIMIT_RTPRIO }, { "RLIMIT_RTTIME", RLIMIT_RTTIME },
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].name, name) == 0)
            return table[i].res;
    return -1;
}

static bool is_executable_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Whether sig's default action ends a process (term or core): not SIGKILL and SIGSTOP (not
 * catchable), nor the ones whose default is to ignore, stop or continue. */
static bool signal_terminates_by_default(int sig)
{
    switch (sig) {
    case SIGKILL: case SIGSTOP: case SIGCHLD: case SIGCONT: case SIGURG: case SIGWINCH:
    case SIGTSTP: case SIGTTIN: case SIGTTOU:
        return false;
    default:
        return true;
    }
}

/* A created process's end by a signal, reported as a signal's end is (128 + sig). */
static void child_exit_on_signal(int sig)
{
    _exit(128 + sig);
}

/* Resolves args[0] like Go's exec.LookPath (what runc reports): names with a '/' are used as
 * they are, others are searched in the spec's PATH. Runs inside the container's root. */
static void child_resolve(const char *name, char *const *env, char *out, size_t cap)
{
    if (strchr(name, '/')) {
        struct stat st;
        if (stat(name, &st) < 0)
            child_fail(errno == ENOENT ? RPC_NOT_FOUND : RPC_FAILED_PRECONDITION, "exec: \"%s\": stat %s: %s",
                       name, name, strerror(errno));
        if (!S_ISREG(st.st_mode) || access(name, X_OK) < 0)
            child_fail(RPC_FAILED_PRECONDITION, "exec: \"%s\": permission denied", name);
        snprintf(out, cap, "%s", name);
        return;
    }
    const char *path = DEFAULT_PATH;
    for (char *const *e = env; e && *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            path = *e + 5; /* the last one wins, as in execvpe */
    const char *p = path;
    for (;;) {
        const char *colon = strchr(p, ':');
        size_t dlen = colon ? (size_t)(colon - p) : strlen(p);
        char cand[4096];
        int n = dlen == 0 ? snprintf(cand, sizeof cand, "./%s", name)
                          : snprintf(cand, sizeof cand, "%.*s/%s", (int)dlen, p, name);
        if (n > 0 && (size_t)n < sizeof cand && is_executable_file(cand)) {
            snprintf(out, cap, "%s", cand);
            return;
        }
        if (!colon)
            break;
        p = colon + 1;
    }
    child_fail(RPC_NOT_FOUND, "exec: \"%s\": executable file not found in $PATH", name);
}

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

/* terminal=true: a pty from the devpts instance of the container's /dev/ptmx (the caller is
 * already in the container's root), the slave as controlling terminal (the caller is a session
 * leader) and as fds 0-2, the master sent to the agent over fd 5. */
static void child_setup_terminal(const struct agent_process *proc)
{
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0)
        child_fail(RPC_INTERNAL, "terminal: open /dev/ptmx: %s", strerror(errno));
    if (unlockpt(master) < 0)
        child_fail(RPC_INTERNAL, "terminal: unlockpt: %s", strerror(errno));
    /* TIOCGPTPEER opens the slave of this very master, with no path lookup to trick. */
    int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0)
        child_fail(RPC_INTERNAL, "terminal: open the pty slave: %s", strerror(errno));
    if (proc->has_console_size && (proc->console_width || proc->console_height)) {
        struct winsize ws = { .ws_row = (unsigned short)(proc->console_height > 0xffff ? 0xffff : proc->console_height),
                              .ws_col = (unsigned short)(proc->console_width > 0xffff ? 0xffff : proc->console_width) };
        if (ioctl(slave, TIOCSWINSZ, &ws) < 0)
            child_fail(RPC_INTERNAL, "terminal: set the console size: %s", strerror(errno));
    }
    if (ioctl(slave, TIOCSCTTY, 0) < 0)
        child_fail(RPC_INTERNAL, "terminal: make it the controlling terminal: %s", strerror(errno));
    /* The process owns its terminal, as with runc (best effort; nothing may be logged here:
     * fd 2 already belongs to the process). */
    int chown_rc = fchown(slave, proc->uid, proc->gid);
    (void)chown_rc;
    for (int i = 0; i < 3; i++)
        if (dup2(slave, i) < 0)
            child_fail(RPC_INTERNAL, "terminal: dup2: %s", strerror(errno));
    close(slave);

    char byte = 0;
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                          .msg_controllen = sizeof control.buf };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &master, sizeof(int));
    ssize_t n;
    do
        n = sendmsg(5, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        child_fail(RPC_INTERNAL, "terminal: hand the pty master to the agent: %s", n < 0 ? strerror(errno) : "short write");
    close(master);
    close(5);
}

/* Init process only: makes the spec's mounts in the container's root, pivots into it, then
 * hostname, sysctls, read-only and masked paths, read-only root. */
static void child_enter_new_root(const struct child_ctx *ctx)
{
    char err[450];
    int code;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        child_fail(RPC_INTERNAL, "make mounts private: %s", strerror(errno));
    if (chdir(ctx->rootfs) < 0)
        child_fail(RPC_INTERNAL, "chdir %s: %s", ctx->rootfs, strerror(errno));
    TIMING_MARK("private_chdir");
    if ((code = mounts_apply(ctx->create, ctx->files_dir, err, sizeof err)) != RPC_OK)
        child_fail(code, "%s", err);
    TIMING_MARK("mounts_apply");
    if (ctx->cgroup_fd >= 0 && (code = cgroup_mount_in_root(ctx->create, err, sizeof err)) != RPC_OK)
        child_fail(code, "%s", err);
    TIMING_MARK("cgroup_mount");
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        child_fail(RPC_INTERNAL, "pivot_root: %s", strerror(errno));
    if (umount2(".", MNT_DETACH) < 0)
        child_fail(RPC_INTERNAL, "detach the old root: %s", strerror(errno));
    if (chdir("/") < 0)
        child_fail(RPC_INTERNAL, "chdir /: %s", strerror(errno));
    const char *hostname = ctx->create->hostname;
    if (hostname && hostname[0] && sethostname(hostname, strlen(hostname)) < 0)
        child_fail(RPC_INVALID_ARGUMENT, "sethostname \"%s\": %s", hostname, strerror(errno));
    TIMING_MARK("pivot_host");
    if ((code = mounts_finish(ctx->create, err, sizeof err)) != RPC_OK)
        child_fail(code, "%s", err);
    TIMING_MARK("mounts_finish");
}

static int child_main(void *arg)
{
    const struct child_ctx *ctx = arg;
    const struct agent_process *proc = ctx->proc;
    int fds[6];
    child_status_fd = ctx->fds[3];
    TIMING_BEGIN();

    /* Born in the container's cgroup (or, without clone3, into it before anything else: so
     * all it allocates is charged there), then into a cgroup namespace rooted at it: the
     * container's own (init), or the init's (exec). */
    if (ctx->cgroup_fd >= 0) {
        ssize_t w = 1;
        if (ctx->cgroup_procs_fd >= 0) {
            do
                w = write(ctx->cgroup_procs_fd, "0", 1);
            while (w < 0 && errno == EINTR);
        }
        if (w != 1)
            child_fail(errno == EAGAIN ? RPC_RESOURCE_EXHAUSTED : RPC_INTERNAL, "join the container's cgroup: %s%s",
                       strerror(errno), errno == EAGAIN ? " (pids.max reached)" : "");
        if (ctx->create && unshare(CLONE_NEWCGROUP) < 0)
            child_fail(RPC_INTERNAL, "new cgroup namespace: %s", strerror(errno));
        if (!ctx->create && ctx->cgroupns_fd >= 0 && setns(ctx->cgroupns_fd, CLONE_NEWCGROUP) < 0)
            child_fail(RPC_INTERNAL, "join the container's cgroup namespace: %s", strerror(errno));
    }
    TIMING_MARK("join_cgroup");

    /* An exec joins the container: ipc and uts first, the mount namespace last (it also moves
     * root and cwd to the container's root). The pid namespace was set for clone(). */
    static const int ns_types[3] = { CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWNS };
    static const char *const ns_names[3] = { "ipc", "uts", "mount" };
    for (int i = 0; i < 3; i++)
        if (ctx->ns_fds[i] >= 0 && setns(ctx->ns_fds[i], ns_types[i]) < 0)
            child_fail(RPC_INTERNAL, "join the container's %s namespace: %s", ns_names[i], strerror(errno));

    /* fds: 0-2 stdio, 3 status (close-on-exec), 4 start, 5 console socket (terminal only);
     * nothing else of the agent's. */
    int nfds = ctx->fds[5] >= 0 ? 6 : 5;
#ifdef SMOLVM_TIMING
    /* Measurements only: the console stays open (close-on-exec) as the log. */
    if (log_get_fd() >= 0 && dup3(log_get_fd(), 1000, O_CLOEXEC) == 1000)
        log_set_fd(1000);
#endif
    for (int i = 0; i < nfds; i++) {
        int fd = ctx->fds[i];
        if (fd < 0 && (fd = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
            child_fail(RPC_INTERNAL, "open /dev/null: %s", strerror(errno));
        fds[i] = fcntl(fd, F_DUPFD_CLOEXEC, 10);
        if (fds[i] < 0)
            child_fail(RPC_INTERNAL, "dup: %s", strerror(errno));
    }
    for (int i = 0; i < nfds; i++)
        if (dup2(fds[i], i) < 0)
            child_fail(RPC_INTERNAL, "dup2: %s", strerror(errno));
    child_status_fd = 3;
    for (int i = 3; i < nfds; i++)
        fcntl(i, F_SETFD, FD_CLOEXEC);
#ifdef SMOLVM_TIMING
    syscall(SYS_close_range, (unsigned)nfds, 999u, 0u);
    syscall(SYS_close_range, 1001u, ~0u, 0u);
#else
    syscall(SYS_close_range, (unsigned)nfds, ~0u, 0u);
#endif
    TIMING_MARK("fds");

    /* The agent blocks SIGCHLD and ignores SIGPIPE: neither may leak into the container. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    setsid();

    TIMING_MARK("signals");
    if (ctx->create)
        child_enter_new_root(ctx);
    else if (chdir("/") < 0)
        child_fail(RPC_INTERNAL, "chdir / in the container: %s", strerror(errno));

    for (size_t i = 0; i < proc->nrlimits; i++) {
        const struct agent_rlimit *rl = &proc->rlimits[i];
        int res = rlimit_resource(rl->type ? rl->type : "");
        if (res < 0)
            child_fail(RPC_INVALID_ARGUMENT, "unknown rlimit type \"%s\"", rl->type ? rl->type : "");
        struct rlimit lim = { .rlim_cur = rl->soft, .rlim_max = rl->hard };
        if (setrlimit(res, &lim) < 0)
            child_fail(RPC_INVALID_ARGUMENT, "setrlimit %s (soft %llu, hard %llu): %s", rl->type,
                       (unsigned long long)rl->soft, (unsigned long long)rl->hard, strerror(errno));
    }
    const char *cwd = proc->cwd && proc->cwd[0] ? proc->cwd : "/";
    if (cwd[0] != '/')
        child_fail(RPC_INVALID_ARGUMENT, "cwd \"%s\" is not an absolute path", cwd);
    mkdir_p(cwd, 0755); /* as runc: a missing cwd is created */
    if (chdir(cwd) < 0)
        child_fail(RPC_INVALID_ARGUMENT, "chdir to cwd (\"%s\"): %s", cwd, strerror(errno));

    TIMING_MARK("rlimits_cwd");
    char exe[4096];
    child_resolve(proc->args[0], proc->env, exe, sizeof exe);
    TIMING_MARK("resolve");

    if (proc->terminal)
        child_setup_terminal(proc);

    /* runc's order: bounding set (needs CAP_SETPCAP), seccomp without no_new_privs (needs
     * CAP_SYS_ADMIN), the uid switch keeping the permitted set, then the capability sets,
     * no_new_privs, and a seccomp filter under no_new_privs as late as possible. */
    struct cap_masks caps;
    int rc;
    if (proc->has_caps) {
        char err[300];
        if (caps_resolve(&proc->caps, &caps, err, sizeof err) < 0)
            child_fail(RPC_INVALID_ARGUMENT, "%s", err);
        if ((rc = caps_apply_bounding(&caps)) < 0)
            child_fail(RPC_INTERNAL, "capabilities: drop from the bounding set: %s", strerror(-rc));
    }
    if (!proc->no_new_privileges && (rc = seccomp_install(ctx->seccomp)) < 0)
        child_fail(RPC_INTERNAL, "linux.seccomp: install the filter: %s", strerror(-rc));
    if (proc->has_caps && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        child_fail(RPC_INTERNAL, "capabilities: keep them across setuid: %s", strerror(errno));
    gid_t gids[AGENT_MAX_LIST];
    for (size_t i = 0; i < proc->ngids; i++)
        gids[i] = proc->gids[i];
    if (setgroups(proc->ngids, proc->ngids ? gids : NULL) < 0)
        child_fail(RPC_INVALID_ARGUMENT, "setgroups: %s", strerror(errno));
    if (setgid(proc->gid) < 0)
        child_fail(RPC_INVALID_ARGUMENT, "setgid %u: %s", proc->gid, strerror(errno));
    if (setuid(proc->uid) < 0)
        child_fail(RPC_INVALID_ARGUMENT, "setuid %u: %s", proc->uid, strerror(errno));
    if (proc->has_caps) {
        if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
            child_fail(RPC_INTERNAL, "capabilities: PR_SET_KEEPCAPS: %s", strerror(errno));
        if ((rc = caps_apply_sets(&caps)) < 0)
            child_fail(RPC_INVALID_ARGUMENT, "capabilities: set effective/permitted/inheritable/ambient: %s",
                       strerror(-rc));
    }
    if (chdir(cwd) < 0)
        child_fail(RPC_INVALID_ARGUMENT, "chdir to cwd (\"%s\") as uid %u: %s", cwd, proc->uid, strerror(errno));
    umask(proc->has_umask ? (mode_t)(proc->umask & 0777) : 022);
    if (proc->no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        child_fail(RPC_INTERNAL, "no_new_privs: %s", strerror(errno));
    if (proc->no_new_privileges && (rc = seccomp_install(ctx->seccomp)) < 0)
        child_fail(RPC_INTERNAL, "linux.seccomp: install the filter: %s", strerror(-rc));

    TIMING_MARK("security");
    TIMING_END("CreateContainer child");
    struct child_report ready;
    memset(&ready, 0, sizeof ready);
    if (write(3, &ready, sizeof ready) != (ssize_t)sizeof ready)
        _exit(127);
    /* Created, not started: a signal must end the process as it would end runc's init waiting
     * for its start (its default action), though as its namespace's PID 1 with SIG_DFL the
     * kernel would drop it. From StartProcess to the exec the agent holds signals instead
     * (signal_hold.h); execve puts these handlers back to SIG_DFL. */
    struct sigaction created_exit = { .sa_handler = child_exit_on_signal };
    sigemptyset(&created_exit.sa_mask);
    for (int sig = 1; sig < NSIG; sig++) {
        if (signal_terminates_by_default(sig))
            sigaction(sig, &created_exit, NULL);
    }
    char go;
    ssize_t n;
    do
        n = read(4, &go, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        _exit(127); /* the agent dropped us before StartProcess */
    close(4);
    execve(exe, proc->args, proc->env ? proc->env : (char *[]){ NULL });
    child_fail(errno == ENOENT ? RPC_NOT_FOUND : RPC_FAILED_PRECONDITION, "exec: \"%s\": %s", exe,
               strerror(errno));
}

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

/* clone3's arguments (struct clone_args of linux/sched.h, CLONE_ARGS_SIZE_VER2), spelled out:
 * the uapi header clashes with libc's sched.h. */
struct clone3_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size,
        cgroup;
};

/* The legacy start: clone() on a stack of its own; a child meant for a cgroup joins it itself
 * through cgroup.procs. pid, or -1 with errno. */
static pid_t clone_joining(struct child_ctx *ctx, int clone_flags)
{
    if (ctx->cgroup_fd >= 0 && (ctx->cgroup_procs_fd = openat(ctx->cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC)) < 0)
        return -1;
    pid_t pid = -1;
    char *stack = malloc(CHILD_STACK_SIZE);
    if (stack)
        pid = clone(child_main, stack + CHILD_STACK_SIZE, clone_flags | SIGCHLD, ctx);
    int e = stack ? errno : ENOMEM;
    free(stack); /* the child has its own copy */
    close_fd_at(&ctx->cgroup_procs_fd);
    errno = e;
    return pid;
}

/* Starts the child running child_main(ctx). With a cgroup, clone3(CLONE_INTO_CGROUP): the
 * child is born in it (charged there from its first page, and no migration of a running
 * task, whose write lock on the cgroup threadgroup rwsem waits for an RCU grace period);
 * without clone3 (a kernel before 5.7) the legacy start. pid, or -1 with errno. */
pid_t child_clone(struct child_ctx *ctx, int clone_flags)
{
    ctx->cgroup_procs_fd = -1;
    if (ctx->cgroup_fd < 0)
        return clone_joining(ctx, clone_flags);
    struct clone3_args args = {
        .flags = (uint64_t)(unsigned)clone_flags | CLONE_INTO_CGROUP,
        .exit_signal = SIGCHLD,
        .cgroup = (uint64_t)ctx->cgroup_fd,
    };
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0)
        _exit(child_main(ctx)); /* as after fork: a copy of the agent, on a copy of its stack */
    if (pid > 0 || (errno != ENOSYS && errno != E2BIG))
        return (pid_t)pid;
    return clone_joining(ctx, clone_flags);
}

void child_prewarm_namespaces(void)
{
    struct clone3_args args = {
        .flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC,
        .exit_signal = SIGCHLD,
    };
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0)
        _exit(0);
    if (pid < 0) {
        LOG_INFO("prewarm the container namespaces: clone3: %s", strerror(errno));
        return;
    }
    while (waitpid((pid_t)pid, NULL, 0) < 0 && errno == EINTR)
        ;
}
