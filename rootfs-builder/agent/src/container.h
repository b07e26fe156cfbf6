/* Containers: their root filesystem (rootfs.h), their cgroup (cgroups.h), their init process,
 * made in new pid/mount/uts/ipc namespaces, and their execs, which join those namespaces
 * (process.h, child.h). This is the agent's container layer (kata's rustjail): its
 * functions return results (RPC_OK, or an RPC code with the message in err) and never answer
 * the host; what happens later (a child set up or exec'd, a process finished, a process or a
 * container forgotten, a memory.events change) goes up through the container_events whoever
 * answers the host registered. */
#ifndef SMOLVM_CONTAINER_H
#define SMOLVM_CONTAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent_pb.h"
#include "process.h"
#include "stdio_pump.h"

struct container;

struct container_events {
    /* A process's set-up (CreateContainer, ExecProcess) ended: RPC_OK with the process created
     * and waiting for its start, or the failure (the process is then released, and with an
     * init its container is gone). */
    void (*setup_done)(void *ctx, struct process *p, int32_t code, const char *message);
    /* After process_start: RPC_OK once the process exec'd, else why its exec failed. */
    void (*start_done)(void *ctx, struct process *p, int32_t code, const char *message);
    /* The process exited and its output is all sent or dropped: its exit status is final. */
    void (*finished)(void *ctx, struct process *p);
    /* The process is forgotten (removed, failed, or its container went); message says so
     * ("container "c" exec "e" was removed"). p is freed after the current event batch. */
    void (*released)(void *ctx, struct process *p, const char *message);
    /* The container is forgotten (its processes were released first); oom_kill: its cgroup's
     * last memory.events count. c is freed after the current event batch. */
    void (*gone)(void *ctx, struct container *c, uint64_t oom_kill);
    /* Some container's memory.events changed (container_oom_kill tells which). */
    void (*oom_events)(void *ctx);
    void *ctx;
};

/* The events every container reports through, and the streams their processes' stdio joins.
 * Watches the containers' memory.events (cgroups_events_fd). */
void containers_init(const struct container_events *events, struct stream_set *streams);

/* Lookups: RPC_OK, or RPC_NOT_FOUND with the message. */
int container_find(const char *id, struct container **out, char *err, size_t errcap);
/* The process a request names: the container's init for an empty exec id. */
int container_find_process(const char *container_id, const char *exec_id, struct container **out_c,
                           struct process **out_p, char *err, size_t errcap);
/* As container_find, and RPC_FAILED_PRECONDITION when the guest has no cgroup for it; `what`
 * names the operation in the message. */
int container_find_with_cgroup(const char *id, const char *what, struct container **out, char *err, size_t errcap);
const char *container_id(const struct container *c);
/* Every container, newest first. */
struct container *container_first(void);
struct container *container_next(const struct container *c);

/* CreateContainer: validates, mounts, makes the cgroup and clones the init process (*init), which
 * reports through setup_done. */
int container_create(const struct create_container_request *req, struct process **init, char *err, size_t errcap);
/* ExecProcess: clones an exec (*out) into the container's namespaces; setup_done follows. */
int container_exec(const struct exec_process_request *req, struct process **out, char *err, size_t errcap);
/* SignalProcess: to p, or (all) to every process of the container. Signals the kernel would
 * drop for the init are held (signal_hold.h) and count as sent. */
int container_signal(struct container *c, struct process *p, uint32_t sig, bool all, char *err, size_t errcap);
/* ListProcesses: the pids of the container's processes and the exec id of each ("" for the
 * init and their children); how many (at most cap). */
size_t container_list(struct container *c, uint32_t *pids, const char **exec_ids, size_t cap);
/* RemoveContainer: kills it; gone follows once its init is reaped (at once if it was). */
void container_remove(struct container *c);
/* RemoveProcess of an exec: kills it; released follows once it is reaped (at once if it was). */
void container_remove_process(struct process *p);

/* Protocol 1.3: the container's cgroup (cgroups.h). */
int container_update(struct container *c, const struct agent_resources *resources, char *err, size_t errcap);
int container_stats(struct container *c, struct container_stats *st, char *err, size_t errcap);
/* memory.events oom_kill of the container's cgroup (0 without one). */
uint64_t container_oom_kill(const struct container *c);
bool container_has_cgroup(const struct container *c);

/* SIGCHLD: reaps every exited child. */
void container_reap_children(void);
/* Shutdown: kill every container process (the filesystems are synced by the caller). */
void container_kill_all(void);

#endif
