#include "agent_pb.h"

#include <stdlib.h>
#include <string.h>

/* Appends a decoded string to a NULL-terminated growable list. */
static int list_push_string(pb_reader *r, char ***list, size_t *n)
{
    if (*n >= AGENT_MAX_LIST)
        return -1;
    char *s = NULL;
    if (pb_read_string(r, &s, AGENT_MAX_STRING) < 0)
        return -1;
    char **nl = realloc(*list, (*n + 2) * sizeof **list);
    if (!nl) {
        free(s);
        return -1;
    }
    nl[(*n)++] = s;
    nl[*n] = NULL;
    *list = nl;
    return 0;
}

static void list_free(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

static int read_u32(pb_reader *r, uint32_t wire, uint32_t *out)
{
    uint64_t v;
    if (wire != PB_WIRE_VARINT || pb_read_varint(r, &v) < 0)
        return -1;
    *out = (uint32_t)v; /* proto3 uint32 semantics: truncation */
    return 0;
}

static int read_bool(pb_reader *r, uint32_t wire, bool *out)
{
    uint64_t v;
    if (wire != PB_WIRE_VARINT || pb_read_varint(r, &v) < 0)
        return -1;
    *out = v != 0;
    return 0;
}

static int read_sub(pb_reader *r, uint32_t wire, pb_reader *sub)
{
    const uint8_t *d;
    size_t n;
    if (wire != PB_WIRE_LEN || pb_read_len(r, &d, &n) < 0)
        return -1;
    *sub = pb_reader_make(d, n);
    return 0;
}

int agent_decode_handshake(const uint8_t *data, size_t len, struct handshake_request *out)
{
    memset(out, 0, sizeof *out);
    pb_reader r = pb_reader_make(data, len);
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(&r, &field, &wire)) == 1) {
        uint64_t v;
        switch (field) {
        case 1:
            if (read_u32(&r, wire, &out->protocol_version) < 0)
                return -1;
            break;
        case 2:
            if (wire != PB_WIRE_VARINT || pb_read_varint(&r, &v) < 0)
                return -1;
            out->host_time_unix_nano = v;
            break;
        case 3:
            if (wire != PB_WIRE_LEN || pb_read_len(&r, &out->entropy, &out->entropy_len) < 0)
                return -1;
            break;
        default:
            if (pb_skip(&r, wire) < 0)
                return -1;
        }
    }
    return rc;
}

static int decode_disk_slot(pb_reader *r, struct disk_slot *out)
{
    out->present = true;
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        switch (field) {
        case 1:
            if (wire != PB_WIRE_LEN || pb_read_string(r, &out->serial, 256) < 0)
                return -1;
            break;
        case 2:
            if (wire != PB_WIRE_LEN || pb_read_string(r, &out->fs_type, 64) < 0)
                return -1;
            break;
        case 3:
            if (read_bool(r, wire, &out->read_only) < 0)
                return -1;
            break;
        case 4:
            if (wire != PB_WIRE_VARINT || pb_read_varint(r, &out->size_bytes) < 0)
                return -1;
            break;
        default:
            if (pb_skip(r, wire) < 0)
                return -1;
        }
    }
    return rc;
}

static int decode_user(pb_reader *r, struct agent_process *p)
{
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        switch (field) {
        case 1:
            if (read_u32(r, wire, &p->uid) < 0)
                return -1;
            break;
        case 2:
            if (read_u32(r, wire, &p->gid) < 0)
                return -1;
            break;
        case 3:
            if (wire == PB_WIRE_LEN) { /* packed */
                pb_reader packed;
                if (read_sub(r, wire, &packed) < 0)
                    return -1;
                while (packed.p < packed.end) {
                    uint64_t v;
                    if (p->ngids >= AGENT_MAX_LIST || pb_read_varint(&packed, &v) < 0)
                        return -1;
                    uint32_t *ng = realloc(p->gids, (p->ngids + 1) * sizeof *ng);
                    if (!ng)
                        return -1;
                    p->gids = ng;
                    p->gids[p->ngids++] = (uint32_t)v;
                }
            } else {
                uint32_t g;
                if (p->ngids >= AGENT_MAX_LIST || read_u32(r, wire, &g) < 0)
                    return -1;
                uint32_t *ng = realloc(p->gids, (p->ngids + 1) * sizeof *ng);
                if (!ng)
                    return -1;
                p->gids = ng;
                p->gids[p->ngids++] = g;
            }
            break;
        default:
            if (pb_skip(r, wire) < 0)
                return -1;
        }
    }
    return rc;
}

