#include "container.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cgroups.h"
#include "child.h"
#include "fsutil.h"
#include "log.h"
#include "mounts.h"
#include "rootfs.h"
#include "security.h"
#include "signal_hold.h"
#include "stdio_pump.h"

#define MAX_EXECS_PER_CONTAINER 1024

struct container {
    struct container *next;
    char *id;
    struct rootfs fs;
    struct seccomp_program seccomp; /* linux.seccomp, for the init process and every exec */
    struct process init;
    struct process *execs;
    size_t nexecs;
    bool pidns_known;
    dev_t pidns_dev;
    ino_t pidns_ino;
    bool removing;
    struct pending_reply *removals;
    /* Its cgroup (protocol 1.3); has_cgroup false when the guest has no cgroup2. */
    bool has_cgroup;
    char cgroup_dir[300];
    int cgroup_fd; /* its directory (clone3 CLONE_INTO_CGROUP), or -1 */
    struct agent_resources resources; /* as applied so far (Update merges into it) */
    int oom_wd;                       /* inotify watch of memory.events, or -1 */
    struct oom_waiter *oom_waiters;   /* WatchOom callers */
};

/* A WatchOom caller: answered once oom_kill > seen, or when the container goes. */
struct oom_waiter {
    struct oom_waiter *next;
    uint64_t gen;
    uint32_t stream_id;
    uint64_t seen;
};

static struct container *g_containers;

/* Cgroups of removed containers whose processes were still exiting: removed later. */
#define MAX_STALE_CGROUPS 64
static char *g_stale_cgroups[MAX_STALE_CGROUPS];

static uint64_t now_unix_nano(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct container *find_container(const char *id)
{
    if (!id)
        return NULL;
    for (struct container *c = g_containers; c; c = c->next)
        if (strcmp(c->id, id) == 0)
            return c;
    return NULL;
}

static struct pending_reply *pending_push(struct pending_reply **list, uint64_t gen, uint32_t sid)
{
    struct pending_reply *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->gen = gen;
    p->stream_id = sid;
    p->next = *list;
    *list = p;
    return p;
}

/* "container "c"" or "container "c" exec "e"": how messages name a process. */
static const char *proc_name(const struct process *p)
{
    static char buf[2][400];
    static int which;
    which ^= 1;
    const char *cid = p->container && p->container->id ? p->container->id : "";
    if (p->exec_id)
        snprintf(buf[which], sizeof buf[which], "container \"%.128s\" exec \"%.128s\"", cid, p->exec_id);
    else
        snprintf(buf[which], sizeof buf[which], "container \"%.128s\"", cid);
    return buf[which];
}

static struct process *find_exec(const struct container *c, const char *exec_id)
{
    for (struct process *p = c->execs; p; p = p->next)
        if (strcmp(p->exec_id, exec_id) == 0)
            return p;
    return NULL;
}

/* Looks up the container and the process (init for an empty exec_id) a request names;
 * answers the request with the error and returns NULL when either is unknown. */
static struct process *target_process(uint64_t gen, uint32_t sid, const struct process_target *t,
                                      struct container **out_c)
{
    struct container *c = find_container(t->container_id);
    if (!c) {
        agent_respond_error(gen, sid, RPC_NOT_FOUND, "container \"%.200s\" not found",
                            t->container_id ? t->container_id : "");
        return NULL;
    }
    struct process *p = &c->init;
    if (t->exec_id && t->exec_id[0] && !(p = find_exec(c, t->exec_id))) {
        agent_respond_error(gen, sid, RPC_NOT_FOUND, "container \"%s\": exec \"%.200s\" not found", c->id,
                            t->exec_id);
        return NULL;
    }
    if (out_c)
        *out_c = c;
    return p;
}

static bool valid_container_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 128 || id[0] == '.' || id[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)id[i]) && id[i] != '_' && id[i] != '-' && id[i] != '.')
            return false;
    return true;
}


/* ---------------------------------------------------------------- cgroups */

/* Retries the removal of cgroups whose processes were still exiting. */
static void retry_stale_cgroups(void)
{
    for (size_t i = 0; i < MAX_STALE_CGROUPS; i++) {
        if (g_stale_cgroups[i] && cgroup_destroy(g_stale_cgroups[i]) == 0) {
            free(g_stale_cgroups[i]);
            g_stale_cgroups[i] = NULL;
        }
    }
}

static void answer_oom_waiters(struct container *c, uint64_t count, bool removed)
{
    struct oom_waiter **pp = &c->oom_waiters;
    while (*pp) {
        struct oom_waiter *w = *pp;
        if (!removed && count <= w->seen && w->gen == g_conn.gen) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        if (w->gen == g_conn.gen) { /* else: asked on a connection that is gone */
            pb_writer out;
            pb_writer_init(&out);
            agent_encode_watch_oom_response(&out, count, removed);
            agent_respond(w->gen, w->stream_id, WQ_CONTROL, RPC_OK, NULL, &out);
            pb_writer_free(&out);
        }
        free(w);
    }
}

/* The container goes: WatchOom callers learn it, its cgroup is killed and removed (later, if
 * its processes are still exiting). */
static void container_release_cgroup(struct container *c)
{
    answer_oom_waiters(c, c->has_cgroup ? cgroup_read_oom_kill(c->cgroup_dir) : 0, true);
    agent_resources_free(&c->resources);
    if (!c->has_cgroup)
        return;
    cgroup_unwatch_events(c->oom_wd);
    c->oom_wd = -1;
    close_fd_at(&c->cgroup_fd);
    c->has_cgroup = false;
    if (cgroup_destroy(c->cgroup_dir) == 0)
        return;
    for (size_t i = 0; i < MAX_STALE_CGROUPS; i++) {
        if (!g_stale_cgroups[i]) {
            g_stale_cgroups[i] = strdup(c->cgroup_dir);
            return;
        }
    }
    LOG_WARN("cgroup %s stays: too many removals pending", c->cgroup_dir);
}

