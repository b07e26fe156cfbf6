/* Handing the command over to the TypeScript shim: `node <repo>/dist/shim/src/main.js ARGS`. */
#ifndef SMOLVM_LAUNCHER_FALLBACK_H
#define SMOLVM_LAUNCHER_FALLBACK_H

#include <stddef.h>

/* <repo>/bin/containerd-shim-smolvm-v1.js (the node entry: its name stays in the daemons'
 * command lines) next to this binary (<repo>/bin/…), so that a moved checkout keeps working;
 * the path baked in at build time otherwise. 0, or -1 when it does not fit in buf. */
int resolve_main_js(char *buf, size_t cap);

/* Replaces this process with node, same arguments; returns only on failure (exit code 1). */
int exec_node(int argc, char **argv);

/* Puts the bytes the launcher read from stdin (saved in memfd) back on fd 0 for node; closes
 * memfd. 0 or -1 (message written). */
int restore_stdin(int memfd);

#endif