static int decode_rlimit(pb_reader *r, struct agent_rlimit *out)
{
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        switch (field) {
        case 1:
            if (wire != PB_WIRE_LEN || pb_read_string(r, &out->type, 64) < 0)
                return -1;
            break;
        case 2:
            if (wire != PB_WIRE_VARINT || pb_read_varint(r, &out->hard) < 0)
                return -1;
            break;
        case 3:
            if (wire != PB_WIRE_VARINT || pb_read_varint(r, &out->soft) < 0)
                return -1;
            break;
        default:
            if (pb_skip(r, wire) < 0)
                return -1;
        }
    }
    return rc;
}

static int decode_console_size(pb_reader *r, struct agent_process *p)
{
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        uint32_t *dst = field == 1 ? &p->console_height : field == 2 ? &p->console_width : NULL;
        if (dst) {
            if (read_u32(r, wire, dst) < 0)
                return -1;
        } else if (pb_skip(r, wire) < 0) {
            return -1;
        }
    }
    return rc;
}

static int decode_caps(pb_reader *r, struct agent_caps *caps)
{
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        if (field >= 1 && field <= 5) {
            if (wire != PB_WIRE_LEN || caps->nsets[field - 1] >= 64 ||
                list_push_string(r, &caps->sets[field - 1], &caps->nsets[field - 1]) < 0)
                return -1;
        } else if (pb_skip(r, wire) < 0) {
            return -1;
        }
    }
    return rc;
}

static int decode_process(pb_reader *r, struct agent_process *p)
{
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        pb_reader sub;
        switch (field) {
        case 1:
            if (wire != PB_WIRE_LEN || list_push_string(r, &p->args, &p->nargs) < 0)
                return -1;
            break;
        case 2:
            if (wire != PB_WIRE_LEN || list_push_string(r, &p->env, &p->nenv) < 0)
                return -1;
            break;
        case 3:
            if (wire != PB_WIRE_LEN || pb_read_string(r, &p->cwd, 4096) < 0)
                return -1;
            break;
        case 4:
            if (read_sub(r, wire, &sub) < 0 || decode_user(&sub, p) < 0)
                return -1;
            break;
        case 5:
            if (read_bool(r, wire, &p->terminal) < 0)
                return -1;
            break;
        case 6: {
            if (p->nrlimits >= 64 || read_sub(r, wire, &sub) < 0)
                return -1;
            struct agent_rlimit *nl = realloc(p->rlimits, (p->nrlimits + 1) * sizeof *nl);
            if (!nl)
                return -1;
            p->rlimits = nl;
            memset(&nl[p->nrlimits], 0, sizeof *nl);
            p->nrlimits++; /* counted before decoding so a failure still frees it */
            if (decode_rlimit(&sub, &nl[p->nrlimits - 1]) < 0)
                return -1;
            break;
        }
        case 7:
            if (read_bool(r, wire, &p->no_new_privileges) < 0)
                return -1;
            break;
        case 8:
            p->has_console_size = true;
            if (read_sub(r, wire, &sub) < 0 || decode_console_size(&sub, p) < 0)
                return -1;
            break;
        case 9:
            p->has_caps = true;
            if (read_sub(r, wire, &sub) < 0 || decode_caps(&sub, &p->caps) < 0)
                return -1;
            break;
        case 10:
            p->has_umask = true;
            if (read_u32(r, wire, &p->umask) < 0)
                return -1;
            break;
        default:
            if (pb_skip(r, wire) < 0)
                return -1;
        }
    }
    return rc;
}

