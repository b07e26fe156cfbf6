/* Handing the command over to the TypeScript shim: `node <repo>/dist/shim/src/main.js ARGS`. */
#ifndef SMOLVM_LAUNCHER_FALLBACK_H
#define SMOLVM_LAUNCHER_FALLBACK_H

#include <stddef.h>

/* Replaces this process with node, same arguments; returns only on failure (exit code 1). */
int exec_node(int argc, char **argv);

/* Puts the bytes the launcher read from stdin (saved in memfd) back on fd 0 for node; closes
 * memfd. 0 or -1 (message written). */
int restore_stdin(int memfd);

#endif
