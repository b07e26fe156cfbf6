#include "security.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

/* ---------------------------------------------------------------- capabilities */

static const char *const cap_names[] = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
};
_Static_assert(sizeof cap_names / sizeof cap_names[0] == CAP_LAST_CAP + 1, "capability table out of date");

int cap_from_name(const char *name)
{
    for (size_t i = 0; i < sizeof cap_names / sizeof cap_names[0]; i++)
        if (strcmp(cap_names[i], name) == 0)
            return (int)i;
    return -1;
}

int caps_resolve(const struct agent_caps *caps, struct cap_masks *out, char *err, size_t errcap)
{
    static const char *const set_names[5] = { "bounding", "effective", "inheritable", "permitted", "ambient" };
    memset(out, 0, sizeof *out);
    for (int s = 0; s < 5; s++) {
        for (size_t i = 0; i < caps->nsets[s]; i++) {
            int n = cap_from_name(caps->sets[s][i]);
            if (n < 0) {
                snprintf(err, errcap, "process.capabilities.%s: unknown capability \"%.64s\"", set_names[s],
                         caps->sets[s][i]);
                return -1;
            }
            out->sets[s] |= 1ull << n;
        }
    }
    return 0;
}

/* The running kernel's last capability (it may know fewer than our headers). */
static int last_cap(void)
{
    int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return CAP_LAST_CAP;
    char buf[16];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return CAP_LAST_CAP;
    buf[n] = 0;
    int v = atoi(buf);
    return v > 0 && v < 64 ? v : CAP_LAST_CAP;
}

int caps_apply_bounding(const struct cap_masks *m)
{
    int last = last_cap();
    for (int cap = 0; cap <= last; cap++) {
        if (m->sets[CAPSET_BOUNDING] & (1ull << cap))
            continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            return -errno;
    }
    return 0;
}

int caps_apply_sets(const struct cap_masks *m)
{
    struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) {
        data[i].effective = (uint32_t)(m->sets[CAPSET_EFFECTIVE] >> (32 * i));
        data[i].permitted = (uint32_t)(m->sets[CAPSET_PERMITTED] >> (32 * i));
        data[i].inheritable = (uint32_t)(m->sets[CAPSET_INHERITABLE] >> (32 * i));
    }
    if (syscall(SYS_capset, &hdr, data) < 0)
        return -errno;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return -errno;
    int last = last_cap();
    for (int cap = 0; cap <= last; cap++) {
        /* As runc: an ambient capability the process cannot hold (not permitted and
         * inheritable) is left out rather than failing the container. */
        if (m->sets[CAPSET_AMBIENT] & (1ull << cap))
            (void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
    }
    return 0;
}

/* ---------------------------------------------------------------- seccomp */

static const struct {
    const char *name;
    int nr;
} syscall_table[] = {
#include "syscalls_x86_64.h"
};

int syscall_from_name(const char *name)
{
    for (size_t i = 0; i < sizeof syscall_table / sizeof syscall_table[0]; i++)
        if (strcmp(syscall_table[i].name, name) == 0)
            return syscall_table[i].nr;
    return -1;
}

#define X32_SYSCALL_BIT 0x40000000u
#define SECCOMP_MAX_INSNS 4096 /* BPF_MAXINSNS */
#define ARG_LO(i) ((uint32_t)(offsetof(struct seccomp_data, args) + 8 * (i)))
#define ARG_HI(i) (ARG_LO(i) + 4)

/* action string + errno -> SECCOMP_RET_* value; -1 with err on an unknown action. */
static int64_t action_value(const char *action, bool has_errno, uint32_t errno_ret, const char *where, char *err,
                            size_t errcap)
{
    uint32_t data = (has_errno ? errno_ret : EPERM) & SECCOMP_RET_DATA;
    if (!action || !action[0]) {
        snprintf(err, errcap, "%s: no action", where);
        return -1;
    }
    if (strcmp(action, "SCMP_ACT_ALLOW") == 0)
        return SECCOMP_RET_ALLOW;
    if (strcmp(action, "SCMP_ACT_ERRNO") == 0)
        return SECCOMP_RET_ERRNO | data;
    if (strcmp(action, "SCMP_ACT_KILL") == 0 || strcmp(action, "SCMP_ACT_KILL_THREAD") == 0)
        return SECCOMP_RET_KILL_THREAD;
    if (strcmp(action, "SCMP_ACT_KILL_PROCESS") == 0)
        return SECCOMP_RET_KILL_PROCESS;
    if (strcmp(action, "SCMP_ACT_TRAP") == 0)
        return SECCOMP_RET_TRAP;
    if (strcmp(action, "SCMP_ACT_TRACE") == 0)
        return SECCOMP_RET_TRACE | data;
    if (strcmp(action, "SCMP_ACT_LOG") == 0)
        return SECCOMP_RET_LOG;
    if (strcmp(action, "SCMP_ACT_NOTIFY") == 0) {
        snprintf(err, errcap, "%s: SCMP_ACT_NOTIFY is not supported (no seccomp agent in smolvm guests)", where);
        return -1;
    }
    snprintf(err, errcap, "%s: unknown action \"%.64s\"", where, action);
    return -1;
}

