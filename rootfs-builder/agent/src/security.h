/* The OCI process security settings applied as runc applies them: capability sets (names to
 * numbers, bounding set, capset, ambient) and linux.seccomp compiled into a classic BPF
 * filter for x86_64 (a syscall-name table generated from the kernel's uapi header, so the
 * static musl agent needs no libseccomp).
 *
 * Seccomp semantics, as runc + libseccomp where it matters:
 * - rules are grouped by syscall; within one syscall the first rule whose argument
 *   conditions all match gives the action; no match: the default action;
 * - several conditions on the SAME argument index become separate rules (OR), as runc does;
 *   otherwise the conditions of one rule are ANDed;
 * - syscall names this table does not know are skipped (runc ignores them too);
 * - only the x86_64 ABI is filtered: a syscall through another ABI (i386 int 0x80, x32) kills
 *   the process, as libseccomp's bad-architecture action does for an ABI a filter lacks. */
#ifndef SMOLVM_SECURITY_H
#define SMOLVM_SECURITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent_pb.h"

struct sock_filter;

/* Capability sets as bit masks (bit n = capability n). */
struct cap_masks {
    uint64_t sets[5]; /* indexed by CAPSET_* */
};

/* Resolves names; 0, or -1 with err naming the unknown capability. */
int caps_resolve(const struct agent_caps *caps, struct cap_masks *out, char *err, size_t errcap);
/* Capability number for a name ("CAP_CHOWN"), or -1. */
int cap_from_name(const char *name);

/* Drops every capability outside the bounding set (needs CAP_SETPCAP). 0 or -errno. */
int caps_apply_bounding(const struct cap_masks *m);
/* After the uid switch (with PR_SET_KEEPCAPS): effective, permitted, inheritable, then the
 * ambient set. 0 or -errno. */
int caps_apply_sets(const struct cap_masks *m);

struct seccomp_program {
    struct sock_filter *insns; /* NULL: no filter */
    size_t len;
    unsigned long flags; /* SECCOMP_FILTER_FLAG_* */
};

/* Compiles the spec; 0, or -1 with err explaining what is wrong (InvalidArgument). */
int seccomp_compile(const struct agent_seccomp *sc, struct seccomp_program *out, char *err, size_t errcap);
void seccomp_program_free(struct seccomp_program *p);
/* Installs the filter on the calling thread. 0 or -errno. */
int seccomp_install(const struct seccomp_program *p);
/* Syscall number of a name on x86_64, or -1. */
int syscall_from_name(const char *name);

#endif
