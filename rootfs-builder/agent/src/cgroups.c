#include "cgroups.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "log.h"
#include "rpc_status.h"

#define SYSFS_MAGIC_VALUE 0x62656572
#define MAX_CPU_SHARES 262144u
#define MIN_CPU_SHARES 2u
#define STAT_FILE_MAX 16384

static const char *const g_controllers[] = { "cpu", "memory", "pids", "cpuset", "io" };
static bool g_available;
static int g_inotify_fd = -1;

/* A cgroup made at boot for the next container: a cgroup's mkdir (a css per controller and
 * their interface files) is among the slowest steps of a create, and a VM restored from a
 * template snapshot finds it made. Its name cannot be a container id ('@' is not allowed in
 * ids); inside the container it is the root of its cgroup namespace, as any other. */
#define CGROUP_SPARE CGROUP_PARENT "/@prepared"
static struct {
    bool ready;
    int fd; /* the directory, for clone3(CLONE_INTO_CGROUP) */
    int wd; /* inotify watch of its memory.events, or -1 */
} g_spare = { false, -1, -1 };

/* ---------------------------------------------------------------- planning (pure) */

uint64_t cgroup_cpu_weight(uint64_t shares)
{
    if (shares == 0)
        return 0;
    return 1 + ((shares - 2) * 9999) / 262142;
}

static void plan_add(struct cgroup_plan *plan, const char *file, const char *value)
{
    if (plan->n >= CGROUP_MAX_WRITES)
        return; /* cannot happen: at most 8 writes are planned */
    plan->w[plan->n].file = file;
    snprintf(plan->w[plan->n].value, sizeof plan->w[plan->n].value, "%s", value);
    plan->n++;
}

/* runc's numToStr: -1 is "max", 0 is "not set" (NULL), else the number. */
static const char *num_to_str(int64_t v, char *buf, size_t cap)
{
    if (v == 0)
        return NULL;
    if (v == -1)
        return "max";
    snprintf(buf, cap, "%" PRId64, v);
    return buf;
}

static bool valid_cpuset(const char *s)
{
    if (strlen(s) > 200)
        return false;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p) && *p != ',' && *p != '-')
            return false;
    return true;
}

int cgroup_plan_resources(const struct agent_resources *u, const struct agent_resources *current,
                          struct cgroup_plan *plan, char *err, size_t errcap)
{
    memset(plan, 0, sizeof *plan);
    char buf[32];
    const char *v;
    /* pids first, then memory, cpu and cpuset: runc's order. */
    if (u->has_pids_limit && u->pids_limit != 0) {
        if (u->pids_limit > 0) {
            snprintf(buf, sizeof buf, "%" PRId64, u->pids_limit);
            plan_add(plan, "pids.max", buf);
        } else {
            plan_add(plan, "pids.max", "max");
        }
    }
    static const struct { const char *name; size_t off; } mem_fields[] = {
        { "memory.limit", offsetof(struct agent_resources, memory_limit) },
        { "memory.reservation", offsetof(struct agent_resources, memory_reservation) },
        { "memory.swap", offsetof(struct agent_resources, memory_swap) },
    };
    const bool has_mem[3] = { u->has_memory_limit, u->has_memory_reservation, u->has_memory_swap };
    for (int i = 0; i < 3; i++) {
        int64_t val = *(const int64_t *)((const char *)u + mem_fields[i].off);
        if (has_mem[i] && val < -1) {
            snprintf(err, errcap, "linux.resources.%s: %" PRId64 " is not a valid value (bytes, or -1 for unlimited)",
                     mem_fields[i].name, val);
            return RPC_INVALID_ARGUMENT;
        }
    }
    /* memory.swap counts memory + swap (cgroup v1's memsw): v2 limits swap alone. */
    int64_t memory = u->has_memory_limit ? u->memory_limit
                     : current && current->has_memory_limit ? current->memory_limit
                                                             : 0;
    int64_t swap_in = u->has_memory_swap ? u->memory_swap : 0;
    if (u->has_memory_limit && u->memory_limit == -1 && swap_in == 0) {
        /* Unlimited memory and no swap value: both unlimited, as runc does. */
        plan_add(plan, "memory.swap.max", "max");
    } else if (swap_in == -1) {
        plan_add(plan, "memory.swap.max", "max");
    } else if (swap_in > 0) {
        if (memory == 0 || memory == -1) {
            snprintf(err, errcap, "linux.resources.memory.swap: %" PRId64 " needs a memory limit (memory.limit) too",
                     swap_in);
            return RPC_INVALID_ARGUMENT;
        }
        if (swap_in < memory) {
            snprintf(err, errcap,
                     "linux.resources.memory.swap: %" PRId64 " is less than memory.limit %" PRId64
                     " (swap counts memory + swap, so it must be >= the limit)",
                     swap_in, memory);
            return RPC_INVALID_ARGUMENT;
        }
        snprintf(buf, sizeof buf, "%" PRId64, swap_in - memory);
        plan_add(plan, "memory.swap.max", buf);
    }
    if (u->has_memory_limit && (v = num_to_str(u->memory_limit, buf, sizeof buf)))
        plan_add(plan, "memory.max", v);
    if (u->has_memory_reservation && (v = num_to_str(u->memory_reservation, buf, sizeof buf)))
        plan_add(plan, "memory.low", v);