static int read_u64(pb_reader *r, uint32_t wire, uint64_t *out)
{
    return wire == PB_WIRE_VARINT ? pb_read_varint(r, out) : -1;
}

static int read_str(pb_reader *r, uint32_t wire, char **out, size_t max)
{
    if (wire != PB_WIRE_LEN)
        return -1;
    free(*out); /* a repeated scalar field: the last one wins */
    *out = NULL;
    return pb_read_string(r, out, max);
}

/* Grows an array of n elements of `size` bytes by one zeroed element; NULL on failure. */
static void *grow(void **arr, size_t *n, size_t size, size_t max)
{
    if (*n >= max)
        return NULL;
    uint8_t *na = realloc(*arr, (*n + 1) * size);
    if (!na)
        return NULL;
    *arr = na;
    memset(na + *n * size, 0, size);
    (*n)++; /* counted before decoding so a failure still frees it */
    return na + (*n - 1) * size;
}

static int decode_host_file(pb_reader *r, struct agent_host_file *f)
{
    f->present = true;
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        int bad;
        switch (field) {
        case 1:
            bad = wire != PB_WIRE_LEN || pb_read_len(r, &f->content, &f->len) < 0;
            break;
        case 2:
            bad = read_u32(r, wire, &f->mode) < 0;
            break;
        case 3:
            bad = read_u32(r, wire, &f->uid) < 0;
            break;
        case 4:
            bad = read_u32(r, wire, &f->gid) < 0;
            break;
        default:
            bad = pb_skip(r, wire) < 0;
        }
        if (bad)
            return -1;
    }
    return rc;
}

static int decode_mount(pb_reader *r, struct agent_mount *m)
{
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        pb_reader sub;
        int bad;
        switch (field) {
        case 1:
            bad = read_str(r, wire, &m->destination, 4096) < 0;
            break;
        case 2:
            bad = read_str(r, wire, &m->type, 64) < 0;
            break;
        case 3:
            bad = read_str(r, wire, &m->source, 4096) < 0;
            break;
        case 4:
            bad = read_u64(r, wire, &m->flags) < 0;
            break;
        case 5:
            bad = read_u64(r, wire, &m->propagation) < 0;
            break;
        case 6:
            bad = read_str(r, wire, &m->data, 4096) < 0;
            break;
        case 7:
            bad = read_bool(r, wire, &m->recursive) < 0;
            break;
        case 8:
            bad = read_sub(r, wire, &sub) < 0 || decode_host_file(&sub, &m->file) < 0;
            break;
        case 9:
            bad = read_str(r, wire, &m->share_tag, 64) < 0;
            break;
        case 10:
            bad = read_str(r, wire, &m->share_subpath, 255) < 0;
            break;
        default:
            bad = pb_skip(r, wire) < 0;
        }
        if (bad)
            return -1;
    }
    return rc;
}

static int decode_mounts(pb_reader *r, struct create_container_request *req)
{
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        if (field == 1) {
            pb_reader sub;
            if (read_sub(r, wire, &sub) < 0)
                return -1;
            struct agent_mount *m = grow((void **)&req->mounts, &req->nmounts, sizeof *m, AGENT_MAX_MOUNTS);
            if (!m || decode_mount(&sub, m) < 0)
                return -1;
        } else if (pb_skip(r, wire) < 0) {
            return -1;
        }
    }
    return rc;
}

static int decode_sysctl(pb_reader *r, struct agent_sysctl *s)
{
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        int bad = field == 1   ? read_str(r, wire, &s->name, 256) < 0
                  : field == 2 ? read_str(r, wire, &s->value, 4096) < 0
                               : pb_skip(r, wire) < 0;
        if (bad)
            return -1;
    }
    return rc;
}

