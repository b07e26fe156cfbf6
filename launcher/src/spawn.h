/* Spawning the shim daemon as start.ts does when no daemon serves the group and no spare was
 * claimed: `node <repo>/bin/containerd-shim-smolvm-v1.js -namespace NS -id ID -address ADDR
 * -publish-binary BIN [-debug] daemon`, in its own session, with a ready pipe on fd 3. */
#ifndef SMOLVM_LAUNCHER_SPAWN_H
#define SMOLVM_LAUNCHER_SPAWN_H

#include "flags.h"
#include "util.h"

/* How long the daemon has to write "ok" and close fd 3 (start.ts: 10 s). */
#define READY_TIMEOUT_MS 10000
/* What is kept of its answer ("ok", or "error: " and a message, maybe a stack). */
#define MAX_READY_MESSAGE (16 * 1024)

/* FAST_DONE: the daemon said "ok" (it keeps running, detached: not waited for);
 * FAST_FAILED: it failed, timed out or exited (killed, message on stderr);
 * FAST_FALLBACK: nothing was started (node can try it all again). */
enum fast_result spawn_daemon(const struct shim_flags *f, const char *socket, const char *group);

#endif