    if (u->has_cpu_shares && u->cpu_shares != 0) {
        if (u->cpu_shares < MIN_CPU_SHARES || u->cpu_shares > MAX_CPU_SHARES) {
            snprintf(err, errcap, "linux.resources.cpu.shares: %" PRIu64 " is out of range (%u-%u)", u->cpu_shares,
                     MIN_CPU_SHARES, MAX_CPU_SHARES);
            return RPC_INVALID_ARGUMENT;
        }
        snprintf(buf, sizeof buf, "%" PRIu64, cgroup_cpu_weight(u->cpu_shares));
        plan_add(plan, "cpu.weight", buf);
    }
    int64_t quota = u->has_cpu_quota ? u->cpu_quota : 0;
    uint64_t period = u->has_cpu_period ? u->cpu_period : 0;
    if (quota != 0 || period != 0) {
        char max[64];
        int n = quota > 0 ? snprintf(max, sizeof max, "%" PRId64, quota) : snprintf(max, sizeof max, "max");
        if (period != 0)
            snprintf(max + n, sizeof max - (size_t)n, " %" PRIu64, period);
        plan_add(plan, "cpu.max", max);
    }
    const char *sets[2] = { u->cpuset_cpus, u->cpuset_mems };
    static const char *const set_files[2] = { "cpuset.cpus", "cpuset.mems" };
    for (int i = 0; i < 2; i++) {
        if (!sets[i] || !sets[i][0])
            continue;
        if (!valid_cpuset(sets[i])) {
            snprintf(err, errcap, "linux.resources.cpu.%s: \"%.64s\" is not a list like \"0-2,4\"", i ? "mems" : "cpus",
                     sets[i]);
            return RPC_INVALID_ARGUMENT;
        }
        plan_add(plan, set_files[i], sets[i]);
    }
    return RPC_OK;
}

static int dup_field(char **into, const char *from)
{
    if (!from)
        return 0;
    char *copy = strdup(from);
    if (!copy)
        return -1;
    free(*into);
    *into = copy;
    return 0;
}

int cgroup_resources_merge(struct agent_resources *into, const struct agent_resources *u)
{
#define MERGE(f)                  \
    if (u->has_##f) {             \
        into->has_##f = true;     \
        into->f = u->f;           \
    }
    MERGE(memory_limit)
    MERGE(memory_reservation)
    MERGE(memory_swap)
    MERGE(cpu_shares)
    MERGE(cpu_quota)
    MERGE(cpu_period)
    MERGE(pids_limit)
#undef MERGE
    if (dup_field(&into->cpuset_cpus, u->cpuset_cpus) < 0 || dup_field(&into->cpuset_mems, u->cpuset_mems) < 0)
        return -1;
    return 0;
}

/* ---------------------------------------------------------------- parsing (pure) */

int cgroup_parse_value(const char *text, uint64_t *out)
{
    while (*text == ' ')
        text++;
    if (strncmp(text, "max", 3) == 0 && (text[3] == 0 || text[3] == '\n' || text[3] == ' ')) {
        *out = UINT64_MAX;
        return 0;
    }
    if (!isdigit((unsigned char)*text))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || (*end && *end != '\n' && *end != ' '))
        return -1;
    *out = v;
    return 0;
}

