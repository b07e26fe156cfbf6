/* containerd's identifier rule (pkg/identifiers: container ids and namespaces), the same as
 * shim/src/util/identifiers.ts: ids become file names and path components, so `start` and
 * `delete` check them before they build any path, and say why in the same words as node. */
#ifndef SMOLVM_LAUNCHER_IDENTIFIER_H
#define SMOLVM_LAUNCHER_IDENTIFIER_H

#include <stdbool.h>

#define IDENTIFIER_MAX_LENGTH 76
#define IDENTIFIER_RULE "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"

/* Not empty, at most IDENTIFIER_MAX_LENGTH bytes, and matching IDENTIFIER_RULE. */
bool is_identifier(const char *s);

/* true when s is an identifier; else writes "PROG: <action>: invalid <what> \"<s>\": [<why>; ]
 * containerd identifiers must match …" to stderr (the words of identifiers.ts), returns false. */
bool check_identifier(const char *action, const char *what, const char *s);

#endif