/* Makes the container's cgroup and applies the spec's resources. RPC code, err filled in. */
static int container_setup_cgroup(struct container *c, const struct create_container_request *req, char *err,
                                  size_t errcap)
{
    c->oom_wd = -1;
    bool wants_limits = req->has_resources;
    if (!cgroups_available()) {
        if (!wants_limits)
            return RPC_OK;
        snprintf(err, errcap, "linux.resources: the guest has no cgroup v2 to apply them in");
        return RPC_FAILED_PRECONDITION;
    }
    struct cgroup_plan plan = { 0 };
    int code;
    if (wants_limits && (code = cgroup_plan_resources(&req->resources, NULL, &plan, err, errcap)) != RPC_OK)
        return code;
    TIMING_MARK("cg_plan");
    retry_stale_cgroups();
    TIMING_MARK("cg_stale");
    code = cgroup_create(c->id, c->cgroup_dir, sizeof c->cgroup_dir, &c->cgroup_fd, &c->oom_wd, err, errcap);
    if (code != RPC_OK)
        return code;
    c->has_cgroup = true;
    TIMING_MARK("cg_mkdir");
    if ((code = cgroup_apply(c->cgroup_dir, &plan, err, errcap)) != RPC_OK)
        return code;
    TIMING_MARK("cg_apply");
    if (wants_limits && cgroup_resources_merge(&c->resources, &req->resources) < 0) {
        snprintf(err, errcap, "out of memory");
        return RPC_INTERNAL;
    }
    return RPC_OK;
}

/* ---------------------------------------------------------------- lifecycle */

static void answer_pending(struct process *p, int32_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void answer_pending(struct process *p, int32_t code, const char *fmt, ...)
{
    if (p->pending == PENDING_NONE)
        return;
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (code == RPC_OK) {
        /* CreateContainerResponse, ExecProcessResponse and StartProcessResponse: { pid = 1 } */
        pb_writer w;
        pb_writer_init(&w);
        agent_encode_pid_response(&w, (uint32_t)p->pid);
        agent_respond(p->pending_reply.gen, p->pending_reply.stream_id, WQ_CONTROL, RPC_OK, NULL, &w);
        pb_writer_free(&w);
    } else {
        agent_respond(p->pending_reply.gen, p->pending_reply.stream_id, WQ_CONTROL, code, msg, NULL);
    }
    p->pending = PENDING_NONE;
}

/* Answers (and frees) every reply in the list: OK when msg is NULL, else the error. */
static void answer_list(struct pending_reply **list, int32_t code, const char *msg)
{
    while (*list) {
        struct pending_reply *r = *list;
        *list = r->next;
        if (code == RPC_OK)
            agent_respond(r->gen, r->stream_id, WQ_CONTROL, RPC_OK, NULL, NULL);
        else
            agent_respond_error(r->gen, r->stream_id, code, "%s", msg);
        free(r);
    }
}

static bool process_finished(const struct process *p)
{
    return p->exited && stream_out_done(p->out[0]) && stream_out_done(p->out[1]);
}

static void answer_waits(struct process *p)
{
    if (!process_finished(p))
        return;
    pb_writer w;
    pb_writer_init(&w);
    agent_encode_wait_response(&w, p->exit_status, p->exited_at, p->oom_kill);
    while (p->waits) {
        struct pending_reply *r = p->waits;
        p->waits = r->next;
        /* Data lane: behind the EOF frames of its output (agent.proto's ordering rule). */
        agent_respond(r->gen, r->stream_id, WQ_DATA, RPC_OK, NULL, &w);
        free(r);
    }
    pb_writer_free(&w);
}

void process_on_output_done(struct process *p)
{
    answer_waits(p);
}

static void close_status(struct process *p)
{
    if (p->status_fd >= 0) {
        watch_del(p->status_fd);
        close_fd_at(&p->status_fd);
    }
}

static void process_init_fields(struct process *p, struct container *c)
{
    p->container = c;
    p->status_fd = -1;
    p->start_fd = -1;
    p->console_fd = -1;
    p->pty_fd = -1;
    p->status_watch.fn = container_on_status;
    p->status_watch.obj = p;
}

static void hold_clear(struct process *p, const char *why);

/* Lets go of everything the agent holds for the process (killing it if it still runs) and
 * fails its pending answers; p itself stays allocated (and linked) for the caller. */
static void process_release(struct process *p, const char *why)
{
    if (!p->exited && p->pid > 0)
        kill(p->pid, SIGKILL);
    hold_clear(p, why);
    char msg[600];
    snprintf(msg, sizeof msg, "%s %s", proc_name(p), why);
    answer_pending(p, RPC_NOT_FOUND, "%s", msg);
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
    answer_list(&p->waits, RPC_NOT_FOUND, msg);
    answer_list(&p->removals, RPC_OK, NULL); /* gone, as asked */
    watch_forget(&p->status_watch);
}

/* Forgets an exec: it must be dead or dying (process_release kills it). */
static void exec_destroy(struct process *p)
{
    struct container *c = p->container;
    process_release(p, "was removed");
    for (struct process **pp = &c->execs; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            c->nexecs--;
            break;
        }
    }
    free(p->exec_id);
    p->exec_id = NULL;
    defer_free(p); /* its status watch may still be in this epoll batch */
}