enum cmp_op { OP_NE, OP_LT, OP_LE, OP_EQ, OP_GE, OP_GT, OP_MASKED_EQ };

static int parse_op(const char *op)
{
    static const char *const names[] = { "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ",
                                         "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ" };
    for (int i = 0; i < 7; i++)
        if (op && strcmp(op, names[i]) == 0)
            return i;
    return -1;
}

/* Instructions one condition takes (see emit_cond). */
static size_t cond_len(int op)
{
    switch (op) {
    case OP_EQ:
    case OP_NE:
        return 4;
    case OP_MASKED_EQ:
        return 6;
    default:
        return 5;
    }
}

struct emitter {
    struct sock_filter *insns;
    size_t len;
    bool overflow;
};

static void emit(struct emitter *e, uint16_t code, uint32_t k, uint8_t jt, uint8_t jf)
{
    if (e->len >= SECCOMP_MAX_INSNS) {
        e->overflow = true;
        return;
    }
    e->insns[e->len++] = (struct sock_filter){ code, jt, jf, k };
}

/* A jump from instruction `at` to `target` (both absolute); targets are always ahead. */
static uint8_t rel(size_t at, size_t target)
{
    size_t d = target - (at + 1);
    return d > 255 ? 255 : (uint8_t)d; /* rules are short: never truncated (checked by the caller) */
}

/* One 64-bit argument comparison: falls through to the next instruction after the block when
 * it holds, jumps to `fail` when it does not. */
static void emit_cond(struct emitter *e, const struct agent_seccomp_arg *a, int op, size_t fail)
{
    size_t start = e->len, pass = start + cond_len(op);
    uint32_t vhi = (uint32_t)(a->value >> 32), vlo = (uint32_t)a->value;
    uint32_t v2hi = (uint32_t)(a->value_two >> 32), v2lo = (uint32_t)a->value_two;
    uint16_t ld = BPF_LD | BPF_W | BPF_ABS, jeq = BPF_JMP | BPF_JEQ | BPF_K, jgt = BPF_JMP | BPF_JGT | BPF_K,
             jge = BPF_JMP | BPF_JGE | BPF_K;
#define AT (e->len)
    switch (op) {
    case OP_EQ:
        emit(e, ld, ARG_HI(a->index), 0, 0);
        emit(e, jeq, vhi, 0, rel(AT, fail));
        emit(e, ld, ARG_LO(a->index), 0, 0);
        emit(e, jeq, vlo, 0, rel(AT, fail));
        break;
    case OP_NE:
        emit(e, ld, ARG_HI(a->index), 0, 0);
        emit(e, jeq, vhi, 0, rel(AT, pass));
        emit(e, ld, ARG_LO(a->index), 0, 0);
        emit(e, jeq, vlo, rel(AT, fail), 0);
        break;
    case OP_MASKED_EQ:
        emit(e, ld, ARG_HI(a->index), 0, 0);
        emit(e, BPF_ALU | BPF_AND | BPF_K, vhi, 0, 0);
        emit(e, jeq, v2hi, 0, rel(AT, fail));
        emit(e, ld, ARG_LO(a->index), 0, 0);
        emit(e, BPF_ALU | BPF_AND | BPF_K, vlo, 0, 0);
        emit(e, jeq, v2lo, 0, rel(AT, fail));
        break;
    case OP_GT:
    case OP_GE:
        /* hi > vhi: holds; hi < vhi: fails; equal: decided by the low word. */
        emit(e, ld, ARG_HI(a->index), 0, 0);
        emit(e, jgt, vhi, rel(AT, pass), 0);
        emit(e, jeq, vhi, 0, rel(AT, fail));
        emit(e, ld, ARG_LO(a->index), 0, 0);
        emit(e, op == OP_GT ? jgt : jge, vlo, 0, rel(AT, fail));
        break;
    case OP_LT:
    case OP_LE:
        /* hi < vhi: holds; hi > vhi: fails; equal: the low word. */
        emit(e, ld, ARG_HI(a->index), 0, 0);
        emit(e, jge, vhi, 0, rel(AT, pass));
        emit(e, jeq, vhi, 0, rel(AT, fail));
        emit(e, ld, ARG_LO(a->index), 0, 0);
        emit(e, op == OP_LT ? jge : jgt, vlo, rel(AT, fail), 0);
        break;
    }
#undef AT
}

