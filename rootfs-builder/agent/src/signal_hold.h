/* Signals to a container's init process that the kernel would drop, held until the process can
 * take them.
 *
 * Why: the init is PID 1 of its own pid namespace. The kernel drops every signal but SIGKILL
 * and SIGSTOP that reaches a namespace init whose disposition for it is SIG_DFL, also when it
 * comes from an ancestor namespace (kernel/signal.c, sig_task_ignored with SIGNAL_UNKILLABLE):
 * nothing is queued. Between execve and the moment the program installs its handlers (a shell's
 * `trap`, busybox top's fatal-signal catcher) a SIGTERM is therefore lost, and the stop ends
 * only with the SIGKILL after the grace period. Under runc that window lasts microseconds; in an
 * emulated guest (QEMU TCG), where the first exec of a fresh VM also faults its binary in from
 * a cold disk, it lasts tens to hundreds of milliseconds: exactly when kubelet's or ctr's stop
 * right after a start arrives.
 *
 * What (process.c applies it, this module decides):
 * - Only a container's init process, and only signals other than SIGKILL, SIGSTOP (the kernel
 *   always delivers them) and SIGCONT (it resumes a stopped process when sent, whatever the
 *   disposition). Execs are not namespace inits: the kernel never drops their signals.
 * - A created process (no StartProcess yet) is not held for: it waits for its start with
 *   handlers that end it with 128 + the signal, as runc's init waiting for its start ends.
 * - From StartProcess until the exec, every such signal is held: the kernel would drop it
 *   (the child is between its handlers and the exec's SIG_DFL).
 * - From the exec on, for SIGNAL_HOLD_WINDOW_MS, a signal the process neither catches, ignores
 *   nor blocks (/proc/<pid>/status SigCgt, SigIgn, SigBlk) is held; one it does is sent at once
 *   (a blocked one is queued by the kernel, an ignored one is ignored, as under runc).
 * - Held signals are delivered, in the order they came, as soon as the process takes them
 *   (polled every SIGNAL_HOLD_POLL_FAST_MS during the first SIGNAL_HOLD_FAST_FOR_MS after the
 *   exec, when handlers usually appear, then every SIGNAL_HOLD_POLL_SLOW_MS: a held signal costs
 *   a guest read of /proc/<pid>/status per poll), and dropped when the window ends: a PID 1 that installed
 *   no handler by then ignores them, which is runc's outcome. After the window every signal is
 *   sent at once, as before.
 * - At most SIGNAL_HOLD_MAX per process; a standard signal already held is held once (the kernel
 *   keeps one pending instance of each), a real-time one each time. A signal beyond the bound is
 *   sent (and so dropped by the kernel). The process's exit and RemoveContainer clear them.
 * - The Signal RPC is answered OK when the signal is held: kill(2) also succeeds for a signal the
 *   kernel then drops. */
#ifndef SMOLVM_SIGNAL_HOLD_H
#define SMOLVM_SIGNAL_HOLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIGNAL_HOLD_MAX 16
#define SIGNAL_HOLD_WINDOW_MS 10000u
#define SIGNAL_HOLD_POLL_FAST_MS 10u
#define SIGNAL_HOLD_FAST_FOR_MS 1000u
#define SIGNAL_HOLD_POLL_SLOW_MS 50u

/* A process's signal masks, bit (sig - 1) for signal sig (1..64), as /proc/<pid>/status shows
 * them: the main thread's blocked set, the ignored and the caught signals. */
struct signal_masks {
    uint64_t blocked;
    uint64_t ignored;
    uint64_t caught;
};

/* Parses SigBlk, SigIgn and SigCgt from the text of /proc/<pid>/status. 0, or -1 when one is
 * missing or malformed. */
int signal_masks_parse(const char *status, struct signal_masks *out);

/* One process's held signals and its hold window. */
struct signal_hold {
    uint8_t sigs[SIGNAL_HOLD_MAX];
    uint8_t n;
    bool execd;        /* the window runs from the exec */
    uint64_t execd_ms; /* CLOCK_MONOTONIC, ms */
};

/* The process exec'd at now_ms: its window starts. */
void signal_hold_on_exec(struct signal_hold *h, uint64_t now_ms);

/* Whether a signal sent now to the namespace init would be dropped and must be held instead.
 * masks: the process's masks, or NULL when they could not be read (then it is sent: a process
 * that is gone gets ESRCH as before). Before the exec the masks are not looked at. */
bool signal_hold_wanted(const struct signal_hold *h, int sig, const struct signal_masks *masks, uint64_t now_ms);

/* Holds sig (see the coalescing rule above). False when the bound is reached. */
bool signal_hold_add(struct signal_hold *h, int sig);

/* A poll after the exec: removes the held signals the process now takes and puts them, in
 * order, in deliver[] (room for SIGNAL_HOLD_MAX); at the window's end removes the rest too,
 * counted in *dropped. Returns how many to deliver. Before the exec nothing changes. */
size_t signal_hold_poll(struct signal_hold *h, const struct signal_masks *masks, uint64_t now_ms, int *deliver,
                        size_t *dropped);

/* Whether a poll can change anything: signals held and the process exec'd. */
bool signal_hold_needs_poll(const struct signal_hold *h);

/* How often to poll a process that needs it (signal_hold_needs_poll), in ms. */
unsigned signal_hold_poll_interval_ms(const struct signal_hold *h, uint64_t now_ms);

/* Forgets every held signal (the process exited or was removed); how many there were. */
size_t signal_hold_clear(struct signal_hold *h);

#endif