/* Forgets the container: its processes must be dead or dying (killed). */
static void container_destroy(struct container *c)
{
    process_release(&c->init, "was removed");
    while (c->execs)
        exec_destroy(c->execs);
    rootfs_unmount(&c->fs);
    container_release_cgroup(c);
    seccomp_program_free(&c->seccomp);
    for (struct container **pp = &g_containers; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    free(c->id);
    c->id = NULL;
    defer_free(c);
}

/* A process whose creation failed: an exec goes alone, an init process takes its container. */
static void destroy_failed_process(struct process *p)
{
    /* The child reported its failure and is exiting (or is blocked before exec): kill and reap
     * it here, so that nothing of it — not even a zombie in ListProcesses — outlives the
     * answer, which the event loop sends only after this returns. */
    if (p->pid > 0 && !p->exited) {
        kill(p->pid, SIGKILL);
        int status;
        while (waitpid(p->pid, &status, 0) < 0 && errno == EINTR)
            ;
        p->exited = true;
    }
    if (p->exec_id)
        exec_destroy(p);
    else
        container_destroy(p->container);
}

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

/* Checks a process's stdio stream ids; NULL, or the message (in msg). */
static const char *validate_stdio(const char *who, const struct stdio_streams *s, bool terminal, char *msg,
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
        if (stream_id_in_use(ids[i]) || (i > 0 && ids[i] == ids[0]) || (i == 2 && ids[2] == ids[1])) {
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

/* Clones the process's child, which sets itself up and waits before execve, and keeps the
 * agent's ends: status and start pipes, stdio pipes and their streams (terminal: the streams
 * get the pty master once the child sends it). pidns_fd >= 0: the child is born in that pid
 * namespace. On failure the request is answered and -1 returned: the caller destroys p. */
static int spawn_process(uint64_t gen, uint32_t sid, struct process *p, struct child_ctx *ctx,
                         const struct stdio_streams *stdio, int clone_flags, int pidns_fd)
{
    const char *who = proc_name(p);
    bool term = ctx->proc->terminal;
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
        agent_respond_error(gen, sid, RPC_INTERNAL, "%s: pipes: %s", who, strerror(errno));
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
            agent_respond_error(gen, sid, RPC_INTERNAL, "%s: join the container's pid namespace: %s", who,
                                strerror(errno));
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
        agent_respond_error(gen, sid, RPC_RESOURCE_EXHAUSTED, "%s: join the container's cgroup: %s (pids.max reached)",
                            who, strerror(clone_errno));
        goto fail;
    }
    if (pid < 0) {
        agent_respond_error(gen, sid, RPC_INTERNAL, "%s: clone: %s", who, strerror(clone_errno));
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
        agent_respond_error(gen, sid, RPC_INTERNAL, "%s: epoll: %s", who, strerror(errno));
        close_fd_at(&in_pipe[1]);
        close_fd_at(&out_pipe[0]);
        close_fd_at(&err_pipe[0]);
        return -1;
    }
    /* Each stream_open takes its fd (-1: attached later, terminal). */
    if (stdio->stdin_id)
        p->in = stream_open(STREAM_IN, stdio->stdin_id, in_pipe[1], p);
    if (stdio->stdout_id)
        p->out[0] = stream_open(STREAM_OUT, stdio->stdout_id, out_pipe[0], p);
    if (stdio->stderr_id)
        p->out[1] = stream_open(STREAM_OUT, stdio->stderr_id, err_pipe[0], p);
    if ((stdio->stdin_id && !p->in) || (stdio->stdout_id && !p->out[0]) || (stdio->stderr_id && !p->out[1])) {
        agent_respond_error(gen, sid, RPC_INTERNAL, "%s: out of memory", who);
        return -1;
    }
    stream_update_all();
    p->pending = PENDING_CREATE;
    p->pending_reply.gen = gen;
    p->pending_reply.stream_id = sid;
    return 0;
fail:
    close_pair(in_pipe);
    close_pair(out_pipe);
    close_pair(err_pipe);
    close_pair(status_pipe);
    close_pair(start_pipe);
    close_pair(console);
    return -1;
}

static const char *validate_create(const struct create_container_request *req, int *code)
{
    static char msg[600];
    *code = RPC_INVALID_ARGUMENT;
    const char *id = req->container_id ? req->container_id : "";
    if (!valid_container_id(id)) {
        snprintf(msg, sizeof msg, "invalid container id \"%.200s\": want 1-128 of [A-Za-z0-9_.-]", id);
        return msg;
    }
    if (find_container(id)) {
        *code = RPC_ALREADY_EXISTS;
        snprintf(msg, sizeof msg, "container \"%s\" already exists", id);
        return msg;
    }
    if (!req->image.present || !req->image.serial || !req->image.serial[0]) {
        snprintf(msg, sizeof msg, "container \"%s\": no image disk slot given", id);
        return msg;
    }
    const struct disk_slot *slots[2] = { &req->image, &req->writable };
    for (int i = 0; i < 2; i++) {
        if (!slots[i]->present)
            continue;
        if (!slots[i]->serial || !slots[i]->serial[0]) {
            snprintf(msg, sizeof msg, "container \"%s\": writable disk slot without a serial", id);
            return msg;
        }
        if (slots[i]->fs_type && slots[i]->fs_type[0] && !rootfs_fs_supported(slots[i]->fs_type)) {
            snprintf(msg, sizeof msg, "container \"%s\": unsupported filesystem \"%.64s\" (want erofs or ext4)",
                     id, slots[i]->fs_type);
            return msg;
        }
    }
    if (!req->has_process || req->process.nargs == 0 || req->process.args[0][0] == 0) {
        snprintf(msg, sizeof msg, "container \"%s\": process args must not be empty", id);
        return msg;
    }
    char who[200], err[450];
    snprintf(who, sizeof who, "container \"%s\"", id);
    int rc = mounts_validate(req, err, sizeof err);
    if (rc != RPC_OK) {
        *code = rc;
        snprintf(msg, sizeof msg, "%s: %s", who, err);
        return msg;
    }
    struct cap_masks caps;
    if (req->process.has_caps && caps_resolve(&req->process.caps, &caps, err, sizeof err) < 0) {
        snprintf(msg, sizeof msg, "%s: %s", who, err);
        return msg;
    }
    return validate_stdio(who, &req->stdio, req->process.terminal, msg, sizeof msg);
}

void container_create(uint64_t gen, uint32_t sid, struct create_container_request *req)
{
    int code;
    TIMING_BEGIN();
    const char *invalid = validate_create(req, &code);
    if (invalid) {
        agent_respond(gen, sid, WQ_CONTROL, code, invalid, NULL);
        return;
    }
    struct container *c = calloc(1, sizeof *c);
    if (!c || !(c->id = strdup(req->container_id))) {
        free(c);
        agent_respond_error(gen, sid, RPC_INTERNAL, "container \"%s\": out of memory", req->container_id);
        return;
    }
    rootfs_init_paths(&c->fs, c->id);
    c->cgroup_fd = -1;
    c->oom_wd = -1;
    struct process *p = &c->init;
    process_init_fields(p, c);
    p->terminal = req->process.terminal;
    c->next = g_containers;
    g_containers = c;

    char err[600];
    c->oom_wd = -1;
    TIMING_MARK("validate");
    if (req->has_linux && req->linux_sec.has_seccomp &&
        seccomp_compile(&req->linux_sec.seccomp, &c->seccomp, err, sizeof err) < 0) {
        agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT, "container \"%s\": %s", c->id, err);
        container_destroy(c);
        return;
    }
    TIMING_MARK("seccomp");
    if ((code = container_setup_cgroup(c, req, err, sizeof err)) != RPC_OK) {
        agent_respond_error(gen, sid, code, "container \"%s\": %s", c->id, err);
        container_destroy(c);
        return;
    }
    TIMING_MARK("open_procs");
    if (rootfs_mount(&c->fs, req, &code, err, sizeof err) < 0 ||
        (code = mounts_write_files(req, c->fs.files_dir, err, sizeof err)) != RPC_OK ||
        (code = mounts_prepare_share(req, err, sizeof err)) != RPC_OK) {
        agent_respond_error(gen, sid, code, "container \"%s\": %s", c->id, err);
        container_destroy(c);
        return;
    }
    struct child_ctx ctx = {
        .proc = &req->process,
        .create = req,
        .rootfs = c->fs.rootfs_dir,
        .files_dir = c->fs.files_dir,
        .seccomp = &c->seccomp,
        .ns_fds = { -1, -1, -1 },
        .cgroup_fd = c->cgroup_fd,
        .cgroupns_fd = -1,
        .cgroup_procs_fd = -1,
    };
    TIMING_MARK("files_share");
    int spawned = spawn_process(gen, sid, p, &ctx, &req->stdio,
                                CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC, -1);
    if (spawned < 0) {
        container_destroy(c);
        return;
    }
    TIMING_MARK("agent_done");
    LOG_INFO("container %s: init process %d created", c->id, (int)p->pid);
}

void container_exec(uint64_t gen, uint32_t sid, struct exec_process_request *req)
{
    struct container *c = find_container(req->container_id);
    if (!c) {
        agent_respond_error(gen, sid, RPC_NOT_FOUND, "container \"%.200s\" not found",
                            req->container_id ? req->container_id : "");
        return;
    }
    const char *eid = req->exec_id ? req->exec_id : "";
    if (!valid_container_id(eid)) {
        agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT,
                            "container \"%s\": invalid exec id \"%.200s\": want 1-128 of [A-Za-z0-9_.-]", c->id, eid);
        return;
    }
    if (find_exec(c, eid)) {
        agent_respond_error(gen, sid, RPC_ALREADY_EXISTS, "container \"%s\": exec \"%s\" already exists", c->id, eid);
        return;
    }
    if (c->removing || c->init.exited || c->init.pid <= 0 || c->init.state == PROC_CREATING) {
        agent_respond_error(gen, sid, RPC_FAILED_PRECONDITION, "container \"%s\" is %s: cannot exec \"%s\" in it",
                            c->id, c->init.exited || c->removing ? "stopped" : "not created yet", eid);
        return;
    }
    if (c->nexecs >= MAX_EXECS_PER_CONTAINER) {
        agent_respond_error(gen, sid, RPC_RESOURCE_EXHAUSTED, "container \"%s\": already %d execs; remove some first",
                            c->id, MAX_EXECS_PER_CONTAINER);
        return;
    }
    char who[400], msg[600];
    snprintf(who, sizeof who, "container \"%s\" exec \"%s\"", c->id, eid);
    if (!req->has_process || req->process.nargs == 0 || req->process.args[0][0] == 0) {
        agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT, "%s: process args must not be empty", who);
        return;
    }
    if (validate_stdio(who, &req->stdio, req->process.terminal, msg, sizeof msg)) {
        agent_respond(gen, sid, WQ_CONTROL, RPC_INVALID_ARGUMENT, msg, NULL);
        return;
    }
    struct cap_masks caps;
    char cap_err[300];
    if (req->process.has_caps && caps_resolve(&req->process.caps, &caps, cap_err, sizeof cap_err) < 0) {
        agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT, "%s: %s", who, cap_err);
        return;
    }
    /* The namespaces of the container's init process: pid (for clone), ipc, uts, mount. */
    static const char *const ns_names[4] = { "pid", "ipc", "uts", "mnt" };
    int ns[4] = { -1, -1, -1, -1 };
    for (int i = 0; i < 4; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)c->init.pid, ns_names[i]);
        ns[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (ns[i] < 0) {
            int e = errno;
            agent_respond_error(gen, sid, e == ENOENT || e == ESRCH ? RPC_FAILED_PRECONDITION : RPC_INTERNAL,
                                "%s: open %s: %s (is the container stopping?)", who, path, strerror(e));
            for (int j = 0; j < i; j++)
                close(ns[j]);
            return;
        }
    }
    struct process *p = calloc(1, sizeof *p);
    if (!p || !(p->exec_id = strdup(eid))) {
        free(p);
        for (int i = 0; i < 4; i++)
            close(ns[i]);
        agent_respond_error(gen, sid, RPC_INTERNAL, "%s: out of memory", who);
        return;
    }
    process_init_fields(p, c);
    p->terminal = req->process.terminal;
    p->next = c->execs;
    c->execs = p;
    c->nexecs++;
    /* Its cgroup and cgroup namespace: those of the container (none without cgroups). */
    char cgns_path[64];
    snprintf(cgns_path, sizeof cgns_path, "/proc/%d/ns/cgroup", (int)c->init.pid);
    int cgroupns = c->cgroup_fd >= 0 ? open(cgns_path, O_RDONLY | O_CLOEXEC) : -1;
    struct child_ctx ctx = {
        .proc = &req->process,
        .create = NULL,
        .rootfs = NULL,
        .files_dir = NULL,
        .seccomp = &c->seccomp,
        .ns_fds = { ns[1], ns[2], ns[3] },
        .cgroup_fd = c->cgroup_fd,
        .cgroupns_fd = cgroupns,
        .cgroup_procs_fd = -1,
    };
    int rc = c->has_cgroup && cgroupns < 0 ? -2 : spawn_process(gen, sid, p, &ctx, &req->stdio, 0, ns[0]);
    if (rc == -2)
        agent_respond_error(gen, sid, RPC_INTERNAL, "%s: open the container's cgroup: %s", who, strerror(errno));
    for (int i = 0; i < 4; i++)
        close(ns[i]);
    if (cgroupns >= 0)
        close(cgroupns);
    if (rc < 0) {
        exec_destroy(p);
        return;
    }
    LOG_INFO("%s: process %d created", who, (int)p->pid);
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
    stream_update_all();
    return 0;
}