static int decode_seccomp_arg(pb_reader *r, struct agent_seccomp_arg *a)
{
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        int bad;
        switch (field) {
        case 1:
            bad = read_u32(r, wire, &a->index) < 0;
            break;
        case 2:
            bad = read_u64(r, wire, &a->value) < 0;
            break;
        case 3:
            bad = read_u64(r, wire, &a->value_two) < 0;
            break;
        case 4:
            bad = read_str(r, wire, &a->op, 64) < 0;
            break;
        default:
            bad = pb_skip(r, wire) < 0;
        }
        if (bad)
            return -1;
    }
    return rc;
}

static int decode_seccomp_rule(pb_reader *r, struct agent_seccomp_rule *rule)
{
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        pb_reader sub;
        int bad;
        switch (field) {
        case 1:
            bad = wire != PB_WIRE_LEN || rule->nnames >= 1024 || list_push_string(r, &rule->names, &rule->nnames) < 0;
            break;
        case 2:
            bad = read_str(r, wire, &rule->action, 64) < 0;
            break;
        case 3:
            rule->has_errno = true;
            bad = read_u32(r, wire, &rule->errno_ret) < 0;
            break;
        case 4: {
            struct agent_seccomp_arg *a;
            bad = read_sub(r, wire, &sub) < 0 ||
                  !(a = grow((void **)&rule->args, &rule->nargs, sizeof *a, AGENT_MAX_SECCOMP_ARGS)) ||
                  decode_seccomp_arg(&sub, a) < 0;
            break;
        }
        default:
            bad = pb_skip(r, wire) < 0;
        }
        if (bad)
            return -1;
    }
    return rc;
}

static int decode_seccomp(pb_reader *r, struct agent_seccomp *sc)
{
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        pb_reader sub;
        int bad;
        switch (field) {
        case 1:
            bad = read_str(r, wire, &sc->default_action, 64) < 0;
            break;
        case 2:
            sc->has_default_errno = true;
            bad = read_u32(r, wire, &sc->default_errno) < 0;
            break;
        case 3:
            bad = wire != PB_WIRE_LEN || sc->narchitectures >= 64 ||
                  list_push_string(r, &sc->architectures, &sc->narchitectures) < 0;
            break;
        case 4:
            bad = wire != PB_WIRE_LEN || sc->nflags >= 64 || list_push_string(r, &sc->flags, &sc->nflags) < 0;
            break;
        case 5: {
            struct agent_seccomp_rule *rule;
            bad = read_sub(r, wire, &sub) < 0 ||
                  !(rule = grow((void **)&sc->rules, &sc->nrules, sizeof *rule, AGENT_MAX_SECCOMP_RULES)) ||
                  decode_seccomp_rule(&sub, rule) < 0;
            break;
        }
        default:
            bad = pb_skip(r, wire) < 0;
        }
        if (bad)
            return -1;
    }
    return rc;
}

static int decode_linux(pb_reader *r, struct agent_linux *l)
{
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        pb_reader sub;
        int bad;
        switch (field) {
        case 1:
            bad = wire != PB_WIRE_LEN || l->nmasked >= AGENT_MAX_PATHS ||
                  list_push_string(r, &l->masked_paths, &l->nmasked) < 0;
            break;
        case 2:
            bad = wire != PB_WIRE_LEN || l->nreadonly >= AGENT_MAX_PATHS ||
                  list_push_string(r, &l->readonly_paths, &l->nreadonly) < 0;
            break;
        case 3: {
            struct agent_sysctl *sc;
            bad = read_sub(r, wire, &sub) < 0 ||
                  !(sc = grow((void **)&l->sysctls, &l->nsysctls, sizeof *sc, AGENT_MAX_PATHS)) ||
                  decode_sysctl(&sub, sc) < 0;
            break;
        }
        case 4:
            l->has_seccomp = true;
            bad = read_sub(r, wire, &sub) < 0 || decode_seccomp(&sub, &l->seccomp) < 0;
            break;
        default:
            bad = pb_skip(r, wire) < 0;
        }
        if (bad)
            return -1;
    }
    return rc;
}

static int decode_stdio(pb_reader *r, struct stdio_streams *s)
{
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        uint32_t *dst = field == 1 ? &s->stdin_id : field == 2 ? &s->stdout_id : field == 3 ? &s->stderr_id : NULL;
        if (dst) {
            if (read_u32(r, wire, dst) < 0)
                return -1;
        } else if (pb_skip(r, wire) < 0) {
            return -1;
        }
    }
    return rc;
}

