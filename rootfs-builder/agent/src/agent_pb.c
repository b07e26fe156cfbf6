#include "agent_pb.h"

#include "pb_table.h"

/* The decoders are field tables (pb_table.h) walked by pb_decode / pb_free; the limits below are
 * the agent's refusals of implausible input. */

PB_MESSAGE(disk_slot_msg, struct disk_slot,
           PB_STRING(struct disk_slot, 1, serial, 256),
           PB_STRING(struct disk_slot, 2, fs_type, 64),
           PB_BOOL(struct disk_slot, 3, read_only),
           PB_U64(struct disk_slot, 4, size_bytes));

/* User and ConsoleSize are flattened into agent_process. */
PB_MESSAGE(user_msg, struct agent_process,
           PB_U32(struct agent_process, 1, uid),
           PB_U32(struct agent_process, 2, gid),
           PB_REP_U32(struct agent_process, 3, gids, ngids, AGENT_MAX_LIST));

PB_MESSAGE(console_size_msg, struct agent_process,
           PB_U32(struct agent_process, 1, console_height),
           PB_U32(struct agent_process, 2, console_width));

PB_MESSAGE(rlimit_msg, struct agent_rlimit,
           PB_STRING(struct agent_rlimit, 1, type, 64),
           PB_U64(struct agent_rlimit, 2, hard),
           PB_U64(struct agent_rlimit, 3, soft));

#define CAPSET(n, i) PB_REP_STRING(struct agent_caps, n, sets[i], nsets[i], 64, AGENT_MAX_STRING)
PB_MESSAGE(caps_msg, struct agent_caps,
           CAPSET(1, CAPSET_BOUNDING), CAPSET(2, CAPSET_EFFECTIVE), CAPSET(3, CAPSET_INHERITABLE),
           CAPSET(4, CAPSET_PERMITTED), CAPSET(5, CAPSET_AMBIENT));
#undef CAPSET

PB_MESSAGE(process_msg, struct agent_process,
           PB_REP_STRING(struct agent_process, 1, args, nargs, AGENT_MAX_LIST, AGENT_MAX_STRING),
           PB_REP_STRING(struct agent_process, 2, env, nenv, AGENT_MAX_LIST, AGENT_MAX_STRING),
           PB_STRING(struct agent_process, 3, cwd, 4096),
           PB_MSG_INLINE(struct agent_process, 4, user_msg),
           PB_BOOL(struct agent_process, 5, terminal),
           PB_REP_MSG(struct agent_process, 6, rlimits, nrlimits, struct agent_rlimit, rlimit_msg, 64),
           PB_BOOL(struct agent_process, 7, no_new_privileges),
           PB_MSG_INLINE(struct agent_process, 8, console_size_msg,
                         .has1 = PB_HAS(struct agent_process, has_console_size)),
           PB_MSG(struct agent_process, 9, caps, struct agent_caps, caps_msg,
                  .has1 = PB_HAS(struct agent_process, has_caps)),
           PB_U32(struct agent_process, 10, umask, .has1 = PB_HAS(struct agent_process, has_umask)));

PB_MESSAGE(host_file_msg, struct agent_host_file,
           PB_BYTES(struct agent_host_file, 1, content, len, PB_NO_MAX),
           PB_U32(struct agent_host_file, 2, mode),
           PB_U32(struct agent_host_file, 3, uid),
           PB_U32(struct agent_host_file, 4, gid));

PB_MESSAGE(mount_msg, struct agent_mount,
           PB_STRING(struct agent_mount, 1, destination, 4096),
           PB_STRING(struct agent_mount, 2, type, 64),
           PB_STRING(struct agent_mount, 3, source, 4096),
           PB_U64(struct agent_mount, 4, flags),
           PB_U64(struct agent_mount, 5, propagation),
           PB_STRING(struct agent_mount, 6, data, 4096),
           PB_BOOL(struct agent_mount, 7, recursive),
           PB_MSG(struct agent_mount, 8, file, struct agent_host_file, host_file_msg,
                  .has1 = PB_HAS(struct agent_mount, file.present)),
           PB_STRING(struct agent_mount, 9, share_tag, 64),
           PB_STRING(struct agent_mount, 10, share_subpath, 255));

/* Mounts { repeated Mount mounts = 1; }, flattened into the request. */
PB_MESSAGE(mounts_msg, struct create_container_request,
           PB_REP_MSG(struct create_container_request, 1, mounts, nmounts, struct agent_mount, mount_msg,
                      AGENT_MAX_MOUNTS));