/* ---------------------------------------------------------------- held signals */

/* Signals to an init process that the kernel would drop: held, then delivered or dropped by a
 * poll (signal_hold.h says what and why). The poll's timer runs only while some init that has
 * exec'd has signals held. */
static struct loop_timer g_hold_timer = { .fd = -1 };
static unsigned g_hold_timer_interval_ms; /* its period; 0: disarmed */

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
    if (loop_timer_open(&g_hold_timer, container_on_signal_hold_timer, NULL) < 0) {
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
    for (struct container *c = g_containers; c; c = c->next) {
        if (c->init.exited || !signal_hold_needs_poll(&c->init.held))
            continue;
        unsigned ms = signal_hold_poll_interval_ms(&c->init.held, now);
        if (interval_ms == 0 || ms < interval_ms)
            interval_ms = ms;
    }
    if (interval_ms == g_hold_timer_interval_ms || g_hold_timer.fd < 0)
        return;
    if (loop_timer_set(&g_hold_timer, interval_ms, true) == 0)
        g_hold_timer_interval_ms = interval_ms;
}

/* A signal for the container's init: held when the kernel would drop it now. True when held
 * (the caller then sends nothing). */
static bool hold_init_signal(struct container *c, int sig)
{
    struct process *p = &c->init;
    if (p->exited || p->pid <= 0)
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
        LOG_WARN("%s: already %d signals held: signal %d is sent as it is (the kernel drops it)", proc_name(p),
                 SIGNAL_HOLD_MAX, sig);
        return false;
    }
    if (p->held.execd)
        LOG_INFO("%s: signal %d held: %llu ms after its exec the process neither catches, ignores nor blocks it",
                 proc_name(p), sig, (unsigned long long)(now - p->held.execd_ms));
    else
        LOG_INFO("%s: signal %d held until the process has exec'd and takes it", proc_name(p), sig);
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
        LOG_INFO("%s: %zu held signal(s) dropped: %s", proc_name(p), n, why);
}