size_t cgroup_parse_flat(const char *text, struct cgroup_counter *out, size_t cap)
{
    size_t n = 0;
    const char *line = text;
    while (*line && n < cap) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        const char *space = memchr(line, ' ', len);
        if (space && space > line && (size_t)(space - line) < sizeof out[n].name) {
            char value[32];
            size_t vlen = len - (size_t)(space + 1 - line);
            if (vlen > 0 && vlen < sizeof value) {
                memcpy(value, space + 1, vlen);
                value[vlen] = 0;
                uint64_t v;
                if (cgroup_parse_value(value, &v) == 0) {
                    memcpy(out[n].name, line, (size_t)(space - line));
                    out[n].name[space - line] = 0;
                    out[n].value = v;
                    n++;
                }
            }
        }
        if (!eol)
            break;
        line = eol + 1;
    }
    return n;
}

size_t cgroup_parse_io_stat(const char *text, struct io_device_stat *out, size_t cap)
{
    size_t n = 0;
    const char *line = text;
    while (*line && n < cap) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        char buf[512];
        if (len < sizeof buf) {
            memcpy(buf, line, len);
            buf[len] = 0;
            unsigned maj, min;
            int used = 0;
            if (sscanf(buf, "%u:%u%n", &maj, &min, &used) == 2) {
                struct io_device_stat d = { .major = maj, .minor = min };
                char *save = NULL;
                for (char *tok = strtok_r(buf + used, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
                    char *eq = strchr(tok, '=');
                    uint64_t v;
                    if (!eq || cgroup_parse_value(eq + 1, &v) < 0)
                        continue;
                    *eq = 0;
                    if (strcmp(tok, "rbytes") == 0)
                        d.rbytes = v;
                    else if (strcmp(tok, "wbytes") == 0)
                        d.wbytes = v;
                    else if (strcmp(tok, "rios") == 0)
                        d.rios = v;
                    else if (strcmp(tok, "wios") == 0)
                        d.wios = v;
                }
                out[n++] = d;
            }
        }
        if (!eol)
            break;
        line = eol + 1;
    }
    return n;
}

/* ---------------------------------------------------------------- files */

/* Reads dir/file into buf (NUL-terminated). Bytes read, or -1 with errno. */
static ssize_t read_file(const char *dir, const char *file, char *buf, size_t cap)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got + 1 < cap) {
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = 0;
    return (ssize_t)got;
}

/* 0, or -1 with errno. */
static int write_file(const char *dir, const char *file, const char *value)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = strlen(value);
    ssize_t n;
    do
        n = write(fd, value, len);
    while (n < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    if (n != (ssize_t)len) {
        errno = n < 0 ? e : EIO;
        return -1;
    }
    return 0;
}

static uint64_t read_value(const char *dir, const char *file, uint64_t missing)
{
    char buf[64];
    uint64_t v;
    if (read_file(dir, file, buf, sizeof buf) < 0 || cgroup_parse_value(buf, &v) < 0)
        return missing;
    return v;
}

static void enable_controllers(const char *dir)
{
    char available[256];
    if (read_file(dir, "cgroup.controllers", available, sizeof available) < 0) {
        LOG_WARN("cgroups: read %s/cgroup.controllers: %s", dir, strerror(errno));
        return;
    }
    for (size_t i = 0; i < sizeof g_controllers / sizeof g_controllers[0]; i++) {
        char token[32];
        snprintf(token, sizeof token, "+%s", g_controllers[i]);
        if (write_file(dir, "cgroup.subtree_control", token) < 0)
            LOG_INFO("cgroups: controller %s not enabled in %s: %s (available: %s)", g_controllers[i], dir,
                     strerror(errno), available);
    }
}

static void spare_prepare(void)
{
    if (mkdir(CGROUP_SPARE, 0755) < 0) {
        LOG_WARN("cgroups: mkdir %s: %s (each container makes its own)", CGROUP_SPARE, strerror(errno));
        return;
    }
    g_spare.fd = open(CGROUP_SPARE, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (g_spare.fd < 0) {
        LOG_WARN("cgroups: open %s: %s (each container makes its own)", CGROUP_SPARE, strerror(errno));
        rmdir(CGROUP_SPARE);
        return;
    }
    g_spare.wd = cgroup_watch_events(CGROUP_SPARE);
    g_spare.ready = true;
}

void cgroups_init(void)
{
    struct statfs sfs;
    if (statfs(CGROUP_MOUNT, &sfs) < 0 || (uint32_t)sfs.f_type != 0x63677270u /* CGROUP2_SUPER_MAGIC */) {
        LOG_WARN("cgroups: no cgroup2 at %s: containers run without resource limits or stats", CGROUP_MOUNT);
        return;
    }
    enable_controllers(CGROUP_MOUNT);
    if (mkdir(CGROUP_PARENT, 0755) < 0 && errno != EEXIST) {
        LOG_WARN("cgroups: mkdir %s: %s", CGROUP_PARENT, strerror(errno));
        return;
    }
    enable_controllers(CGROUP_PARENT);
    g_inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (g_inotify_fd < 0)
        LOG_WARN("cgroups: inotify: %s (OOM kills are reported at exit only)", strerror(errno));
    g_available = true;
    spare_prepare();
}

bool cgroups_available(void)
{
    return g_available;
}

static bool remove_tree(const char *dir, int depth)
{
    if (depth > 16)
        return false;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_type != DT_DIR || strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char sub[1024];
            int n = snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
            if (n > 0 && (size_t)n < sizeof sub)
                remove_tree(sub, depth + 1);
        }
        closedir(d);
    }
    return rmdir(dir) == 0 || errno == ENOENT;
}