PB_MESSAGE(sysctl_msg, struct agent_sysctl,
           PB_STRING(struct agent_sysctl, 1, name, 256),
           PB_STRING(struct agent_sysctl, 2, value, 4096));

PB_MESSAGE(seccomp_arg_msg, struct agent_seccomp_arg,
           PB_U32(struct agent_seccomp_arg, 1, index),
           PB_U64(struct agent_seccomp_arg, 2, value),
           PB_U64(struct agent_seccomp_arg, 3, value_two),
           PB_STRING(struct agent_seccomp_arg, 4, op, 64));

PB_MESSAGE(seccomp_rule_msg, struct agent_seccomp_rule,
           PB_REP_STRING(struct agent_seccomp_rule, 1, names, nnames, 1024, AGENT_MAX_STRING),
           PB_STRING(struct agent_seccomp_rule, 2, action, 64),
           PB_U32(struct agent_seccomp_rule, 3, errno_ret, .has1 = PB_HAS(struct agent_seccomp_rule, has_errno)),
           PB_REP_MSG(struct agent_seccomp_rule, 4, args, nargs, struct agent_seccomp_arg, seccomp_arg_msg,
                      AGENT_MAX_SECCOMP_ARGS));

PB_MESSAGE(seccomp_msg, struct agent_seccomp,
           PB_STRING(struct agent_seccomp, 1, default_action, 64),
           PB_U32(struct agent_seccomp, 2, default_errno, .has1 = PB_HAS(struct agent_seccomp, has_default_errno)),
           PB_REP_STRING(struct agent_seccomp, 3, architectures, narchitectures, 64, AGENT_MAX_STRING),
           PB_REP_STRING(struct agent_seccomp, 4, flags, nflags, 64, AGENT_MAX_STRING),
           PB_REP_MSG(struct agent_seccomp, 5, rules, nrules, struct agent_seccomp_rule, seccomp_rule_msg,
                      AGENT_MAX_SECCOMP_RULES));

PB_MESSAGE(linux_msg, struct agent_linux,
           PB_REP_STRING(struct agent_linux, 1, masked_paths, nmasked, AGENT_MAX_PATHS, AGENT_MAX_STRING),
           PB_REP_STRING(struct agent_linux, 2, readonly_paths, nreadonly, AGENT_MAX_PATHS, AGENT_MAX_STRING),
           PB_REP_MSG(struct agent_linux, 3, sysctls, nsysctls, struct agent_sysctl, sysctl_msg, AGENT_MAX_PATHS),
           PB_MSG(struct agent_linux, 4, seccomp, struct agent_seccomp, seccomp_msg,
                  .has1 = PB_HAS(struct agent_linux, has_seccomp)));

PB_MESSAGE(stdio_msg, struct stdio_streams,
           PB_U32(struct stdio_streams, 1, stdin_id),
           PB_U32(struct stdio_streams, 2, stdout_id),
           PB_U32(struct stdio_streams, 3, stderr_id));

/* LinuxResources (protocol 1.3): int64 fields arrive as two's-complement varints. */
#define RES(kind, n, m) kind(struct agent_resources, n, m, .has1 = PB_HAS(struct agent_resources, has_##m))
PB_MESSAGE(resources_msg, struct agent_resources,
           RES(PB_I64, 1, memory_limit), RES(PB_I64, 2, memory_reservation), RES(PB_I64, 3, memory_swap),
           RES(PB_U64, 4, cpu_shares), RES(PB_I64, 5, cpu_quota), RES(PB_U64, 6, cpu_period),
           PB_STRING(struct agent_resources, 7, cpuset_cpus, 256),
           PB_STRING(struct agent_resources, 8, cpuset_mems, 256),
           RES(PB_I64, 9, pids_limit));
#undef RES

PB_MESSAGE(handshake_msg, struct handshake_request,
           PB_U32(struct handshake_request, 1, protocol_version),
           PB_U64(struct handshake_request, 2, host_time_unix_nano),
           PB_BYTES(struct handshake_request, 3, entropy, entropy_len, PB_NO_MAX));