/* LinuxResources (protocol 1.3): int64 fields arrive as two's-complement varints. */
static int decode_resources(pb_reader *r, struct agent_resources *res)
{
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        uint64_t v = 0;
        int bad = 0;
        switch (field) {
        case 1:
        case 2:
        case 3:
        case 5:
        case 9:
            bad = read_u64(r, wire, &v) < 0;
            if (field == 1)
                res->has_memory_limit = true, res->memory_limit = (int64_t)v;
            else if (field == 2)
                res->has_memory_reservation = true, res->memory_reservation = (int64_t)v;
            else if (field == 3)
                res->has_memory_swap = true, res->memory_swap = (int64_t)v;
            else if (field == 5)
                res->has_cpu_quota = true, res->cpu_quota = (int64_t)v;
            else
                res->has_pids_limit = true, res->pids_limit = (int64_t)v;
            break;
        case 4:
            res->has_cpu_shares = true;
            bad = read_u64(r, wire, &res->cpu_shares) < 0;
            break;
        case 6:
            res->has_cpu_period = true;
            bad = read_u64(r, wire, &res->cpu_period) < 0;
            break;
        case 7:
            bad = read_str(r, wire, &res->cpuset_cpus, 256) < 0;
            break;
        case 8:
            bad = read_str(r, wire, &res->cpuset_mems, 256) < 0;
            break;
        default:
            bad = pb_skip(r, wire) < 0;
        }
        if (bad)
            return -1;
    }
    return rc;
}

void agent_resources_free(struct agent_resources *r)
{
    free(r->cpuset_cpus);
    free(r->cpuset_mems);
    memset(r, 0, sizeof *r);
}

int agent_decode_create(const uint8_t *data, size_t len, struct create_container_request *out)
{
    memset(out, 0, sizeof *out);
    pb_reader r = pb_reader_make(data, len);
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(&r, &field, &wire)) == 1) {
        pb_reader sub;
        switch (field) {
        case 1:
            if (wire != PB_WIRE_LEN || pb_read_string(&r, &out->container_id, 1024) < 0)
                goto bad;
            break;
        case 2:
        case 3: {
            struct disk_slot *slot = field == 2 ? &out->image : &out->writable;
            if (read_sub(&r, wire, &sub) < 0 || decode_disk_slot(&sub, slot) < 0)
                goto bad;
            break;
        }
        case 4:
            out->has_process = true;
            if (read_sub(&r, wire, &sub) < 0 || decode_process(&sub, &out->process) < 0)
                goto bad;
            break;
        case 5:
            if (read_sub(&r, wire, &sub) < 0 || decode_stdio(&sub, &out->stdio) < 0)
                goto bad;
            break;
        case 6:
            if (wire != PB_WIRE_LEN || pb_read_string(&r, &out->hostname, 1024) < 0)
                goto bad;
            break;
        case 7:
            if (read_bool(&r, wire, &out->readonly_rootfs) < 0)
                goto bad;
            break;
        case 8:
            out->has_linux = true;
            if (read_sub(&r, wire, &sub) < 0 || decode_linux(&sub, &out->linux_sec) < 0)
                goto bad;
            break;
        case 9:
            out->has_mounts = true;
            if (read_sub(&r, wire, &sub) < 0 || decode_mounts(&sub, out) < 0)
                goto bad;
            break;
        case 10:
            out->has_resources = true;
            if (read_sub(&r, wire, &sub) < 0 || decode_resources(&sub, &out->resources) < 0)
                goto bad;
            break;
        default:
            if (pb_skip(&r, wire) < 0)
                goto bad;
        }
    }
    if (rc == 0)
        return 0;
bad:
    agent_create_free(out);
    return -1;
}

static void disk_slot_free(struct disk_slot *s)
{
    free(s->serial);
    free(s->fs_type);
}