int cgroup_destroy(const char *dir)
{
    /* Kills every process left in it and its sub-cgroups (kernel >= 5.14); their exit is
     * asynchronous, so the directory may stay busy for a moment. */
    if (write_file(dir, "cgroup.kill", "1") < 0 && errno != ENOENT)
        LOG_DEBUG("cgroups: %s/cgroup.kill: %s", dir, strerror(errno));
    return remove_tree(dir, 0) ? 0 : -1;
}

/* Hands the boot-time cgroup over (once). 0, or -1 when there is none (left). */
static int take_spare(char *dir, size_t dircap, int *fd, int *wd)
{
    if (!g_spare.ready || (size_t)snprintf(dir, dircap, "%s", CGROUP_SPARE) >= dircap)
        return -1;
    *fd = g_spare.fd;
    *wd = g_spare.wd;
    g_spare.ready = false;
    g_spare.fd = g_spare.wd = -1;
    return 0;
}

static int make_cgroup(const char *id, char *dir, size_t dircap, char *err, size_t errcap)
{
    int n = snprintf(dir, dircap, "%s/%s", CGROUP_PARENT, id);
    if (n < 0 || (size_t)n >= dircap) {
        snprintf(err, errcap, "cgroup path for \"%.64s\" is too long", id);
        return RPC_INVALID_ARGUMENT;
    }
    if (mkdir(dir, 0755) == 0)
        return RPC_OK;
    if (errno == EEXIST && cgroup_destroy(dir) == 0 && mkdir(dir, 0755) == 0)
        return RPC_OK; /* an earlier container of that id left it (removal was still pending) */
    int e = errno;
    snprintf(err, errcap, "mkdir cgroup %s: %s", dir, strerror(e));
    return e == EEXIST || e == EBUSY ? RPC_FAILED_PRECONDITION : RPC_INTERNAL;
}

int cgroup_create(const char *id, char *dir, size_t dircap, int *fd, int *wd, char *err, size_t errcap)
{
    *fd = *wd = -1;
    if (take_spare(dir, dircap, fd, wd) == 0)
        return RPC_OK;
    int code = make_cgroup(id, dir, dircap, err, errcap);
    if (code != RPC_OK)
        return code;
    *fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0) {
        snprintf(err, errcap, "open cgroup %s: %s", dir, strerror(errno));
        rmdir(dir);
        return RPC_INTERNAL;
    }
    *wd = cgroup_watch_events(dir);
    return RPC_OK;
}

int cgroup_apply(const char *dir, const struct cgroup_plan *plan, char *err, size_t errcap)
{
    for (size_t i = 0; i < plan->n; i++) {
        const struct cgroup_write *w = &plan->w[i];
        if (write_file(dir, w->file, w->value) == 0)
            continue;
        int e = errno;
        /* Without swap in the guest kernel there is no memory.swap.max: "max" or "0" asks
         * for nothing it could not have (runc ignores those too). */
        if (e == ENOENT && strcmp(w->file, "memory.swap.max") == 0 &&
            (strcmp(w->value, "max") == 0 || strcmp(w->value, "0") == 0))
            continue;
        const char *hint = e == ENOENT ? " (the guest kernel has no such cgroup file)" : "";
        snprintf(err, errcap, "linux.resources: write \"%s\" to %s: %s%s", w->value, w->file, strerror(e), hint);
        return e == EINVAL || e == ERANGE || e == ENOENT || e == EOVERFLOW ? RPC_INVALID_ARGUMENT
               : e == EBUSY                                                  ? RPC_FAILED_PRECONDITION
                                                                             : RPC_INTERNAL;
    }
    return RPC_OK;
}