PB_MESSAGE(create_msg, struct create_container_request,
           PB_STRING(struct create_container_request, 1, container_id, 1024),
           PB_MSG(struct create_container_request, 2, image, struct disk_slot, disk_slot_msg,
                  .has1 = PB_HAS(struct create_container_request, image.present)),
           PB_MSG(struct create_container_request, 3, writable, struct disk_slot, disk_slot_msg,
                  .has1 = PB_HAS(struct create_container_request, writable.present)),
           PB_MSG(struct create_container_request, 4, process, struct agent_process, process_msg,
                  .has1 = PB_HAS(struct create_container_request, has_process)),
           PB_MSG(struct create_container_request, 5, stdio, struct stdio_streams, stdio_msg),
           PB_STRING(struct create_container_request, 6, hostname, 1024),
           PB_BOOL(struct create_container_request, 7, readonly_rootfs),
           PB_MSG(struct create_container_request, 8, linux_sec, struct agent_linux, linux_msg,
                  .has1 = PB_HAS(struct create_container_request, has_linux)),
           PB_MSG_INLINE(struct create_container_request, 9, mounts_msg,
                         .has1 = PB_HAS(struct create_container_request, has_mounts)),
           PB_MSG(struct create_container_request, 10, resources, struct agent_resources, resources_msg,
                  .has1 = PB_HAS(struct create_container_request, has_resources)));

PB_MESSAGE(exec_msg, struct exec_process_request,
           PB_STRING(struct exec_process_request, 1, container_id, 1024),
           PB_STRING(struct exec_process_request, 2, exec_id, 1024),
           PB_MSG(struct exec_process_request, 3, process, struct agent_process, process_msg,
                  .has1 = PB_HAS(struct exec_process_request, has_process)),
           PB_MSG(struct exec_process_request, 4, stdio, struct stdio_streams, stdio_msg));

PB_MESSAGE(resize_msg, struct resize_pty_request,
           PB_STRING(struct resize_pty_request, 1, container_id, 1024),
           PB_STRING(struct resize_pty_request, 2, exec_id, 1024),
           PB_U32(struct resize_pty_request, 3, width),
           PB_U32(struct resize_pty_request, 4, height));

PB_MESSAGE(target_msg, struct process_target,
           PB_STRING(struct process_target, 1, container_id, 1024),
           PB_STRING(struct process_target, 2, exec_id, 1024),
           PB_U32(struct process_target, 3, signal),
           PB_BOOL(struct process_target, 4, all));

PB_MESSAGE(update_msg, struct update_container_request,
           PB_STRING(struct update_container_request, 1, container_id, 1024),
           PB_MSG(struct update_container_request, 2, resources, struct agent_resources, resources_msg));

PB_MESSAGE(watch_oom_msg, struct watch_oom_request,
           PB_STRING(struct watch_oom_request, 1, container_id, 1024),
           PB_U64(struct watch_oom_request, 2, seen));

PB_MESSAGE(reseed_msg, struct reseed_request,
           PB_BYTES(struct reseed_request, 1, entropy, entropy_len, PB_NO_MAX),
           PB_U64(struct reseed_request, 2, host_time_unix_nano),
           PB_STRING(struct reseed_request, 3, hostname, 1024));

/* The public decode/free pairs: `decode` fills *out (zeroed and freed again on failure). */
#define AGENT_CODEC(decode, free_fn, T, msg)                                  \
    int decode(const uint8_t *data, size_t len, T *out)                       \
    {                                                                         \
        return pb_decode(&msg, data, len, out);                               \
    }                                                                         \
    void free_fn(T *obj)                                                      \
    {                                                                         \
        pb_free(&msg, obj);                                                   \
    }

AGENT_CODEC(agent_decode_create, agent_create_free, struct create_container_request, create_msg)
AGENT_CODEC(agent_decode_exec, agent_exec_free, struct exec_process_request, exec_msg)
AGENT_CODEC(agent_decode_resize, agent_resize_free, struct resize_pty_request, resize_msg)
AGENT_CODEC(agent_decode_target, agent_target_free, struct process_target, target_msg)
AGENT_CODEC(agent_decode_update, agent_update_free, struct update_container_request, update_msg)
AGENT_CODEC(agent_decode_watch_oom, agent_watch_oom_free, struct watch_oom_request, watch_oom_msg)
AGENT_CODEC(agent_decode_reseed, agent_reseed_free, struct reseed_request, reseed_msg)

int agent_decode_handshake(const uint8_t *data, size_t len, struct handshake_request *out)
{
    return pb_decode(&handshake_msg, data, len, out); /* nothing to free: entropy is a view */
}

void agent_seccomp_free(struct agent_seccomp *sc)
{
    pb_free(&seccomp_msg, sc);
}

void agent_resources_free(struct agent_resources *r)
{
    pb_free(&resources_msg, r);
}

/* Every table above, for pb_msg_check in the tests. */
const struct pb_msg *const agent_pb_tables[] = {
    &handshake_msg, &create_msg, &exec_msg,      &resize_msg,
    &target_msg,    &update_msg, &watch_oom_msg, &reseed_msg,
};
const size_t agent_pb_ntables = sizeof agent_pb_tables / sizeof agent_pb_tables[0];

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