/* One rule body: its conditions (ANDed), then `return action`. */
struct flat_rule {
    int nr;
    uint32_t action;
    const struct agent_seccomp_arg *conds[AGENT_MAX_SECCOMP_ARGS];
    int ops[AGENT_MAX_SECCOMP_ARGS];
    size_t nconds;
};

static size_t rule_len(const struct flat_rule *r)
{
    size_t n = 1;
    for (size_t i = 0; i < r->nconds; i++)
        n += cond_len(r->ops[i]);
    return n;
}

int seccomp_compile(const struct agent_seccomp *sc, struct seccomp_program *out, char *err, size_t errcap)
{
    memset(out, 0, sizeof *out);
    char where[160];
    int64_t def = action_value(sc->default_action, sc->has_default_errno, sc->default_errno,
                               "linux.seccomp.defaultAction", err, errcap);
    if (def < 0)
        return -1;
    for (size_t i = 0; i < sc->narchitectures; i++) {
        if (strncmp(sc->architectures[i], "SCMP_ARCH_", 10) != 0) {
            snprintf(err, errcap, "linux.seccomp.architectures: unknown architecture \"%.64s\"", sc->architectures[i]);
            return -1;
        }
    }
    for (size_t i = 0; i < sc->nflags; i++) {
        const char *f = sc->flags[i];
        if (strcmp(f, "SECCOMP_FILTER_FLAG_TSYNC") == 0)
            out->flags |= SECCOMP_FILTER_FLAG_TSYNC;
        else if (strcmp(f, "SECCOMP_FILTER_FLAG_LOG") == 0)
            out->flags |= SECCOMP_FILTER_FLAG_LOG;
        else if (strcmp(f, "SECCOMP_FILTER_FLAG_SPEC_ALLOW") == 0)
            out->flags |= SECCOMP_FILTER_FLAG_SPEC_ALLOW;
        else {
            snprintf(err, errcap, "linux.seccomp.flags: unsupported flag \"%.64s\"", f);
            return -1;
        }
    }

    /* Flatten: one entry per (syscall, rule), conditions on a repeated index split (OR). */
    size_t cap = 64, n = 0;
    struct flat_rule *flat = malloc(cap * sizeof *flat);
    struct sock_filter *insns = malloc(SECCOMP_MAX_INSNS * sizeof *insns);
    int rc = -1;
    if (!flat || !insns) {
        snprintf(err, errcap, "linux.seccomp: out of memory");
        goto out;
    }
    for (size_t ri = 0; ri < sc->nrules; ri++) {
        const struct agent_seccomp_rule *rule = &sc->rules[ri];
        snprintf(where, sizeof where, "linux.seccomp.syscalls[%zu]", ri);
        int64_t act = action_value(rule->action, rule->has_errno, rule->errno_ret, where, err, errcap);
        if (act < 0)
            goto out;
        int ops[AGENT_MAX_SECCOMP_ARGS];
        unsigned index_count[6] = { 0 };
        for (size_t ai = 0; ai < rule->nargs; ai++) {
            const struct agent_seccomp_arg *a = &rule->args[ai];
            if (a->index > 5) {
                snprintf(err, errcap, "%s.args[%zu]: index %u is out of range (0-5)", where, ai, a->index);
                goto out;
            }
            if ((ops[ai] = parse_op(a->op)) < 0) {
                snprintf(err, errcap, "%s.args[%zu]: unknown operator \"%.64s\"", where, ai, a->op ? a->op : "");
                goto out;
            }
            index_count[a->index]++;
        }
        bool split = false;
        for (int k = 0; k < 6; k++)
            split |= index_count[k] > 1;
        size_t variants = split ? rule->nargs : 1;
        for (size_t ni = 0; ni < rule->nnames; ni++) {
            int nr = syscall_from_name(rule->names[ni]);
            if (nr < 0)
                continue; /* not an x86_64 syscall: skipped, as runc does */
            for (size_t v = 0; v < variants; v++) {
                if (n == cap) {
                    struct flat_rule *nf = cap < 65536 ? realloc(flat, 2 * cap * sizeof *nf) : NULL;
                    if (!nf) {
                        snprintf(err, errcap, "linux.seccomp: too many rules");
                        goto out;
                    }
                    flat = nf;
                    cap *= 2;
                }
                struct flat_rule *f = &flat[n++];
                f->nr = nr;
                f->action = (uint32_t)act;
                f->nconds = 0;
                for (size_t ai = 0; ai < rule->nargs; ai++) {
                    if (split && ai != v)
                        continue;
                    f->conds[f->nconds] = &rule->args[ai];
                    f->ops[f->nconds++] = ops[ai];
                }
            }
        }
    }

    struct emitter e = { .insns = insns };
    uint16_t ld = BPF_LD | BPF_W | BPF_ABS, ret = BPF_RET | BPF_K;
    /* Only the x86_64 ABI: anything else is killed. */
    emit(&e, ld, (uint32_t)offsetof(struct seccomp_data, arch), 0, 0);
    emit(&e, BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
    emit(&e, ret, SECCOMP_RET_KILL_PROCESS, 0, 0);
    emit(&e, ld, (uint32_t)offsetof(struct seccomp_data, nr), 0, 0);
    emit(&e, BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 1);
    emit(&e, ret, SECCOMP_RET_KILL_PROCESS, 0, 0);
    /* One block per syscall, in the order of first appearance. A is the syscall number at
     * every block's start: blocks are entered only through their own test. */
    bool *done = calloc(n ? n : 1, sizeof *done);
    if (!done) {
        snprintf(err, errcap, "linux.seccomp: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n && !e.overflow; i++) {
        if (done[i])
            continue;
        int nr = flat[i].nr;
        size_t body = 0;
        bool unconditional_first = flat[i].nconds == 0;
        for (size_t j = i; j < n; j++)
            if (flat[j].nr == nr)
                body += rule_len(&flat[j]);
        if (unconditional_first) {
            /* The first rule always matches: later ones for this syscall never apply. */
            emit(&e, BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 1);
            emit(&e, ret, flat[i].action, 0, 0);
            for (size_t j = i; j < n; j++)
                if (flat[j].nr == nr)
                    done[j] = true;
            continue;
        }
        emit(&e, BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 1, 0);
        emit(&e, BPF_JMP | BPF_JA, (uint32_t)(body + 1), 0, 0); /* + the closing default */
        for (size_t j = i; j < n && !e.overflow; j++) {
            if (flat[j].nr != nr)
                continue;
            done[j] = true;
            size_t start = e.len, len = rule_len(&flat[j]);
            if (len > 250) {
                snprintf(err, errcap, "linux.seccomp: a rule of syscall %d is too long", nr);
                free(done);
                goto out;
            }
            for (size_t c = 0; c < flat[j].nconds; c++)
                emit_cond(&e, flat[j].conds[c], flat[j].ops[c], start + len);
            emit(&e, ret, flat[j].action, 0, 0);
        }
        /* No rule of this syscall matched. */
        emit(&e, ret, (uint32_t)def, 0, 0);
    }
    free(done);
    emit(&e, ret, (uint32_t)def, 0, 0);
    if (e.overflow) {
        snprintf(err, errcap, "linux.seccomp: the filter needs more than %d BPF instructions", SECCOMP_MAX_INSNS);
        goto out;
    }
    out->insns = insns;
    out->len = e.len;
    insns = NULL;
    rc = 0;
out:
    free(flat);
    free(insns);
    return rc;
}

void seccomp_program_free(struct seccomp_program *p)
{
    free(p->insns);
    memset(p, 0, sizeof *p);
}

int seccomp_install(const struct seccomp_program *p)
{
    if (!p || !p->insns)
        return 0;
    struct sock_fprog prog = { .len = (unsigned short)p->len, .filter = p->insns };
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, p->flags, &prog) < 0)
        return -errno;
    return 0;
}
