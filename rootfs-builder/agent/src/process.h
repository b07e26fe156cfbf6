/* A container process (its init or an exec) as the agent holds it, from the clone to the
 * reaping: its state, its status and start pipes, its stdio streams and pty, its exit status,
 * and the signals held for an init (signal_hold.h). Every process is set up and then held
 * before execve until StartProcess. A process may have a terminal: a pty from the
 * container's own devpts instance, its slave the controlling terminal and stdio of the
 * process, its master pumped on the stdout/stdin streams.
 *
 * It knows its container only by name (and as an opaque pointer for its owner) and answers
 * nobody: what happens to it asynchronously goes up through the process_events its owner,
 * the container layer, registered. Functions returning int give RPC_OK or an RPC code with
 * the message in err. */
#ifndef SMOLVM_PROCESS_H
#define SMOLVM_PROCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent_pb.h"
#include "child.h"
#include "event_loop.h"
#include "signal_hold.h"
#include "stdio_pump.h"

struct container;

/* CREATING: cloned, setting up; CREATED: waits for its start byte; STARTING: start byte sent,
 * not exec'd yet; RUNNING: exec'd (or its exec failed: it exits 127); EXITED: reaped. */
enum proc_state { PROC_CREATING, PROC_CREATED, PROC_STARTING, PROC_RUNNING, PROC_EXITED };

/* What the child's status pipe reports next (the reaping may come first: it does not change
 * this). */
enum proc_awaiting {
    AWAIT_NONE,
    AWAIT_SETUP, /* its set-up: ready, or why it failed (EOF: it died) */
    AWAIT_EXEC,  /* after the start byte: EOF once it exec'd, or why the exec failed */
};

struct process {
    struct process *next;        /* the container's list of execs (kept by the container layer) */
    struct container *container; /* its owner's, never looked into here */
    const char *container_id;    /* the container's own string, for names */
    char *exec_id;               /* NULL: the container's init process */
    pid_t pid;
    enum proc_state state;
    enum proc_awaiting awaiting;
    bool exited;
    bool terminal;
    bool removing; /* execs: RemoveProcess killed it, forget it on reap */
    int status_fd; /* reports from the child (child.h); EOF = exec'd or dead */
    struct watch status_watch;
    int start_fd;   /* one byte lets the child exec */
    int console_fd; /* terminal: the socket the child sends its pty master over, until it has */
    int pty_fd;     /* terminal: the pty master, kept for ResizePty until the process exits */
    struct stream *out[2]; /* stdout, stderr; NULL when not connected */
    struct stream *in;
    uint32_t exit_status;
    uint64_t exited_at;
    uint64_t oom_kill; /* the container's memory.events oom_kill count when it was reaped */
    struct signal_hold held;      /* init: signals the kernel would drop, held (signal_hold.h) */
    struct process *init_next;    /* the list of init processes the signal hold polls */
};

/* What a process reports on its own, registered by its owner (the container layer). */
struct process_events {
    /* The child reported on its set-up: RPC_OK (created, waiting for its start) or why it
     * failed; a process that failed must be destroyed by the owner (process_kill_and_reap, then
     * process_release). */
    void (*setup_done)(struct process *p, int32_t code, const char *message);
    /* After process_start: the process exec'd (RPC_OK) or its exec failed (it exits 127). */
    void (*start_done)(struct process *p, int32_t code, const char *message);
    /* process_finished(p) became true: it exited and its output ended. */
    void (*finished)(struct process *p);
};

/* The events every process reports through and the streams their stdio joins. */
void process_layer_init(const struct process_events *events, struct stream_set *streams);

/* A process of container c (named container_id) that is not cloned yet. */
void process_init(struct process *p, struct container *c, const char *container_id, bool terminal);
/* "container "c"" or "container "c" exec "e"": how messages name a process (two in turn are
 * valid at once). */
const char *process_name(const struct process *p);
/* Checks a process's stdio stream ids (who names it); NULL, or the message (in msg). */
const char *process_validate_stdio(const char *who, const struct stdio_streams *s, bool terminal, char *msg,
                                   size_t cap);
/* Clones the process's child (ctx: its set-up, child.h), which sets itself up and waits before
 * execve, and keeps the agent's ends: status and start pipes, stdio pipes and their streams
 * (terminal: the streams get the pty master once the child sends it). pidns_fd >= 0: the
 * child is born in that pid namespace. setup_done follows. On failure the caller destroys p. */
int process_spawn(struct process *p, struct child_ctx *ctx, const struct stdio_streams *stdio, int clone_flags,
                  int pidns_fd, char *err, size_t errcap);
/* StartProcess: lets a created process exec; start_done follows (at once if the child cannot
 * report any more). */
int process_start(struct process *p, char *err, size_t errcap);
/* Exited and its output ended (EOF handled on every output stream): its exit is final. */
bool process_finished(const struct process *p);
/* A signal for a container's init: held when the kernel would drop it now (signal_hold.h).
 * True when held (the caller then sends nothing). */
bool process_hold_signal(struct process *p, int sig);
/* ResizePty. */
int process_resize_pty(struct process *p, uint32_t width, uint32_t height, char *err, size_t errcap);
/* CloseStdin: EOF on the process's stdin once the buffered bytes are written. */
void process_close_stdin(struct process *p);
/* The process was reaped with this wait status; oom_kill: its container's count then. */
void process_exited(struct process *p, int wait_status, uint64_t oom_kill);
/* Ends its output streams now (EOF frames if attached), dropping output still unread. */
void process_drop_output(struct process *p);
/* Kills a child that failed its set-up and reaps it at once, so that nothing of it (not even a
 * zombie in ListProcesses) outlives the failure's answer. */
void process_kill_and_reap(struct process *p);
/* Lets go of everything the agent holds for the process (killing it if it still runs); why
 * goes to the log of dropped held signals. p itself stays allocated for the owner. */
void process_release(struct process *p, const char *why);

#endif
