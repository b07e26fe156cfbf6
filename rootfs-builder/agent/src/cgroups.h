/* Per-container cgroups (v2) in the guest. At boot the agent (PID 1, in the root cgroup)
 * enables the controllers for CGROUP_PARENT and makes one cgroup ahead for the first
 * container; every other container gets CGROUP_PARENT/<id>. The container's init process and
 * every exec are born in it (clone3 CLONE_INTO_CGROUP) and it is the root of the container's
 * own cgroup namespace. linux.resources are applied as runc applies them on cgroup v2:
 *   memory.limit -> memory.max, memory.reservation -> memory.low,
 *   memory.swap  -> memory.swap.max = swap - limit (the spec counts memory + swap),
 *   cpu.shares   -> cpu.weight = 1 + ((shares - 2) * 9999) / 262142,
 *   cpu.quota/period -> cpu.max "<quota|max> [<period>]",
 *   cpuset.cpus/mems -> cpuset.cpus/mems, pids.limit -> pids.max;
 * -1 is "max", 0 / unset is not written (pids.limit <= 0 and cpu.quota <= 0 are "max").
 *
 * The planning and parsing functions are pure; the file functions take the cgroup directory,
 * so tests can point them at an ordinary directory. Functions returning int give 0 / an RPC
 * code (with err filled in) unless said otherwise. */
#ifndef SMOLVM_CGROUPS_H
#define SMOLVM_CGROUPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent_pb.h"

#define CGROUP_MOUNT "/sys/fs/cgroup"
#define CGROUP_PARENT CGROUP_MOUNT "/smolvm"
#define CGROUP_MAX_WRITES 10

/* One write of a value to a cgroup interface file. */
struct cgroup_write {
    const char *file;
    char value[64];
};

struct cgroup_plan {
    struct cgroup_write w[CGROUP_MAX_WRITES];
    size_t n;
};

/* runc's cpu.shares -> cpu.weight conversion (0 stays 0: not set). */
uint64_t cgroup_cpu_weight(uint64_t shares);

/* The writes for `update`, in runc's order; `current` (may be NULL) supplies the memory limit
 * an update without one computes memory.swap.max from. RPC_INVALID_ARGUMENT names the field. */
int cgroup_plan_resources(const struct agent_resources *update, const struct agent_resources *current,
                          struct cgroup_plan *plan, char *err, size_t errcap);
/* Copies every field `update` sets into `into` (strings duplicated). 0, or -1 out of memory. */
int cgroup_resources_merge(struct agent_resources *into, const struct agent_resources *update);

/* "123\n" or "max\n" (UINT64_MAX). 0, or -1 when it is neither. */
int cgroup_parse_value(const char *text, uint64_t *out);
/* "name value" lines (cpu.stat, memory.stat, memory.events); stops at cap. Returns the count. */
size_t cgroup_parse_flat(const char *text, struct cgroup_counter *out, size_t cap);
/* io.stat lines "MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. ...". Returns the count. */
size_t cgroup_parse_io_stat(const char *text, struct io_device_stat *out, size_t cap);

/* Boot: enables cpu, memory, pids, cpuset and io for CGROUP_PARENT's children, as far as the
 * kernel has them, and makes the first container's cgroup ahead (see cgroup_create). Logged,
 * never fatal: without cgroups containers still run, unlimited. */
void cgroups_init(void);
bool cgroups_available(void);

/* The container's cgroup: the one made at boot while it is unused, else CGROUP_PARENT/<id>
 * (made, or emptied and reused). Its path goes to dir, its directory opened (close-on-exec)
 * to *fd, the inotify watch of its memory.events (-1: none) to *wd. */
int cgroup_create(const char *id, char *dir, size_t dircap, int *fd, int *wd, char *err, size_t errcap);
/* Writes the plan's values into dir's files; the first failure stops and is reported
 * (EINVAL/ERANGE/ENOENT: InvalidArgument, EBUSY: FailedPrecondition, else Internal). */
int cgroup_apply(const char *dir, const struct cgroup_plan *plan, char *err, size_t errcap);
/* Kills whatever is left in dir (cgroup.kill) and removes it with its sub-cgroups. 0, or -1
 * while it is still busy (its processes are still exiting): call again later. */
int cgroup_destroy(const char *dir);
/* The container's counters. 0, or -1 when the cgroup cannot be read at all. */
int cgroup_read_stats(const char *dir, struct container_stats *st);
/* memory.events oom_kill (0 when the file or the key is missing). */
uint64_t cgroup_read_oom_kill(const char *dir);

/* Change notification of memory.events files (inotify), for WatchOom. */
int cgroups_events_fd(void);
/* Watch descriptor for dir's memory.events, or -1. */
int cgroup_watch_events(const char *dir);
void cgroup_unwatch_events(int wd);
/* Drains the inotify fd; true when something changed. */
bool cgroups_events_drain(void);

/* Child, in the container's new root before pivot_root (cwd = the root): when the spec mounts
 * sysfs at /sys but nothing at /sys/fs/cgroup, mounts the container's cgroup there (as a
 * cgroup2 instance in its cgroup namespace: it sees its own cgroup as the root), read-only
 * like /sys. */
int cgroup_mount_in_root(const struct create_container_request *req, char *err, size_t errcap);

#endif