void container_on_signal_hold_timer(void *unused, uint32_t events)
{
    if (!loop_timer_ack(&g_hold_timer))
        return;
    uint64_t now = monotonic_ms();
    for (struct container *c = g_containers; c; c = c->next) {
        struct process *p = &c->init;
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
                LOG_WARN("%s: held signal %d: kill %d: %s", proc_name(p), deliver[i], (int)p->pid, strerror(errno));
            else
                LOG_INFO("%s: held signal %d delivered, %llu ms after its exec", proc_name(p), deliver[i], since_exec);
        }
        if (dropped)
            LOG_INFO("%s: %zu held signal(s) dropped: the process took none within %u ms of its exec (a PID 1 "
                     "without a handler ignores them, as under runc)",
                     proc_name(p), dropped, SIGNAL_HOLD_WINDOW_MS);
    }
    hold_timer_update();
}

void container_on_status(void *process, uint32_t events)
{
    struct process *p = process;
    struct child_report rep;
    ssize_t n = read(p->status_fd, &rep, sizeof rep);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n == (ssize_t)sizeof rep) {
        rep.message[sizeof rep.message - 1] = 0;
        if (rep.code == RPC_OK && p->pending == PENDING_CREATE) {
            if (p->terminal && attach_terminal(p) < 0) {
                answer_pending(p, RPC_INTERNAL, "%s: terminal: the pty master did not arrive", proc_name(p));
                destroy_failed_process(p);
                return;
            }
            p->state = PROC_CREATED;
            TIMING_MARK("child_ready");
            answer_pending(p, RPC_OK, "created");
            TIMING_END("CreateContainer");
            return;
        }
        if (rep.code != RPC_OK) {
            enum proc_pending was = p->pending;
            LOG_WARN("%s: %s", proc_name(p), rep.message);
            answer_pending(p, rep.code, "%s: %s", proc_name(p), rep.message);
            if (was == PENDING_CREATE) {
                /* A failed Create/Exec leaves nothing: kill the child, (unmount,) forget. */
                destroy_failed_process(p);
                return;
            }
            p->state = PROC_RUNNING; /* exec failed: it exits 127, Wait reports that */
        }
        return;
    }
    /* EOF (the child exec'd, or died) or a torn report. */
    close_status(p);
    if (p->pending == PENDING_START) {
        p->state = PROC_RUNNING;
        hold_on_exec(p);
        answer_pending(p, RPC_OK, "started");
    } else if (p->pending == PENDING_CREATE) {
        answer_pending(p, RPC_INTERNAL, "%s: process died during setup", proc_name(p));
        destroy_failed_process(p);
    }
}

