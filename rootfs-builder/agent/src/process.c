#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "log.h"
#include "rpc_status.h"

static const struct process_events *g_events;
static struct stream_set *g_streams;

/* Every init process (the only ones signals are held for), newest first. */
static struct process *g_inits;

static void on_status(void *process, uint32_t events);
static void on_output_done(void *process);

void process_layer_init(const struct process_events *events, struct stream_set *streams)
{
    g_events = events;
    g_streams = streams;
    streams->output_done = on_output_done;
}

void process_init(struct process *p, struct container *c, const char *container_id, bool terminal)
{
    p->container = c;
    p->container_id = container_id;
    p->terminal = terminal;
    p->status_fd = -1;
    p->start_fd = -1;
    p->console_fd = -1;
    p->pty_fd = -1;
    p->status_watch.fn = on_status;
    p->status_watch.obj = p;
    if (!p->exec_id) {
        p->init_next = g_inits;
        g_inits = p;
    }
}

const char *process_name(const struct process *p)
{
    static char buf[2][400];
    static int which;
    which ^= 1;
    const char *cid = p->container_id ? p->container_id : "";
    if (p->exec_id)
        snprintf(buf[which], sizeof buf[which], "container \"%.128s\" exec \"%.128s\"", cid, p->exec_id);
    else
        snprintf(buf[which], sizeof buf[which], "container \"%.128s\"", cid);
    return buf[which];
}

bool process_finished(const struct process *p)
{
    return p->exited && stream_out_done(p->out[0]) && stream_out_done(p->out[1]);
}

static void on_output_done(void *process)
{
    struct process *p = process;
    if (process_finished(p))
        g_events->finished(p);
}

static void close_status(struct process *p)
{
    if (p->status_fd >= 0) {
        watch_del(p->status_fd);
        close_fd_at(&p->status_fd);
    }
}

/* ---------------------------------------------------------------- spawning */

static int make_pipe(int fds[2], bool agent_end_is_read)
{
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    int agent_end = agent_end_is_read ? fds[0] : fds[1];
    fcntl(agent_end, F_SETFL, O_NONBLOCK);
    return 0;
}

static void close_pair(int fds[2])
{
    close_fd_at(&fds[0]);
    close_fd_at(&fds[1]);
}

const char *process_validate_stdio(const char *who, const struct stdio_streams *s, bool terminal, char *msg,
                                   size_t cap)
{
    const uint32_t ids[3] = { s->stdin_id, s->stdout_id, s->stderr_id };
    for (int i = 0; i < 3; i++) {
        if (ids[i] == 0)
            continue;
        if (ids[i] & 1) {
            snprintf(msg, cap, "%s: stdio stream id %u is odd (must be even)", who, ids[i]);
            return msg;
        }
        if (stream_id_in_use(g_streams, ids[i]) || (i > 0 && ids[i] == ids[0]) || (i == 2 && ids[2] == ids[1])) {
            snprintf(msg, cap, "%s: stdio stream id %u is already in use", who, ids[i]);
            return msg;
        }
    }
    if (terminal && s->stderr_id) {
        snprintf(msg, cap, "%s: terminal=true takes no stderr stream (the pty's output is on stdout)", who);
        return msg;
    }
    if (terminal && !s->stdout_id) {
        snprintf(msg, cap, "%s: terminal=true needs a stdout stream for the pty's output", who);
        return msg;
    }
    return NULL;
}

