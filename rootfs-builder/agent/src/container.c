#include "container.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroups.h"
#include "child.h"
#include "event_loop.h"
#include "fsutil.h"
#include "log.h"
#include "mounts.h"
#include "rootfs.h"
#include "rpc_status.h"
#include "security.h"

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
    bool removing; /* RemoveContainer killed it: forget it when its init is reaped */
    /* Its cgroup (protocol 1.3); has_cgroup false when the guest has no cgroup2. */
    bool has_cgroup;
    char cgroup_dir[300];
    int cgroup_fd; /* its directory (clone3 CLONE_INTO_CGROUP), or -1 */
    struct agent_resources resources; /* as applied so far (Update merges into it) */
    int oom_wd;                       /* inotify watch of memory.events, or -1 */
};

static struct container *g_containers;
static struct container_events g_events;

/* Cgroups of removed containers whose processes were still exiting: removed later. */
#define MAX_STALE_CGROUPS 64
static char *g_stale_cgroups[MAX_STALE_CGROUPS];

static void container_destroy(struct container *c);
static void exec_destroy(struct process *p);

/* ---------------------------------------------------------------- events */

/* A failed Create/Exec leaves nothing: the child is killed and reaped, an exec is forgotten,
 * an init takes its container (unmounted) with it. */
static void destroy_failed_process(struct process *p)
{
    process_kill_and_reap(p);
    if (p->exec_id)
        exec_destroy(p);
    else
        container_destroy(p->container);
}

static void on_setup_done(struct process *p, int32_t code, const char *message)
{
    g_events.setup_done(g_events.ctx, p, code, message);
    if (code != RPC_OK)
        destroy_failed_process(p);
}

static void on_start_done(struct process *p, int32_t code, const char *message)
{
    g_events.start_done(g_events.ctx, p, code, message);
}

static void on_finished(struct process *p)
{
    g_events.finished(g_events.ctx, p);
}

static const struct process_events process_events = { on_setup_done, on_start_done, on_finished };

static void on_cgroup_events(void *unused, uint32_t events)
{
    if (cgroups_events_drain())
        g_events.oom_events(g_events.ctx);
}

static struct watch w_cgroup_events = { on_cgroup_events, NULL };

void containers_init(const struct container_events *events, struct stream_set *streams)
{
    g_events = *events;
    process_layer_init(&process_events, streams);
    if (cgroups_events_fd() >= 0)
        watch_add(cgroups_events_fd(), EPOLLIN, &w_cgroup_events);
}

/* ---------------------------------------------------------------- lookups */

static struct container *find_container(const char *id)
{
    if (!id)
        return NULL;
    for (struct container *c = g_containers; c; c = c->next)
        if (strcmp(c->id, id) == 0)
            return c;
    return NULL;
}

static struct process *find_exec(const struct container *c, const char *exec_id)
{
    for (struct process *p = c->execs; p; p = p->next)
        if (strcmp(p->exec_id, exec_id) == 0)
            return p;
    return NULL;
}

int container_find(const char *id, struct container **out, char *err, size_t errcap)
{
    *out = find_container(id);
    if (*out)
        return RPC_OK;
    snprintf(err, errcap, "container \"%.200s\" not found", id ? id : "");
    return RPC_NOT_FOUND;
}

int container_find_process(const char *container_id, const char *exec_id, struct container **out_c,
                           struct process **out_p, char *err, size_t errcap)
{
    struct container *c;
    int code = container_find(container_id, &c, err, errcap);
    if (code != RPC_OK)
        return code;
    struct process *p = &c->init;
    if (exec_id && exec_id[0] && !(p = find_exec(c, exec_id))) {
        snprintf(err, errcap, "container \"%s\": exec \"%.200s\" not found", c->id, exec_id);
        return RPC_NOT_FOUND;
    }
    if (out_c)
        *out_c = c;
    *out_p = p;
    return RPC_OK;
}

int container_find_with_cgroup(const char *id, const char *what, struct container **out, char *err, size_t errcap)
{
    int code = container_find(id, out, err, errcap);
    if (code != RPC_OK)
        return code;
    if (!(*out)->has_cgroup) {
        snprintf(err, errcap, "container \"%s\": %s: the guest has no cgroup v2", (*out)->id, what);
        return RPC_FAILED_PRECONDITION;
    }
    return RPC_OK;
}

const char *container_id(const struct container *c)
{
    return c->id;
}

struct container *container_first(void)
{
    return g_containers;
}

