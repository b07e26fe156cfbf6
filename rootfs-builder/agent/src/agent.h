/* The agent protocol (proto/smolvm/agent.proto) as this agent speaks it: its version, limits
 * and channel (below), and how it reads the .proto where that is silent or ambiguous:
 * - WaitProcess vs. flow control: the .proto promises both "EOF before the WaitProcess
 *   answer" and "a process's exit is reported even while its output is blocked". Both cannot
 *   hold when the host grants no credit. The agent keeps the first: a Wait answer travels on
 *   the data lane behind the output's EOF frames, so it arrives only after the host has taken
 *   (granted credit for) all output. Signals, Start, Remove etc. are never blocked by output.
 * - Stdin credit: the agent grants credit back to the host on the stdin stream (type 3,
 *   flag CREDIT, u32 BE) once the bytes were written into the process's pipe. Data beyond
 *   the granted credit is a protocol violation: it is dropped and logged (the connection stays).
 * - Reconnection (vport reopened by the host, or a new vsock connection, which replaces the
 *   old one): a new Handshake is required; the old connection's streams are detached (output
 *   drained and dropped, stdin closed) and its pending answers dropped. Containers survive and
 *   can be waited on / removed from the new connection.
 * - StartProcess is answered once execve succeeded (the child's close-on-exec status pipe
 *   closes); if execve fails the answer carries the error and the process exits 127.
 * - SignalProcess to a container's init (PID 1 of its pid namespace) before it exec'd, or in
 *   the first seconds after, while it has no handler for the signal, which the kernel would
 *   drop: held and delivered once the program catches it, or dropped after a bounded window
 *   (signal_hold.h). Answered OK either way, as kill(2) is.
 * - Execs (protocol 1.1) join the container's pid namespace through setns(CLONE_NEWPID) on the
 *   agent itself around clone() (the child stays the agent's own, so it is reaped like the
 *   init process), then its ipc, uts and mount namespaces in the child. Each is forgotten by
 *   RemoveProcess or with its container. When the container's init exits, the kernel kills
 *   every exec (one pid namespace); their Waits report that (137).
 * - terminal=true: the child opens the pty in the container's own devpts (after pivot_root /
 *   setns) and sends the master over a socketpair (SCM_RIGHTS) before it reports ready; the
 *   stdout stream reads the master (EIO = EOF), the stdin stream writes to it.
 * - The OCI spec (protocol 1.2) is applied in runc's order: mounts in the new root, pivot_root,
 *   hostname, read-only root, sysctls, read-only paths, masked paths; then bounding set,
 *   seccomp (without no_new_privs: before the uid switch, which needs CAP_SYS_ADMIN), uid/gid
 *   with the permitted set kept, capability sets and ambient, umask, no_new_privs, seccomp
 *   (with no_new_privs). Execs get their own capabilities and the container's filter
 *   (mounts.h, security.h).
 * - Requests on even stream ids: InvalidArgument on that id. Oversized frames (> 4 MiB):
 *   skipped without buffering; a request gets RESOURCE_EXHAUSTED (8); the connection stays. */
#ifndef SMOLVM_AGENT_H
#define SMOLVM_AGENT_H

#define AGENT_PROTOCOL_VERSION 1
/* 1: ExecProcess, ResizePty, RemoveProcess, terminals, console size.
 * 2: capabilities, umask, linux security (seccomp, masked/read-only paths, sysctls), mounts.
 * 3: per-container cgroups: resources at create, UpdateContainer, StatsContainer, WatchOom,
 *    WaitProcessResponse.oom_kill. */
#define AGENT_PROTOCOL_MINOR 3
#define AGENT_VERSION "0.1.0"
#define INITIAL_STREAM_CREDIT 262144u
#define MAX_DATA_FRAME 65536u
/* Output is read from pipes only while the data lane holds less than this. */
#define DATA_QUEUE_LIMIT (1u << 20)
/* Requests are read only while the control lane (responses) holds less than this: a host
 * that sends requests without reading answers stalls itself, not the guest's memory. */
#define CONTROL_QUEUE_LIMIT (8u << 20)
#define AGENT_VSOCK_PORT 1024u
#define AGENT_VPORT_NAME "smolvm.agent"

#endif
