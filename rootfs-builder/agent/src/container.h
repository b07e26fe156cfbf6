/* Containers: their root filesystem (image + writable disk from the VMM's slots, overlaid),
 * their init process, made in new pid/mount/uts/ipc namespaces, and their execs, which join
 * those namespaces; every process is set up and then held before execve until StartProcess.
 * A process may have a terminal: a pty from the container's own devpts instance, its slave
 * the controlling terminal and stdio of the process, its master pumped on the stdout/stdin
 * streams. Every RPC about a container is answered from here, some of them later
 * (Create/Exec/Start when the child reports, Wait on exit, Remove on reap). */
#ifndef SMOLVM_CONTAINER_H
#define SMOLVM_CONTAINER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent.h"
#include "agent_pb.h"
#include "signal_hold.h"

struct stream;
struct container;

struct pending_reply {
    struct pending_reply *next;
    uint64_t gen;
    uint32_t stream_id;
};

enum proc_state { PROC_CREATING, PROC_CREATED, PROC_STARTING, PROC_RUNNING, PROC_EXITED };
enum proc_pending { PENDING_NONE, PENDING_CREATE, PENDING_START };

struct process {
    struct process *next; /* the container's list of execs */
    struct container *container;
    char *exec_id; /* NULL: the container's init process */
    pid_t pid;
    enum proc_state state;
    bool exited;
    bool terminal;
    int status_fd; /* reports from the child (setup done / exec failed); EOF = exec'd or dead */
    struct watch status_watch;
    int start_fd;  /* one byte lets the child exec */
    int console_fd; /* terminal: the socket the child sends its pty master over, until it has */
    int pty_fd;     /* terminal: the pty master, kept for ResizePty until the process exits */
    enum proc_pending pending;
    struct pending_reply pending_reply;
    struct stream *out[2]; /* stdout, stderr; NULL when not connected */
    struct stream *in;
    uint32_t exit_status;
    uint64_t exited_at;
    uint64_t oom_kill; /* the container's memory.events oom_kill count when it was reaped */
    struct pending_reply *waits;
    bool removing;                 /* execs: RemoveProcess killed it, forget it on reap */
    struct pending_reply *removals; /* execs: RemoveProcess callers */
    struct signal_hold held;        /* init: signals the kernel would drop, held (signal_hold.h) */
};

void container_create(uint64_t gen, uint32_t sid, struct create_container_request *req);
void container_exec(uint64_t gen, uint32_t sid, struct exec_process_request *req);
void container_start(uint64_t gen, uint32_t sid, const struct process_target *t);
void container_wait(uint64_t gen, uint32_t sid, const struct process_target *t);
void container_signal(uint64_t gen, uint32_t sid, const struct process_target *t);
void container_close_stdin(uint64_t gen, uint32_t sid, const struct process_target *t);
void container_resize_pty(uint64_t gen, uint32_t sid, const struct resize_pty_request *req);
void container_list(uint64_t gen, uint32_t sid, const struct process_target *t);
void container_remove(uint64_t gen, uint32_t sid, const struct process_target *t);
void container_remove_process(uint64_t gen, uint32_t sid, const struct process_target *t);
/* Protocol 1.3: the container's cgroup (cgroups.h). */
void container_update(uint64_t gen, uint32_t sid, struct update_container_request *req);
void container_stats(uint64_t gen, uint32_t sid, const struct process_target *t);
void container_watch_oom(uint64_t gen, uint32_t sid, const struct watch_oom_request *req);
/* The inotify fd of memory.events files is readable: answers WatchOom callers. */
void container_on_cgroup_events(void);

/* SIGCHLD: reaps every exited child. */
void container_reap_children(void);
/* The child's status pipe is readable. */
void container_on_status(void *process, uint32_t events);
/* One of the process's output streams reached EOF. */
void process_on_output_done(struct process *p);
/* The signal hold's poll timer fired (signal_hold.h). */
void container_on_signal_hold_timer(void *unused, uint32_t events);
/* Shutdown: kill every container process (the filesystems are synced by the caller). */
void container_kill_all(void);

#endif