static void process_free(struct agent_process *p)
{
    for (int i = 0; i < 5; i++)
        list_free(p->caps.sets[i], p->caps.nsets[i]);
    list_free(p->args, p->nargs);
    list_free(p->env, p->nenv);
    free(p->cwd);
    free(p->gids);
    for (size_t i = 0; i < p->nrlimits; i++)
        free(p->rlimits[i].type);
    free(p->rlimits);
    memset(p, 0, sizeof *p);
}

void agent_seccomp_free(struct agent_seccomp *sc)
{
    free(sc->default_action);
    list_free(sc->architectures, sc->narchitectures);
    list_free(sc->flags, sc->nflags);
    for (size_t i = 0; i < sc->nrules; i++) {
        struct agent_seccomp_rule *rule = &sc->rules[i];
        list_free(rule->names, rule->nnames);
        free(rule->action);
        for (size_t j = 0; j < rule->nargs; j++)
            free(rule->args[j].op);
        free(rule->args);
    }
    free(sc->rules);
    memset(sc, 0, sizeof *sc);
}

static void linux_free(struct agent_linux *l)
{
    list_free(l->masked_paths, l->nmasked);
    list_free(l->readonly_paths, l->nreadonly);
    for (size_t i = 0; i < l->nsysctls; i++) {
        free(l->sysctls[i].name);
        free(l->sysctls[i].value);
    }
    free(l->sysctls);
    agent_seccomp_free(&l->seccomp);
    memset(l, 0, sizeof *l);
}

void agent_create_free(struct create_container_request *req)
{
    linux_free(&req->linux_sec);
    agent_resources_free(&req->resources);
    for (size_t i = 0; i < req->nmounts; i++) {
        struct agent_mount *m = &req->mounts[i];
        free(m->destination);
        free(m->type);
        free(m->source);
        free(m->data);
        free(m->share_tag);
        free(m->share_subpath);
    }
    free(req->mounts);
    free(req->container_id);
    disk_slot_free(&req->image);
    disk_slot_free(&req->writable);
    process_free(&req->process);
    free(req->hostname);
    memset(req, 0, sizeof *req);
}

int agent_decode_exec(const uint8_t *data, size_t len, struct exec_process_request *out)
{
    memset(out, 0, sizeof *out);
    pb_reader r = pb_reader_make(data, len);
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(&r, &field, &wire)) == 1) {
        pb_reader sub;
        switch (field) {
        case 1:
            if (wire != PB_WIRE_LEN || pb_read_string(&r, &out->container_id, 1024) < 0)
                goto bad;
            break;
        case 2:
            if (wire != PB_WIRE_LEN || pb_read_string(&r, &out->exec_id, 1024) < 0)
                goto bad;
            break;
        case 3:
            out->has_process = true;
            if (read_sub(&r, wire, &sub) < 0 || decode_process(&sub, &out->process) < 0)
                goto bad;
            break;
        case 4:
            if (read_sub(&r, wire, &sub) < 0 || decode_stdio(&sub, &out->stdio) < 0)
                goto bad;
            break;
        default:
            if (pb_skip(&r, wire) < 0)
                goto bad;
        }
    }
    if (rc == 0)
        return 0;
bad:
    agent_exec_free(out);
    return -1;
}

void agent_exec_free(struct exec_process_request *req)
{
    free(req->container_id);
    free(req->exec_id);
    process_free(&req->process);
    memset(req, 0, sizeof *req);
}

int agent_decode_resize(const uint8_t *data, size_t len, struct resize_pty_request *out)
{
    memset(out, 0, sizeof *out);
    pb_reader r = pb_reader_make(data, len);
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(&r, &field, &wire)) == 1) {
        int bad = 0;
        switch (field) {
        case 1:
            bad = wire != PB_WIRE_LEN || pb_read_string(&r, &out->container_id, 1024) < 0;
            break;
        case 2:
            bad = wire != PB_WIRE_LEN || pb_read_string(&r, &out->exec_id, 1024) < 0;
            break;
        case 3:
            bad = read_u32(&r, wire, &out->width) < 0;
            break;
        case 4:
            bad = read_u32(&r, wire, &out->height) < 0;
            break;
        default:
            bad = pb_skip(&r, wire) < 0;
        }
        if (bad) {
            rc = -1;
            break;
        }
    }
    if (rc < 0) {
        agent_resize_free(out);
        return -1;
    }
    return 0;
}

