/* The child of a container process, from clone to execve. The agent clones it (in new
 * namespaces for a container's init, in the container's pid namespace for an exec, born in the
 * container's cgroup); the child sets itself up in runc's order (cgroup namespace, namespaces
 * of an exec, stdio, signals, the new root with its mounts for an init, rlimits, cwd, the
 * terminal, capabilities, uid/gid, seccomp), reports on its status pipe, waits for the start
 * byte and execs. It runs on a copy of the agent's memory and never returns into the agent. */
#ifndef SMOLVM_CHILD_H
#define SMOLVM_CHILD_H

#include <stdint.h>
#include <sys/types.h>

#include "agent_pb.h"
#include "security.h"

/* What the child reports on its status pipe: written once, atomically (< PIPE_BUF). code
 * RPC_OK: set up, waiting for the start byte; else why the set-up or the exec failed. The pipe
 * is close-on-exec: EOF after a ready report means the child exec'd (or died). */
struct child_report {
    int32_t code;
    char message[500];
};

struct child_ctx {
    const struct agent_process *proc;
    /* Init process: the container's root to pivot into, and the request (hostname). */
    const struct create_container_request *create;
    const char *rootfs;
    const char *files_dir;
    /* The container's seccomp filter (insns NULL: none). */
    const struct seccomp_program *seccomp;
    /* Exec: the container's mount, uts and ipc namespaces to join (the pid namespace was
     * chosen at clone); -1 otherwise. */
    int ns_fds[3];
    /* stdin, stdout, stderr (-1: /dev/null), status writer, start reader, console socket
     * (terminal only, else -1). */
    int fds[6];
    /* The container's cgroup directory (the child is born in it) and, for an exec, the init's
     * cgroup namespace; -1 when the guest has no cgroups. cgroup_procs_fd: the cgroup's
     * cgroup.procs when the kernel has no clone3 (the child joins by writing it), else -1. */
    int cgroup_fd;
    int cgroupns_fd;
    int cgroup_procs_fd;
};

/* Starts the child running its set-up with ctx (the child's copy of it; ctx->cgroup_procs_fd is
 * the agent's to reset). clone_flags: the namespaces it gets. pid, or -1 with errno. */
pid_t child_clone(struct child_ctx *ctx, int clone_flags);

/* Agent start (before a template snapshot): makes and drops once the namespaces every
 * container's init gets, so that the kernel's one-time set-up for them (the pid cache of a
 * second pid namespace level) is not paid by the first container of a restored VM. */
void child_prewarm_namespaces(void);

#endif