struct container *container_next(const struct container *c)
{
    return c->next;
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

/* The container goes: its cgroup is killed and removed (later, if its processes are still
 * exiting). Returns its last oom_kill count, for the WatchOom callers. */
static uint64_t container_release_cgroup(struct container *c)
{
    uint64_t oom_kill = c->has_cgroup ? cgroup_read_oom_kill(c->cgroup_dir) : 0;
    agent_resources_free(&c->resources);
    if (!c->has_cgroup)
        return oom_kill;
    cgroup_unwatch_events(c->oom_wd);
    c->oom_wd = -1;
    close_fd_at(&c->cgroup_fd);
    c->has_cgroup = false;
    if (cgroup_destroy(c->cgroup_dir) == 0)
        return oom_kill;
    for (size_t i = 0; i < MAX_STALE_CGROUPS; i++) {
        if (!g_stale_cgroups[i]) {
            g_stale_cgroups[i] = strdup(c->cgroup_dir);
            return oom_kill;
        }
    }
    LOG_WARN("cgroup %s stays: too many removals pending", c->cgroup_dir);
    return oom_kill;
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

int container_update(struct container *c, const struct agent_resources *resources, char *err, size_t errcap)
{
    if (c->removing || c->init.exited) {
        snprintf(err, errcap, "container \"%s\" is stopped: cannot update its resources", c->id);
        return RPC_FAILED_PRECONDITION;
    }
    struct cgroup_plan plan;
    char why[600];
    int code = cgroup_plan_resources(resources, &c->resources, &plan, why, sizeof why);
    if (code == RPC_OK)
        code = cgroup_apply(c->cgroup_dir, &plan, why, sizeof why);
    if (code != RPC_OK) {
        snprintf(err, errcap, "container \"%s\": update: %s", c->id, why);
        return code;
    }
    if (cgroup_resources_merge(&c->resources, resources) < 0)
        LOG_WARN("container %s: out of memory remembering its resources", c->id);
    LOG_INFO("container %s: %zu cgroup value(s) updated", c->id, plan.n);
    return RPC_OK;
}

int container_stats(struct container *c, struct container_stats *st, char *err, size_t errcap)
{
    if (cgroup_read_stats(c->cgroup_dir, st) < 0) {
        snprintf(err, errcap, "container \"%s\": read cgroup %s: %s", c->id, c->cgroup_dir, strerror(errno));
        return RPC_INTERNAL;
    }
    return RPC_OK;
}

uint64_t container_oom_kill(const struct container *c)
{
    return c->has_cgroup ? cgroup_read_oom_kill(c->cgroup_dir) : 0;
}

bool container_has_cgroup(const struct container *c)
{
    return c->has_cgroup;
}

/* ---------------------------------------------------------------- forgetting */

/* The process goes: what the agent holds for it is let go of (the process killed if it still
 * runs), then whoever waits for it learns it. */
static void release_process(struct process *p, const char *why)
{
    char msg[600];
    snprintf(msg, sizeof msg, "%s %s", process_name(p), why);
    process_release(p, why);
    g_events.released(g_events.ctx, p, msg);
}

/* Forgets an exec: it must be dead or dying (process_release kills it). */
static void exec_destroy(struct process *p)
{
    struct container *c = p->container;
    release_process(p, "was removed");
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
    release_process(&c->init, "was removed");
    while (c->execs)
        exec_destroy(c->execs);
    rootfs_unmount(&c->fs);
    uint64_t oom_kill = container_release_cgroup(c);
    seccomp_program_free(&c->seccomp);
    for (struct container **pp = &g_containers; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    g_events.gone(g_events.ctx, c, oom_kill);
    free(c->id);
    c->id = NULL;
    defer_free(c);
}

/* ---------------------------------------------------------------- create, exec */

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
    return process_validate_stdio(who, &req->stdio, req->process.terminal, msg, sizeof msg);
}

int container_create(const struct create_container_request *req, struct process **init, char *errout, size_t errcap)
{
    int code;
    TIMING_BEGIN();
    const char *invalid = validate_create(req, &code);
    if (invalid) {
        snprintf(errout, errcap, "%s", invalid);
        return code;
    }
    struct container *c = calloc(1, sizeof *c);
    if (!c || !(c->id = strdup(req->container_id))) {
        free(c);
        snprintf(errout, errcap, "container \"%s\": out of memory", req->container_id);
        return RPC_INTERNAL;
    }
    rootfs_init_paths(&c->fs, c->id);
    c->cgroup_fd = -1;
    c->oom_wd = -1;
    struct process *p = &c->init;
    process_init(p, c, c->id, req->process.terminal);
    c->next = g_containers;
    g_containers = c;

    char err[600];
    TIMING_MARK("validate");
    if (req->has_linux && req->linux_sec.has_seccomp &&
        seccomp_compile(&req->linux_sec.seccomp, &c->seccomp, err, sizeof err) < 0) {
        snprintf(errout, errcap, "container \"%s\": %s", c->id, err);
        container_destroy(c);
        return RPC_INVALID_ARGUMENT;
    }
    TIMING_MARK("seccomp");
    if ((code = container_setup_cgroup(c, req, err, sizeof err)) != RPC_OK) {
        snprintf(errout, errcap, "container \"%s\": %s", c->id, err);
        container_destroy(c);
        return code;
    }
    TIMING_MARK("open_procs");
    if (rootfs_mount(&c->fs, req, &code, err, sizeof err) < 0 ||
        (code = mounts_write_files(req, c->fs.files_dir, err, sizeof err)) != RPC_OK ||
        (code = mounts_prepare_share(req, err, sizeof err)) != RPC_OK) {
        snprintf(errout, errcap, "container \"%s\": %s", c->id, err);
        container_destroy(c);
        return code;
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
    code = process_spawn(p, &ctx, &req->stdio, CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC, -1, errout,
                         errcap);
    if (code != RPC_OK) {
        container_destroy(c);
        return code;
    }
    TIMING_MARK("agent_done");
    LOG_INFO("container %s: init process %d created", c->id, (int)p->pid);
    *init = p;
    return RPC_OK;
}

int container_exec(const struct exec_process_request *req, struct process **out, char *err, size_t errcap)
{
    struct container *c;
    int code = container_find(req->container_id, &c, err, errcap);
    if (code != RPC_OK)
        return code;
    const char *eid = req->exec_id ? req->exec_id : "";
    if (!valid_container_id(eid)) {
        snprintf(err, errcap, "container \"%s\": invalid exec id \"%.200s\": want 1-128 of [A-Za-z0-9_.-]", c->id,
                 eid);
        return RPC_INVALID_ARGUMENT;
    }
    if (find_exec(c, eid)) {
        snprintf(err, errcap, "container \"%s\": exec \"%s\" already exists", c->id, eid);
        return RPC_ALREADY_EXISTS;
    }
    if (c->removing || c->init.exited || c->init.pid <= 0 || c->init.state == PROC_CREATING) {
        snprintf(err, errcap, "container \"%s\" is %s: cannot exec \"%s\" in it", c->id,
                 c->init.exited || c->removing ? "stopped" : "not created yet", eid);
        return RPC_FAILED_PRECONDITION;
    }
    if (c->nexecs >= MAX_EXECS_PER_CONTAINER) {
        snprintf(err, errcap, "container \"%s\": already %d execs; remove some first", c->id,
                 MAX_EXECS_PER_CONTAINER);
        return RPC_RESOURCE_EXHAUSTED;
    }
    char who[400], msg[600];
    snprintf(who, sizeof who, "container \"%s\" exec \"%s\"", c->id, eid);
    if (!req->has_process || req->process.nargs == 0 || req->process.args[0][0] == 0) {
        snprintf(err, errcap, "%s: process args must not be empty", who);
        return RPC_INVALID_ARGUMENT;
    }
    if (process_validate_stdio(who, &req->stdio, req->process.terminal, msg, sizeof msg)) {
        snprintf(err, errcap, "%s", msg);
        return RPC_INVALID_ARGUMENT;
    }
    struct cap_masks caps;
    char cap_err[300];
    if (req->process.has_caps && caps_resolve(&req->process.caps, &caps, cap_err, sizeof cap_err) < 0) {
        snprintf(err, errcap, "%s: %s", who, cap_err);
        return RPC_INVALID_ARGUMENT;
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
            snprintf(err, errcap, "%s: open %s: %s (is the container stopping?)", who, path, strerror(e));
            for (int j = 0; j < i; j++)
                close(ns[j]);
            return e == ENOENT || e == ESRCH ? RPC_FAILED_PRECONDITION : RPC_INTERNAL;
        }
    }
    struct process *p = calloc(1, sizeof *p);
    if (!p || !(p->exec_id = strdup(eid))) {
        free(p);
        for (int i = 0; i < 4; i++)
            close(ns[i]);
        snprintf(err, errcap, "%s: out of memory", who);
        return RPC_INTERNAL;
    }
    process_init(p, c, c->id, req->process.terminal);
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
    if (c->has_cgroup && cgroupns < 0) {
        snprintf(err, errcap, "%s: open the container's cgroup: %s", who, strerror(errno));
        code = RPC_INTERNAL;
    } else {
        code = process_spawn(p, &ctx, &req->stdio, 0, ns[0], err, errcap);
    }
    for (int i = 0; i < 4; i++)
        close(ns[i]);
    if (cgroupns >= 0)
        close(cgroupns);
    if (code != RPC_OK) {
        exec_destroy(p);
        return code;
    }
    LOG_INFO("%s: process %d created", who, (int)p->pid);
    *out = p;
    return RPC_OK;
}

/* ---------------------------------------------------------------- signals, processes */

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

/* Pids of the processes in the container's pid namespace, as seen from the guest root. */
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

int container_signal(struct container *c, struct process *p, uint32_t sig, bool all, char *err, size_t errcap)
{
    if (sig == 0 || sig >= NSIG) {
        snprintf(err, errcap, "%s: invalid signal %u", process_name(p), sig);
        return RPC_INVALID_ARGUMENT;
    }
    if (p->exited || p->pid <= 0) {
        snprintf(err, errcap, "%s: process already finished", process_name(p));
        return RPC_NOT_FOUND;
    }
    if (all) {
        /* Every process of the container: its pid namespace holds the init, the execs and
         * everything they started. */
        static pid_t pids[4096];
        size_t n = container_pids(c, pids, sizeof pids / sizeof pids[0]);
        for (size_t i = 0; i < n; i++)
            if (pids[i] != c->init.pid || !process_hold_signal(&c->init, (int)sig))
                kill(pids[i], (int)sig);
    } else if (!p->exec_id && process_hold_signal(p, (int)sig)) {
        /* Held (signal_hold.h): reported sent, as a kill(2) the kernel accepted. */
    } else if (kill(p->pid, (int)sig) < 0) {
        int e = errno;
        snprintf(err, errcap, "%s: kill %d: %s", process_name(p), (int)p->pid, strerror(e));
        return e == ESRCH ? RPC_NOT_FOUND : RPC_INTERNAL;
    }
    return RPC_OK;
}

size_t container_list(struct container *c, uint32_t *pids, const char **exec_ids, size_t cap)
{
    static pid_t found[4096];
    size_t n = container_pids(c, found, cap < 4096 ? cap : 4096);
    for (size_t i = 0; i < n; i++) {
        pids[i] = (uint32_t)found[i];
        exec_ids[i] = "";
        for (struct process *e = c->execs; e; e = e->next)
            if (!e->exited && e->pid == found[i])
                exec_ids[i] = e->exec_id;
    }
    return n;
}

/* ---------------------------------------------------------------- removal, reaping */

/* Tells whoever waits that the process is finished, if it is. */
static void report_if_finished(struct process *p)
{
    if (process_finished(p))
        g_events.finished(g_events.ctx, p);
}

/* The process is reaped: output still stuck behind missing credit ends here, so that
 * WaitProcess callers get the exit status rather than "removed". */
static void flush_exited(struct process *p)
{
    if (!p->exited)
        return;
    process_drop_output(p);
    report_if_finished(p);
}

static void finish_remove(struct container *c)
{
    flush_exited(&c->init);
    for (struct process *e = c->execs; e; e = e->next)
        flush_exited(e);
    LOG_INFO("container %s removed", c->id);
    container_destroy(c);
}

void container_remove(struct container *c)
{
    if (c->init.exited || c->init.pid <= 0) {
        finish_remove(c);
        return;
    }
    /* Killing a pid namespace's init kills all of it; done once it is reaped. */
    c->removing = true;
    kill(c->init.pid, SIGKILL);
}

static void finish_remove_process(struct process *p)
{
    flush_exited(p);
    LOG_INFO("%s removed", process_name(p));
    exec_destroy(p);
}

void container_remove_process(struct process *p)
{
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
        process_exited(p, status, c->has_cgroup ? cgroup_read_oom_kill(c->cgroup_dir) : 0);
        if (p->exec_id) {
            if (p->removing)
                finish_remove_process(p);
            else
                report_if_finished(p);
            continue;
        }
        if (c->removing) {
            finish_remove(c);
            continue;
        }
        report_if_finished(p);
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