int cgroup_read_stats(const char *dir, struct container_stats *st)
{
    memset(st, 0, sizeof *st);
    static char buf[STAT_FILE_MAX];
    if (read_file(dir, "cgroup.procs", buf, sizeof buf) < 0)
        return -1;
    if (read_file(dir, "cpu.stat", buf, sizeof buf) >= 0)
        st->ncpu_stat = cgroup_parse_flat(buf, st->cpu_stat, sizeof st->cpu_stat / sizeof st->cpu_stat[0]);
    if (read_file(dir, "memory.stat", buf, sizeof buf) >= 0)
        st->nmemory_stat = cgroup_parse_flat(buf, st->memory_stat, STATS_MAX_COUNTERS);
    if (read_file(dir, "memory.events", buf, sizeof buf) >= 0)
        st->nmemory_events =
            cgroup_parse_flat(buf, st->memory_events, sizeof st->memory_events / sizeof st->memory_events[0]);
    if (read_file(dir, "io.stat", buf, sizeof buf) >= 0)
        st->nio = cgroup_parse_io_stat(buf, st->io, STATS_MAX_IO_DEVICES);
    st->memory_current = read_value(dir, "memory.current", 0);
    st->memory_max = read_value(dir, "memory.max", UINT64_MAX);
    st->memory_swap_current = read_value(dir, "memory.swap.current", 0);
    st->memory_swap_max = read_value(dir, "memory.swap.max", 0);
    st->memory_peak = read_value(dir, "memory.peak", 0);
    st->pids_current = read_value(dir, "pids.current", 0);
    st->pids_max = read_value(dir, "pids.max", UINT64_MAX);
    return 0;
}

uint64_t cgroup_read_oom_kill(const char *dir)
{
    char buf[512];
    if (read_file(dir, "memory.events", buf, sizeof buf) < 0)
        return 0;
    struct cgroup_counter c[16];
    size_t n = cgroup_parse_flat(buf, c, 16);
    for (size_t i = 0; i < n; i++)
        if (strcmp(c[i].name, "oom_kill") == 0)
            return c[i].value;
    return 0;
}

int cgroups_events_fd(void)
{
    return g_inotify_fd;
}

int cgroup_watch_events(const char *dir)
{
    if (g_inotify_fd < 0)
        return -1;
    char path[512];
    snprintf(path, sizeof path, "%s/memory.events", dir);
    int wd = inotify_add_watch(g_inotify_fd, path, IN_MODIFY);
    if (wd < 0)
        LOG_WARN("cgroups: watch %s: %s (OOM kills are reported at exit only)", path, strerror(errno));
    return wd;
}

void cgroup_unwatch_events(int wd)
{
    if (g_inotify_fd >= 0 && wd >= 0)
        inotify_rm_watch(g_inotify_fd, wd);
}

bool cgroups_events_drain(void)
{
    bool any = false;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(g_inotify_fd, buf, sizeof buf);
        if (n <= 0)
            return any;
        any = true;
    }
}

/* ---------------------------------------------------------------- the container's view */

int cgroup_mount_in_root(const struct create_container_request *req, char *err, size_t errcap)
{
    bool has_sys = !req->has_mounts; /* the agent's default mounts include a read-only /sys */
    bool sys_ro = true;
    for (size_t i = 0; i < req->nmounts; i++) {
        const struct agent_mount *m = &req->mounts[i];
        const char *d = m->destination;
        if (strncmp(d, "/sys/fs/cgroup", 14) == 0 && (d[14] == 0 || d[14] == '/'))
            return RPC_OK; /* the spec mounts something there itself */
        if (strcmp(d, "/sys") == 0 && m->type && strcmp(m->type, "sysfs") == 0) {
            has_sys = true;
            sys_ro = (m->flags & MS_RDONLY) != 0;
        }
    }
    if (!has_sys)
        return RPC_OK;
    /* Just mounted: a kernel directory of the new sysfs, nothing the image could redirect. */
    struct statfs sfs;
    if (statfs("sys/fs/cgroup", &sfs) < 0 || (uint32_t)sfs.f_type != SYSFS_MAGIC_VALUE)
        return RPC_OK;
    if (mount("cgroup", "sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
        snprintf(err, errcap, "mount the container's cgroup on /sys/fs/cgroup: %s", strerror(errno));
        return RPC_INTERNAL;
    }
    if (sys_ro && mount(NULL, "sys/fs/cgroup", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                        NULL) < 0) {
        snprintf(err, errcap, "make /sys/fs/cgroup read-only: %s", strerror(errno));
        return RPC_INTERNAL;
    }
    return RPC_OK;
}