void container_start(uint64_t gen, uint32_t sid, const struct process_target *t)
{
    struct process *p = target_process(gen, sid, t, NULL);
    if (!p)
        return;
    if (p->state != PROC_CREATED || p->exited || p->start_fd < 0) {
        static const char *const names[] = { "being created", "created", "starting", "running", "stopped" };
        agent_respond_error(gen, sid, RPC_FAILED_PRECONDITION, "%s cannot be started: it is %s", proc_name(p),
                            p->exited ? "stopped" : names[p->state]);
        return;
    }
    char go = 1;
    ssize_t w = write(p->start_fd, &go, 1);
    close_fd_at(&p->start_fd);
    if (w != 1) {
        agent_respond_error(gen, sid, RPC_FAILED_PRECONDITION, "%s: the process is gone", proc_name(p));
        return;
    }
    p->state = PROC_STARTING;
    p->pending = PENDING_START;
    p->pending_reply.gen = gen;
    p->pending_reply.stream_id = sid;
    if (p->status_fd < 0) /* cannot happen: the child holds it until exec */
        answer_pending(p, RPC_OK, "started");
}

void container_wait(uint64_t gen, uint32_t sid, const struct process_target *t)
{
    struct process *p = target_process(gen, sid, t, NULL);
    if (!p)
        return;
    if (!pending_push(&p->waits, gen, sid)) {
        agent_respond_error(gen, sid, RPC_INTERNAL, "%s: out of memory", proc_name(p));
        return;
    }
    answer_waits(p);
}

/* Pids of the processes in the container's pid namespace, as seen from the guest root. */
/* Learns the init's pid namespace (the first time it is needed: not on the create's path). */
static void learn_pidns(struct container *c)
{
    char nspath[64];
    struct stat st;
    snprintf(nspath, sizeof nspath, "/proc/%d/ns/pid", (int)c->init.pid);
    if (c->pidns_known || c->init.exited || c->init.pid <= 0 || stat(nspath, &st) < 0)
        return;
    c->pidns_known = true;
    c->pidns_dev = st.st_dev;
    c->pidns_ino = st.st_ino;
}

static size_t container_pids(struct container *c, pid_t *out, size_t cap)
{
    size_t n = 0;
    learn_pidns(c);
    if (!c->pidns_known || c->init.exited)
        return 0;
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < cap) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        char path[64];
        struct stat st;
        snprintf(path, sizeof path, "/proc/%ld/ns/pid", pid);
        if (stat(path, &st) == 0 && st.st_dev == c->pidns_dev && st.st_ino == c->pidns_ino)
            out[n++] = (pid_t)pid;
    }
    closedir(d);
    return n;
}

void container_signal(uint64_t gen, uint32_t sid, const struct process_target *t)
{
    struct container *c;
    struct process *p = target_process(gen, sid, t, &c);
    if (!p)
        return;
    if (t->signal == 0 || t->signal >= NSIG) {
        agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT, "%s: invalid signal %u", proc_name(p), t->signal);
        return;
    }
    if (p->exited || p->pid <= 0) {
        agent_respond_error(gen, sid, RPC_NOT_FOUND, "%s: process already finished", proc_name(p));
        return;
    }
    if (t->all) {
        /* Every process of the container: its pid namespace holds the init, the execs and
         * everything they started. */
        static pid_t pids[4096];
        size_t n = container_pids(c, pids, sizeof pids / sizeof pids[0]);
        for (size_t i = 0; i < n; i++)
            if (pids[i] != c->init.pid || !hold_init_signal(c, (int)t->signal))
                kill(pids[i], (int)t->signal);
    } else if (!p->exec_id && hold_init_signal(c, (int)t->signal)) {
        /* Held (signal_hold.h): answered like a kill(2) the kernel accepted. */
    } else if (kill(p->pid, (int)t->signal) < 0) {
        agent_respond_error(gen, sid, errno == ESRCH ? RPC_NOT_FOUND : RPC_INTERNAL, "%s: kill %d: %s", proc_name(p),
                            (int)p->pid, strerror(errno));
        return;
    }
    agent_respond(gen, sid, WQ_CONTROL, RPC_OK, NULL, NULL);
}