void agent_resize_free(struct resize_pty_request *req)
{
    free(req->container_id);
    free(req->exec_id);
    memset(req, 0, sizeof *req);
}

int agent_decode_target(const uint8_t *data, size_t len, struct process_target *out)
{
    memset(out, 0, sizeof *out);
    pb_reader r = pb_reader_make(data, len);
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(&r, &field, &wire)) == 1) {
        int bad = 0;
        switch (field) {
        case 1:
            bad = wire != PB_WIRE_LEN || pb_read_string(&r, &out->container_id, 1024) < 0;
            break;
        case 2:
            bad = wire != PB_WIRE_LEN || pb_read_string(&r, &out->exec_id, 1024) < 0;
            break;
        case 3:
            bad = read_u32(&r, wire, &out->signal) < 0;
            break;
        case 4:
            bad = read_bool(&r, wire, &out->all) < 0;
            break;
        default:
            bad = pb_skip(&r, wire) < 0;
        }
        if (bad) {
            rc = -1;
            break;
        }
    }
    if (rc < 0) {
        agent_target_free(out);
        return -1;
    }
    return 0;
}

void agent_target_free(struct process_target *t)
{
    free(t->container_id);
    free(t->exec_id);
    memset(t, 0, sizeof *t);
}

int agent_decode_update(const uint8_t *data, size_t len, struct update_container_request *out)
{
    memset(out, 0, sizeof *out);
    pb_reader r = pb_reader_make(data, len);
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(&r, &field, &wire)) == 1) {
        pb_reader sub;
        int bad;
        switch (field) {
        case 1:
            bad = read_str(&r, wire, &out->container_id, 1024) < 0;
            break;
        case 2:
            bad = read_sub(&r, wire, &sub) < 0 || decode_resources(&sub, &out->resources) < 0;
            break;
        default:
            bad = pb_skip(&r, wire) < 0;
        }
        if (bad) {
            rc = -1;
            break;
        }
    }
    if (rc < 0) {
        agent_update_free(out);
        return -1;
    }
    return 0;
}

void agent_update_free(struct update_container_request *req)
{
    free(req->container_id);
    agent_resources_free(&req->resources);
    memset(req, 0, sizeof *req);
}

int agent_decode_watch_oom(const uint8_t *data, size_t len, struct watch_oom_request *out)
{
    memset(out, 0, sizeof *out);
    pb_reader r = pb_reader_make(data, len);
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(&r, &field, &wire)) == 1) {
        int bad = field == 1   ? read_str(&r, wire, &out->container_id, 1024) < 0
                  : field == 2 ? read_u64(&r, wire, &out->seen) < 0
                               : pb_skip(&r, wire) < 0;
        if (bad) {
            rc = -1;
            break;
        }
    }
    if (rc < 0) {
        agent_watch_oom_free(out);
        return -1;
    }
    return 0;
}

void agent_watch_oom_free(struct watch_oom_request *req)
{
    free(req->container_id);
    memset(req, 0, sizeof *req);
}

int agent_decode_reseed(const uint8_t *data, size_t len, struct reseed_request *out)
{
    memset(out, 0, sizeof *out);
    pb_reader r = pb_reader_make(data, len);
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(&r, &field, &wire)) == 1) {
        int bad = field == 1   ? (wire != PB_WIRE_LEN || pb_read_len(&r, &out->entropy, &out->entropy_len) < 0)
                  : field == 2 ? read_u64(&r, wire, &out->host_time_unix_nano) < 0
                  : field == 3 ? read_str(&r, wire, &out->hostname, 1024) < 0
                               : pb_skip(&r, wire) < 0;
        if (bad) {
            rc = -1;
            break;
        }
    }
    if (rc < 0) {
        agent_reseed_free(out);
        return -1;
    }
    return 0;
}