int process_spawn(struct process *p, struct child_ctx *ctx, const struct stdio_streams *stdio, int clone_flags,
                  int pidns_fd, char *err, size_t errcap)
{
    const char *who = process_name(p);
    bool term = ctx->proc->terminal;
    int code = RPC_INTERNAL;
    int in_pipe[2] = { -1, -1 }, out_pipe[2] = { -1, -1 }, err_pipe[2] = { -1, -1 };
    int status_pipe[2] = { -1, -1 }, start_pipe[2] = { -1, -1 }, console[2] = { -1, -1 };
    bool ok = make_pipe(status_pipe, true) == 0 && make_pipe(start_pipe, false) == 0;
    if (ok && term)
        ok = socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, console) == 0;
    else if (ok)
        ok = (!stdio->stdin_id || make_pipe(in_pipe, false) == 0) &&
             (!stdio->stdout_id || make_pipe(out_pipe, true) == 0) &&
             (!stdio->stderr_id || make_pipe(err_pipe, true) == 0);
    if (!ok) {
        snprintf(err, errcap, "%s: pipes: %s", who, strerror(errno));
        goto fail;
    }
    int child_fds[6] = { in_pipe[0], out_pipe[1], err_pipe[1], status_pipe[1], start_pipe[0], console[1] };
    memcpy(ctx->fds, child_fds, sizeof child_fds);

    int self_pidns = -1;
    if (pidns_fd >= 0) {
        /* setns(CLONE_NEWPID) only picks the namespace of the next child: the agent itself
         * stays where it is, and switches its choice back to its own namespace right after. */
        self_pidns = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
        if (self_pidns < 0 || setns(pidns_fd, CLONE_NEWPID) < 0) {
            snprintf(err, errcap, "%s: join the container's pid namespace: %s", who, strerror(errno));
            if (self_pidns >= 0)
                close(self_pidns);
            goto fail;
        }
    }
    TIMING_MARK("pipes");
    pid_t pid = child_clone(ctx, clone_flags);
    int clone_errno = errno;
    if (self_pidns >= 0) {
        if (setns(self_pidns, CLONE_NEWPID) < 0)
            LOG_ERR("cannot return to the agent's pid namespace: %s", strerror(errno));
        close(self_pidns);
    }
    if (pid < 0 && clone_errno == EAGAIN && ctx->cgroup_fd >= 0) {
        code = RPC_RESOURCE_EXHAUSTED;
        snprintf(err, errcap, "%s: join the container's cgroup: %s (pids.max reached)", who, strerror(clone_errno));
        goto fail;
    }
    if (pid < 0) {
        snprintf(err, errcap, "%s: clone: %s", who, strerror(clone_errno));
        goto fail;
    }
    TIMING_MARK("clone");
    p->pid = pid;
    p->state = PROC_CREATING;
    /* Keep only the agent's ends. */
    close_fd_at(&in_pipe[0]);
    close_fd_at(&out_pipe[1]);
    close_fd_at(&err_pipe[1]);
    close_fd_at(&status_pipe[1]);
    close_fd_at(&start_pipe[0]);
    close_fd_at(&console[1]);
    p->status_fd = status_pipe[0];
    p->start_fd = start_pipe[1];
    p->console_fd = console[0];
    /* The status pipe before the stdio: a child that reports and exits at once (a failed
     * exec) then has its report ahead of its stdout's EOF in epoll's ready list (fds already
     * ready join it in the order they are added), so the failure is answered and the streams
     * dropped before an EOF for a stream the host is about to forget could be sent. */
    if (watch_add(p->status_fd, EPOLLIN, &p->status_watch) < 0) {
        snprintf(err, errcap, "%s: epoll: %s", who, strerror(errno));
        close_fd_at(&in_pipe[1]);
        close_fd_at(&out_pipe[0]);
        close_fd_at(&err_pipe[0]);
        return RPC_INTERNAL;
    }
    /* Each stream_open takes its fd (-1: attached later, terminal). */
    if (stdio->stdin_id)
        p->in = stream_open(g_streams, STREAM_IN, stdio->stdin_id, in_pipe[1], p);
    if (stdio->stdout_id)
        p->out[0] = stream_open(g_streams, STREAM_OUT, stdio->stdout_id, out_pipe[0], p);
    if (stdio->stderr_id)
        p->out[1] = stream_open(g_streams, STREAM_OUT, stdio->stderr_id, err_pipe[0], p);
    if ((stdio->stdin_id && !p->in) || (stdio->stdout_id && !p->out[0]) || (stdio->stderr_id && !p->out[1])) {
        snprintf(err, errcap, "%s: out of memory", who);
        return RPC_INTERNAL;
    }
    stream_update_all(g_streams);
    p->awaiting = AWAIT_SETUP;
    return RPC_OK;
fail:
    close_pair(in_pipe);
    close_pair(out_pipe);
    close_pair(err_pipe);
    close_pair(status_pipe);
    close_pair(start_pipe);
    close_pair(console);
    return code;
}