void container_close_stdin(uint64_t gen, uint32_t sid, const struct process_target *t)
{
    struct process *p = target_process(gen, sid, t, NULL);
    if (!p)
        return;
    stream_close_stdin(p->in);
    agent_respond(gen, sid, WQ_CONTROL, RPC_OK, NULL, NULL);
}

void container_resize_pty(uint64_t gen, uint32_t sid, const struct resize_pty_request *req)
{
    struct process_target t = { .container_id = req->container_id, .exec_id = req->exec_id };
    struct process *p = target_process(gen, sid, &t, NULL);
    if (!p)
        return;
    if (!p->terminal) {
        agent_respond_error(gen, sid, RPC_FAILED_PRECONDITION, "%s has no terminal to resize", proc_name(p));
        return;
    }
    if (req->width > 0xffff || req->height > 0xffff) {
        agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT, "%s: terminal size %ux%u is too large (max 65535)",
                            proc_name(p), req->width, req->height);
        return;
    }
    if (p->exited || p->pty_fd < 0) {
        /* Exited (or not set up yet): nothing to resize, as with runc. */
        agent_respond(gen, sid, WQ_CONTROL, RPC_OK, NULL, NULL);
        return;
    }
    struct winsize ws = { .ws_row = (unsigned short)req->height, .ws_col = (unsigned short)req->width };
    if (ioctl(p->pty_fd, TIOCSWINSZ, &ws) < 0) {
        agent_respond_error(gen, sid, RPC_INTERNAL, "%s: TIOCSWINSZ: %s", proc_name(p), strerror(errno));
        return;
    }
    agent_respond(gen, sid, WQ_CONTROL, RPC_OK, NULL, NULL);
}

void container_list(uint64_t gen, uint32_t sid, const struct process_target *t)
{
    struct container *c = find_container(t->container_id);
    if (!c) {
        agent_respond_error(gen, sid, RPC_NOT_FOUND, "container \"%.200s\" not found",
                            t->container_id ? t->container_id : "");
        return;
    }
    static pid_t pids[4096];
    static uint32_t upids[4096];
    static const char *exec_ids[4096];
    size_t n = container_pids(c, pids, sizeof pids / sizeof pids[0]);
    for (size_t i = 0; i < n; i++) {
        upids[i] = (uint32_t)pids[i];
        exec_ids[i] = "";
        for (struct process *e = c->execs; e; e = e->next)
            if (!e->exited && e->pid == pids[i])
                exec_ids[i] = e->exec_id;
    }
    pb_writer w;
    pb_writer_init(&w);
    agent_encode_list_response(&w, upids, exec_ids, n);
    agent_respond(gen, sid, WQ_CONTROL, RPC_OK, NULL, &w);
    pb_writer_free(&w);
}

/* The process is reaped: output still stuck behind missing credit ends here, so that
 * WaitProcess callers get the exit status rather than "removed". */
static void flush_exited(struct process *p)
{
    if (!p->exited)
        return;
    for (int i = 0; i < 2; i++)
        stream_force_eof(p->out[i]);
    answer_waits(p);
}

static void finish_remove(struct container *c)
{
    struct pending_reply *list = c->removals;
    c->removals = NULL;
    flush_exited(&c->init);
    for (struct process *e = c->execs; e; e = e->next)
        flush_exited(e);
    LOG_INFO("container %s removed", c->id);
    container_destroy(c);
    answer_list(&list, RPC_OK, NULL);
}

void container_remove(uint64_t gen, uint32_t sid, const struct process_target *t)
{
    struct container *c = find_container(t->container_id);
    if (!c) {
        agent_respond_error(gen, sid, RPC_NOT_FOUND, "container \"%.200s\" not found",
                            t->container_id ? t->container_id : "");
        return;
    }
    if (!pending_push(&c->removals, gen, sid)) {
        agent_respond_error(gen, sid, RPC_INTERNAL, "container \"%s\": out of memory", c->id);
        return;
    }
    if (c->init.exited || c->init.pid <= 0) {
        finish_remove(c);
        return;
    }
    /* Killing a pid namespace's init kills all of it; answered once it is reaped. */
    c->removing = true;
    kill(c->init.pid, SIGKILL);
}

static void finish_remove_process(struct process *p)
{
    struct pending_reply *list = p->removals;
    p->removals = NULL;
    flush_exited(p);
    LOG_INFO("%s removed", proc_name(p));
    exec_destroy(p);
    answer_list(&list, RPC_OK, NULL);
}

void container_remove_process(uint64_t gen, uint32_t sid, const struct process_target *t)
{
    if (!t->exec_id || !t->exec_id[0]) {
        agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT,
                            "container \"%.200s\": RemoveProcess needs an exec id (RemoveContainer removes the init process)",
                            t->container_id ? t->container_id : "");
        return;
    }
    struct process *p = target_process(gen, sid, t, NULL);
    if (!p)
        return;
    if (!pending_push(&p->removals, gen, sid)) {
        agent_respond_error(gen, sid, RPC_INTERNAL, "%s: out of memory", proc_name(p));
        return;
    }
    if (p->exited || p->pid <= 0) {
        finish_remove_process(p);
        return;
    }
    p->removing = true;
    kill(p->pid, SIGKILL);
}