void agent_reseed_free(struct reseed_request *req)
{
    free(req->hostname);
    memset(req, 0, sizeof *req);
}

void agent_encode_handshake_response(pb_writer *w, uint32_t protocol_version,
                                     const char *agent_version, const char *kernel_release,
                                     uint32_t initial_credit, uint32_t max_data_frame,
                                     uint32_t protocol_minor)
{
    pb_put_uint_field(w, 1, protocol_version);
    pb_put_string_field(w, 2, agent_version);
    pb_put_string_field(w, 3, kernel_release);
    pb_put_uint_field(w, 4, initial_credit);
    pb_put_uint_field(w, 5, max_data_frame);
    pb_put_uint_field(w, 6, protocol_minor);
}

void agent_encode_pid_response(pb_writer *w, uint32_t pid)
{
    pb_put_uint_field(w, 1, pid);
}

void agent_encode_wait_response(pb_writer *w, uint32_t exit_status, uint64_t exited_at_unix_nano,
                                uint64_t oom_kill)
{
    pb_put_uint_field(w, 1, exit_status);
    pb_put_uint_field(w, 2, exited_at_unix_nano);
    pb_put_uint_field(w, 3, oom_kill);
}

static void put_counters(pb_writer *w, uint32_t field, const struct cgroup_counter *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pb_writer entry;
        pb_writer_init(&entry);
        pb_put_string_field(&entry, 1, c[i].name);
        pb_put_uint_field(&entry, 2, c[i].value);
        pb_put_message_field(w, field, &entry);
        pb_writer_free(&entry);
    }
}

void agent_encode_stats_response(pb_writer *w, const struct container_stats *st)
{
    put_counters(w, 1, st->cpu_stat, st->ncpu_stat);
    put_counters(w, 2, st->memory_stat, st->nmemory_stat);
    put_counters(w, 3, st->memory_events, st->nmemory_events);
    pb_put_uint_field(w, 4, st->memory_current);
    pb_put_uint_field(w, 5, st->memory_max);
    pb_put_uint_field(w, 6, st->memory_swap_current);
    pb_put_uint_field(w, 7, st->memory_swap_max);
    pb_put_uint_field(w, 8, st->pids_current);
    pb_put_uint_field(w, 9, st->pids_max);
    for (size_t i = 0; i < st->nio; i++) {
        const struct io_device_stat *d = &st->io[i];
        pb_writer entry;
        pb_writer_init(&entry);
        pb_put_uint_field(&entry, 1, d->major);
        pb_put_uint_field(&entry, 2, d->minor);
        pb_put_uint_field(&entry, 3, d->rbytes);
        pb_put_uint_field(&entry, 4, d->wbytes);
        pb_put_uint_field(&entry, 5, d->rios);
        pb_put_uint_field(&entry, 6, d->wios);
        pb_put_message_field(w, 10, &entry);
        pb_writer_free(&entry);
    }
    pb_put_uint_field(w, 11, st->memory_peak);
}

void agent_encode_watch_oom_response(pb_writer *w, uint64_t oom_kill, bool removed)
{
    pb_put_uint_field(w, 1, oom_kill);
    pb_put_uint_field(w, 2, removed ? 1 : 0);
}

void agent_encode_reseed_response(pb_writer *w, bool crng_reseeded, uint32_t hwrng_bytes)
{
    pb_put_uint_field(w, 1, crng_reseeded ? 1 : 0);
    pb_put_uint_field(w, 2, hwrng_bytes);
}

void agent_encode_list_response(pb_writer *w, const uint32_t *pids, const char *const *exec_ids,
                                size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pb_writer entry;
        pb_writer_init(&entry);
        pb_put_uint_field(&entry, 1, pids[i]);
        if (exec_ids)
            pb_put_string_field(&entry, 2, exec_ids[i]);
        pb_put_message_field(w, 1, &entry);
        pb_writer_free(&entry);
    }
}