/* Receives the pty master the child sent over its console socket. fd, or -1. */
static int receive_pty_master(struct process *p)
{
    char byte;
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                          .msg_controllen = sizeof control.buf };
    ssize_t n = recvmsg(p->console_fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    close_fd_at(&p->console_fd);
    if (n != 1 || (msg.msg_flags & MSG_CTRUNC))
        return -1;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(sizeof(int)))
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(cm), sizeof fd);
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Terminal: the pty master becomes the stdout stream's source and the stdin stream's sink. */
static int attach_terminal(struct process *p)
{
    int master = receive_pty_master(p);
    if (master < 0)
        return -1;
    fcntl(master, F_SETFL, O_NONBLOCK);
    p->pty_fd = master;
    struct stream *targets[2] = { p->out[0], p->in };
    for (int i = 0; i < 2; i++) {
        if (!targets[i])
            continue;
        int fd = fcntl(master, F_DUPFD_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        stream_set_fd(targets[i], fd);
    }
    stream_update_all(g_streams);
    return 0;
}

/* ---------------------------------------------------------------- held signals */

/* Signals to an init process that the kernel would drop: held, then delivered or dropped by a
 * poll (signal_hold.h says what and why). The poll's timer runs only while some init that has
 * exec'd has signals held. */
static struct loop_timer g_hold_timer = { .fd = -1 };
static unsigned g_hold_timer_interval_ms; /* its period; 0: disarmed */

static void on_hold_timer(void *unused, uint32_t events);

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The process's signal masks from /proc/<pid>/status; false when it cannot be read (gone). */
static bool read_signal_masks(pid_t pid, struct signal_masks *m)
{
    char path[64];
    static char buf[8192]; /* the whole file (about 1.5 KiB) in one read of its seq_file */
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = 0;
    return signal_masks_parse(buf, m) == 0;
}

/* The poll timer exists (made at the first hold). */
static bool hold_timer_ready(void)
{
    if (g_hold_timer.fd >= 0)
        return true;
    if (loop_timer_open(&g_hold_timer, on_hold_timer, NULL) < 0) {
        LOG_ERR("signal hold: timerfd: %s: signals are sent as they come", strerror(errno));
        return false;
    }
    return true;
}

/* Arms the poll while an exec'd init has signals held, at the pace the youngest needs
 * (signal_hold_poll_interval_ms); disarms it when none has. */
static void hold_timer_update(void)
{
    unsigned interval_ms = 0; /* 0: no poll needed */
    uint64_t now = monotonic_ms();
    for (struct process *p = g_inits; p; p = p->init_next) {
        if (p->exited || !signal_hold_needs_poll(&p->held))
            continue;
        unsigned ms = signal_hold_poll_interval_ms(&p->held, now);
        if (interval_ms == 0 || ms < interval_ms)
            interval_ms = ms;
    }
    if (interval_ms == g_hold_timer_interval_ms || g_hold_timer.fd < 0)
        return;
    if (loop_timer_set(&g_hold_timer, interval_ms, true) == 0)
        g_hold_timer_interval_ms = interval_ms;
}

bool process_hold_signal(struct process *p, int sig)
{
    if (p->exec_id || p->exited || p->pid <= 0)
        return false;
    /* Created and not started: the child waits with handlers that end it (as runc's init
     * waiting for its start ends): sent at once, never held. */
    if (p->state == PROC_CREATED)
        return false;
    uint64_t now = monotonic_ms();
    struct signal_masks masks;
    bool in_window = p->held.execd && now - p->held.execd_ms < SIGNAL_HOLD_WINDOW_MS;
    bool have_masks = in_window && read_signal_masks(p->pid, &masks);
    if (!signal_hold_wanted(&p->held, sig, have_masks ? &masks : NULL, now) || !hold_timer_ready())
        return false;
    if (!signal_hold_add(&p->held, sig)) {
        LOG_WARN("%s: already %d signals held: signal %d is sent as it is (the kernel drops it)", process_name(p),
                 SIGNAL_HOLD_MAX, sig);
        return false;
    }
    if (p->held.execd)
        LOG_INFO("%s: signal %d held: %llu ms after its exec the process neither catches, ignores nor blocks it",
                 process_name(p), sig, (unsigned long long)(now - p->held.execd_ms));
    else
        LOG_INFO("%s: signal %d held until the process has exec'd and takes it", process_name(p), sig);
    hold_timer_update();
    return true;
}

/* The init exec'd: its hold window starts. */
static void hold_on_exec(struct process *p)
{
    if (p->exec_id)
        return;
    signal_hold_on_exec(&p->held, monotonic_ms());
    hold_timer_update();
}

/* The process exited or is forgotten: its held signals go with it. */
static void hold_clear(struct process *p, const char *why)
{
    size_t n = signal_hold_clear(&p->held);
    if (n)
        LOG_INFO("%s: %zu held signal(s) dropped: %s", process_name(p), n, why);
}

static void on_hold_timer(void *unused, uint32_t events)
{
    if (!loop_timer_ack(&g_hold_timer))
        return;
    uint64_t now = monotonic_ms();
    for (struct process *p = g_inits; p; p = p->init_next) {
        if (p->exited || !signal_hold_needs_poll(&p->held))
            continue;
        struct signal_masks masks;
        bool have_masks = read_signal_masks(p->pid, &masks);
        int deliver[SIGNAL_HOLD_MAX];
        size_t dropped;
        size_t n = signal_hold_poll(&p->held, have_masks ? &masks : NULL, now, deliver, &dropped);
        unsigned long long since_exec = (unsigned long long)(now - p->held.execd_ms);
        for (size_t i = 0; i < n; i++) {
            if (kill(p->pid, deliver[i]) < 0)
                LOG_WARN("%s: held signal %d: kill %d: %s", process_name(p), deliver[i], (int)p->pid,
                         strerror(errno));
            else
                LOG_INFO("%s: held signal %d delivered, %llu ms after its exec", process_name(p), deliver[i],
                         since_exec);
        }
        if (dropped)
            LOG_INFO("%s: %zu held signal(s) dropped: the process took none within %u ms of its exec (a PID 1 "
                     "without a handler ignores them, as under runc)",
                     process_name(p), dropped, SIGNAL_HOLD_WINDOW_MS);
    }
    hold_timer_update();
}

/* ---------------------------------------------------------------- lifecycle */

/* The child's status pipe is readable: its set-up report, its exec failure, or EOF (it exec'd
 * or died). */
static void on_status(void *process, uint32_t events)
{
    struct process *p = process;
    struct child_report rep;
    ssize_t n = read(p->status_fd, &rep, sizeof rep);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    char msg[700];
    if (n == (ssize_t)sizeof rep) {
        rep.message[sizeof rep.message - 1] = 0;
        if (rep.code == RPC_OK && p->awaiting == AWAIT_SETUP) {
            p->awaiting = AWAIT_NONE;
            if (p->terminal && attach_terminal(p) < 0) {
                snprintf(msg, sizeof msg, "%s: terminal: the pty master did not arrive", process_name(p));
                g_events->setup_done(p, RPC_INTERNAL, msg);
                return;
            }
            p->state = PROC_CREATED;
            TIMING_MARK("child_ready");
            g_events->setup_done(p, RPC_OK, NULL);
            TIMING_END("CreateContainer");
            return;
        }
        if (rep.code != RPC_OK) {
            enum proc_awaiting was = p->awaiting;
            p->awaiting = AWAIT_NONE;
            LOG_WARN("%s: %s", process_name(p), rep.message);
            snprintf(msg, sizeof msg, "%s: %s", process_name(p), rep.message);
            if (was == AWAIT_SETUP) {
                /* A failed Create/Exec leaves nothing: the owner kills the child, (unmounts,) forgets. */
                g_events->setup_done(p, rep.code, msg);
                return;
            }
            p->state = PROC_RUNNING; /* exec failed: it exits 127, Wait reports that */
            if (was == AWAIT_EXEC)
                g_events->start_done(p, rep.code, msg);
        }
        return;
    }
    /* EOF (the child exec'd, or died) or a torn report. */
    close_status(p);
    enum proc_awaiting was = p->awaiting;
    p->awaiting = AWAIT_NONE;
    if (was == AWAIT_EXEC) {
        p->state = PROC_RUNNING;
        hold_on_exec(p);
        g_events->start_done(p, RPC_OK, NULL);
    } else if (was == AWAIT_SETUP) {
        snprintf(msg, sizeof msg, "%s: process died during setup", process_name(p));
        g_events->setup_done(p, RPC_INTERNAL, msg);
    }
}

int process_start(struct process *p, char *err, size_t errcap)
{
    if (p->state != PROC_CREATED || p->exited || p->start_fd < 0) {
        static const char *const names[] = { "being created", "created", "starting", "running", "stopped" };
        snprintf(err, errcap, "%s cannot be started: it is %s", process_name(p),
                 p->exited ? "stopped" : names[p->state]);
        return RPC_FAILED_PRECONDITION;
    }
    char go = 1;
    ssize_t w = write(p->start_fd, &go, 1);
    close_fd_at(&p->start_fd);
    if (w != 1) {
        snprintf(err, errcap, "%s: the process is gone", process_name(p));
        return RPC_FAILED_PRECONDITION;
    }
    p->state = PROC_STARTING;
    p->awaiting = AWAIT_EXEC;
    if (p->status_fd < 0) { /* cannot happen: the child holds it until exec */
        p->awaiting = AWAIT_NONE;
        g_events->start_done(p, RPC_OK, NULL);
    }
    return RPC_OK;
}

int process_resize_pty(struct process *p, uint32_t width, uint32_t height, char *err, size_t errcap)
{
    if (!p->terminal) {
        snprintf(err, errcap, "%s has no terminal to resize", process_name(p));
        return RPC_FAILED_PRECONDITION;
    }
    if (width > 0xffff || height > 0xffff) {
        snprintf(err, errcap, "%s: terminal size %ux%u is too large (max 65535)", process_name(p), width, height);
        return RPC_INVALID_ARGUMENT;
    }
    if (p->exited || p->pty_fd < 0)
        return RPC_OK; /* exited (or not set up yet): nothing to resize, as with runc */
    struct winsize ws = { .ws_row = (unsigned short)height, .ws_col = (unsigned short)width };
    if (ioctl(p->pty_fd, TIOCSWINSZ, &ws) < 0) {
        snprintf(err, errcap, "%s: TIOCSWINSZ: %s", process_name(p), strerror(errno));
        return RPC_INTERNAL;
    }
    return RPC_OK;
}

void process_close_stdin(struct process *p)
{
    stream_close_stdin(p->in);
}

static uint64_t now_unix_nano(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void process_exited(struct process *p, int wait_status, uint64_t oom_kill)
{
    p->exited = true;
    p->state = PROC_EXITED;
    p->exit_status = WIFEXITED(wait_status) ? (uint32_t)WEXITSTATUS(wait_status)
                     : WIFSIGNALED(wait_status) ? 128u + (uint32_t)WTERMSIG(wait_status)
                                                : 255u;
    p->exited_at = now_unix_nano();
    p->oom_kill = oom_kill;
    LOG_INFO("%s: process %d exited with status %u", process_name(p), (int)p->pid, p->exit_status);
    hold_clear(p, "the process exited");
    stream_destroy(p->in);
    p->in = NULL;
    close_fd_at(&p->start_fd);
    close_fd_at(&p->console_fd);
    close_fd_at(&p->pty_fd);
}

void process_drop_output(struct process *p)
{
    for (int i = 0; i < 2; i++)
        stream_force_eof(p->out[i]);
}

void process_kill_and_reap(struct process *p)
{
    if (p->pid > 0 && !p->exited) {
        kill(p->pid, SIGKILL);
        int status;
        while (waitpid(p->pid, &status, 0) < 0 && errno == EINTR)
            ;
        p->exited = true;
    }
}

void process_release(struct process *p, const char *why)
{
    if (!p->exited && p->pid > 0)
        kill(p->pid, SIGKILL);
    hold_clear(p, why);
    close_status(p);
    close_fd_at(&p->start_fd);
    close_fd_at(&p->console_fd);
    close_fd_at(&p->pty_fd);
    for (int i = 0; i < 2; i++) {
        stream_destroy(p->out[i]);
        p->out[i] = NULL;
    }
    stream_destroy(p->in);
    p->in = NULL;
    watch_forget(&p->status_watch);
    for (struct process **pp = &g_inits; *pp; pp = &(*pp)->init_next) {
        if (*pp == p) {
            *pp = p->init_next;
            break;
        }
    }
}