/* The process (init or exec) of any container with this pid that has not exited yet. */
static struct process *process_by_pid(pid_t pid)
{
    for (struct container *c = g_containers; c; c = c->next) {
        if (c->init.pid == pid && !c->init.exited)
            return &c->init;
        for (struct process *e = c->execs; e; e = e->next)
            if (e->pid == pid && !e->exited)
                return e;
    }
    return NULL;
}

void container_reap_children(void)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) {
            retry_stale_cgroups();
            return;
        }
        struct process *p = process_by_pid(pid);
        if (!p)
            continue; /* a failed or removed process's child, or an orphan */
        struct container *c = p->container;
        p->exited = true;
        p->state = PROC_EXITED;
        p->exit_status = WIFEXITED(status) ? (uint32_t)WEXITSTATUS(status)
                                           : WIFSIGNALED(status) ? 128u + (uint32_t)WTERMSIG(status) : 255u;
        p->exited_at = now_unix_nano();
        p->oom_kill = c->has_cgroup ? cgroup_read_oom_kill(c->cgroup_dir) : 0;
        LOG_INFO("%s: process %d exited with status %u", proc_name(p), (int)pid, p->exit_status);
        hold_clear(p, "the process exited");
        stream_destroy(p->in);
        p->in = NULL;
        close_fd_at(&p->start_fd);
        close_fd_at(&p->console_fd);
        close_fd_at(&p->pty_fd);
        if (p->exec_id) {
            if (p->removing)
                finish_remove_process(p);
            else
                answer_waits(p);
            continue;
        }
        if (c->removing) {
            finish_remove(c);
            continue;
        }
        answer_waits(p);
    }
}

void container_kill_all(void)
{
    for (struct container *c = g_containers; c; c = c->next) {
        if (!c->init.exited && c->init.pid > 0)
            kill(c->init.pid, SIGKILL);
        for (struct process *e = c->execs; e; e = e->next)
            if (!e->exited && e->pid > 0)
                kill(e->pid, SIGKILL);
    }
}

/* ---------------------------------------------------------------- cgroup RPCs */

/* The container a cgroup RPC names, with a cgroup; answers the error and returns NULL else. */
static struct container *cgroup_target(uint64_t gen, uint32_t sid, const char *id, const char *what)
{
    struct container *c = find_container(id);
    if (!c) {
        agent_respond_error(gen, sid, RPC_NOT_FOUND, "container \"%.200s\" not found", id ? id : "");
        return NULL;
    }
    if (!c->has_cgroup) {
        agent_respond_error(gen, sid, RPC_FAILED_PRECONDITION, "container \"%s\": %s: the guest has no cgroup v2", c->id,
                            what);
        return NULL;
    }
    return c;
}

void container_update(uint64_t gen, uint32_t sid, struct update_container_request *req)
{
    struct container *c = cgroup_target(gen, sid, req->container_id, "update resources");
    if (!c)
        return;
    if (c->removing || c->init.exited) {
        agent_respond_error(gen, sid, RPC_FAILED_PRECONDITION, "container \"%s\" is stopped: cannot update its resources",
                            c->id);
        return;
    }
    struct cgroup_plan plan;
    char err[600];
    int code = cgroup_plan_resources(&req->resources, &c->resources, &plan, err, sizeof err);
    if (code == RPC_OK)
        code = cgroup_apply(c->cgroup_dir, &plan, err, sizeof err);
    if (code != RPC_OK) {
        agent_respond_error(gen, sid, code, "container \"%s\": update: %s", c->id, err);
        return;
    }
    if (cgroup_resources_merge(&c->resources, &req->resources) < 0)
        LOG_WARN("container %s: out of memory remembering its resources", c->id);
    LOG_INFO("container %s: %zu cgroup value(s) updated", c->id, plan.n);
    agent_respond(gen, sid, WQ_CONTROL, RPC_OK, NULL, NULL);
}

void container_stats(uint64_t gen, uint32_t sid, const struct process_target *t)
{
    struct container *c = cgroup_target(gen, sid, t->container_id, "stats");
    if (!c)
        return;
    static struct container_stats st;
    if (cgroup_read_stats(c->cgroup_dir, &st) < 0) {
        agent_respond_error(gen, sid, RPC_INTERNAL, "container \"%s\": read cgroup %s: %s", c->id, c->cgroup_dir,
                            strerror(errno));
        return;
    }
    pb_writer w;
    pb_writer_init(&w);
    agent_encode_stats_response(&w, &st);
    agent_respond(gen, sid, WQ_CONTROL, RPC_OK, NULL, &w);
    pb_writer_free(&w);
}

void container_watch_oom(uint64_t gen, uint32_t sid, const struct watch_oom_request *req)
{
    struct container *c = cgroup_target(gen, sid, req->container_id, "watch OOM kills");
    if (!c)
        return;
    struct oom_waiter *w = calloc(1, sizeof *w);
    if (!w) {
        agent_respond_error(gen, sid, RPC_INTERNAL, "container \"%s\": out of memory", c->id);
        return;
    }
    w->gen = gen;
    w->stream_id = sid;
    w->seen = req->seen;
    w->next = c->oom_waiters;
    c->oom_waiters = w;
    /* Already past `seen`: answered at once (and waiters of a gone connection are dropped). */
    answer_oom_waiters(c, cgroup_read_oom_kill(c->cgroup_dir), false);
}

void container_on_cgroup_events(void)
{
    if (!cgroups_events_drain())
        return;
    for (struct container *c = g_containers; c; c = c->next)
        if (c->has_cgroup && c->oom_waiters)
            answer_oom_waiters(c, cgroup_read_oom_kill(c->cgroup_dir), false);
}
