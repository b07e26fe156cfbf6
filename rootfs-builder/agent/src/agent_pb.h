/* Encode/decode of the smolvm.agent.v1 messages (proto/smolvm/agent.proto) the agent uses.
 * Decoders are field tables (agent_pb.c) run by pb_decode (pb_table.h); they copy strings into
 * malloc'd memory (freed with the matching *_free) and fail on malformed input, wrong wire
 * types and implausible sizes. */
#ifndef SMOLVM_AGENT_PB_H
#define SMOLVM_AGENT_PB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pb.h"

#define AGENT_MAX_STRING 65536   /* one arg, env entry, path... */
#define AGENT_MAX_LIST 8192      /* args, env, gids, rlimits */

struct handshake_request {
    uint32_t protocol_version;
    uint64_t host_time_unix_nano;
    const uint8_t *entropy; /* points into the request payload */
    size_t entropy_len;
};

struct disk_slot {
    bool present;
    char *serial;
    char *fs_type;
    bool read_only;
    uint64_t size_bytes; /* 0: not given (mount at once) */
};

struct agent_rlimit {
    char *type;
    uint64_t hard;
    uint64_t soft;
};

/* Capability sets as names (protocol 1.2); mapped to numbers by security.c. */
struct agent_caps {
    char **sets[5]; /* bounding, effective, inheritable, permitted, ambient; NULL-terminated */
    size_t nsets[5];
};
enum { CAPSET_BOUNDING, CAPSET_EFFECTIVE, CAPSET_INHERITABLE, CAPSET_PERMITTED, CAPSET_AMBIENT };

struct agent_process {
    char **args; /* NULL-terminated */
    size_t nargs;
    char **env; /* NULL-terminated */
    size_t nenv;
    char *cwd;
    uint32_t uid;
    uint32_t gid;
    uint32_t *gids;
    size_t ngids;
    bool terminal;
    struct agent_rlimit *rlimits;
    size_t nrlimits;
    bool no_new_privileges;
    bool has_console_size;
    uint32_t console_height;
    uint32_t console_width;
    bool has_caps;
    struct agent_caps caps;
    bool has_umask;
    uint32_t umask;
};

#define AGENT_MAX_MOUNTS 256
#define AGENT_MAX_PATHS 1024      /* masked / read-only paths, sysctls */
#define AGENT_MAX_SECCOMP_RULES 4096
#define AGENT_MAX_SECCOMP_ARGS 6

struct agent_host_file {
    bool present;
    const uint8_t *content; /* points into the request payload (valid during the request) */
    size_t len;
    uint32_t mode;
    uint32_t uid;
    uint32_t gid;
};

struct agent_mount {
    char *destination;
    char *type;
    char *source;
    uint64_t flags;
    uint64_t propagation;
    char *data;
    bool recursive;
    struct agent_host_file file;
    char *share_tag; /* NULL: not a 9p share */
    char *share_subpath; /* NULL: not in the VM's one 9p share; else relative to its root */
};

struct agent_sysctl {
    char *name;
    char *value;
};

struct agent_seccomp_arg {
    uint32_t index;
    uint64_t value;
    uint64_t value_two;
    char *op;
};

struct agent_seccomp_rule {
    char **names; /* NULL-terminated */
    size_t nnames;
    char *action;
    bool has_errno;
    uint32_t errno_ret;
    struct agent_seccomp_arg *args;
    size_t nargs;
};

struct agent_seccomp {
    char *default_action;
    bool has_default_errno;
    uint32_t default_errno;
    char **architectures;
    size_t narchitectures;
    char **flags;
    size_t nflags;
    struct agent_seccomp_rule *rules;
    size_t nrules;
};

struct agent_linux {
    char **masked_paths;
    size_t nmasked;
    char **readonly_paths;
    size_t nreadonly;
    struct agent_sysctl *sysctls;
    size_t nsysctls;
    bool has_seccomp;
    struct agent_seccomp seccomp;
};

struct stdio_streams {
    uint32_t stdin_id;
    uint32_t stdout_id;
    uint32_t stderr_id;
};

/* linux.resources (protocol 1.3), in the spec's units; has_* false = not set. */
struct agent_resources {
    bool has_memory_limit, has_memory_reservation, has_memory_swap;
    int64_t memory_limit, memory_reservation, memory_swap;
    bool has_cpu_shares, has_cpu_quota, has_cpu_period;
    uint64_t cpu_shares;
    int64_t cpu_quota;
    uint64_t cpu_period;
    char *cpuset_cpus; /* NULL: not set */
    char *cpuset_mems;
    bool has_pids_limit;
    int64_t pids_limit;
};

struct update_container_request {
    char *container_id;
    struct agent_resources resources;
};

struct watch_oom_request {
    char *container_id;
    uint64_t seen;
};

/* One "name value" counter of a flat-keyed cgroup file. */
struct cgroup_counter {
    char name[48];
    uint64_t value;
};

struct io_device_stat {
    uint32_t major, minor;
    uint64_t rbytes, wbytes, rios, wios;
};

#define STATS_MAX_COUNTERS 96
#define STATS_MAX_IO_DEVICES 32

/* StatsContainerResponse; limits of "max" are UINT64_MAX. */
struct container_stats {
    struct cgroup_counter cpu_stat[16];
    size_t ncpu_stat;
    struct cgroup_counter memory_stat[STATS_MAX_COUNTERS];
    size_t nmemory_stat;
    struct cgroup_counter memory_events[16];
    size_t nmemory_events;
    uint64_t memory_current, memory_max, memory_swap_current, memory_swap_max, memory_peak;
    uint64_t pids_current, pids_max;
    struct io_device_stat io[STATS_MAX_IO_DEVICES];
    size_t nio;
};

struct create_container_request {
    char *container_id;
    struct disk_slot image;
    struct disk_slot writable;
    bool has_process;
    struct agent_process process;
    struct stdio_streams stdio;
    char *hostname;
    bool readonly_rootfs;
    bool has_linux;
    struct agent_linux linux_sec;
    bool has_mounts;
    struct agent_mount *mounts;
    size_t nmounts;
    bool has_resources;
    struct agent_resources resources;
};

struct exec_process_request {
    char *container_id;
    char *exec_id;
    bool has_process;
    struct agent_process process;
    struct stdio_streams stdio;
};

struct resize_pty_request {
    char *container_id;
    char *exec_id;
    uint32_t width;
    uint32_t height;
};

/* StartProcess, WaitProcess, SignalProcess, CloseStdin, ListProcesses, RemoveContainer and
 * RemoveProcess share their field layout: 1 container_id, 2 exec_id, 3 signal, 4 all. Fields a message
 * does not define are never sent by a conforming host and are ignored by the handlers. */
struct process_target {
    char *container_id;
    char *exec_id;
    uint32_t signal;
    bool all;
};

/* ReseedRequest (clone safety after a template restore, see reseed.h). */
struct reseed_request {
    const uint8_t *entropy; /* points into the request payload */
    size_t entropy_len;
    uint64_t host_time_unix_nano;
    char *hostname; /* NULL when absent */
};

/* Each decoder zeroes *out first; on failure (-1) everything is freed and *out is zeroed again. */
int agent_decode_handshake(const uint8_t *data, size_t len, struct handshake_request *out);
int agent_decode_reseed(const uint8_t *data, size_t len, struct reseed_request *out);
void agent_reseed_free(struct reseed_request *req);
int agent_decode_create(const uint8_t *data, size_t len, struct create_container_request *out);
void agent_create_free(struct create_container_request *req);
void agent_seccomp_free(struct agent_seccomp *sc);
int agent_decode_exec(const uint8_t *data, size_t len, struct exec_process_request *out);
void agent_exec_free(struct exec_process_request *req);
int agent_decode_resize(const uint8_t *data, size_t len, struct resize_pty_request *out);
void agent_resize_free(struct resize_pty_request *req);
int agent_decode_target(const uint8_t *data, size_t len, struct process_target *out);
void agent_target_free(struct process_target *t);
int agent_decode_update(const uint8_t *data, size_t len, struct update_container_request *out);
void agent_update_free(struct update_container_request *req);
void agent_resources_free(struct agent_resources *r);
int agent_decode_watch_oom(const uint8_t *data, size_t len, struct watch_oom_request *out);
void agent_watch_oom_free(struct watch_oom_request *req);

/* The decoders' field tables (pb_table.h), for pb_msg_check in the tests. */
struct pb_msg;
extern const struct pb_msg *const agent_pb_tables[];
extern const size_t agent_pb_ntables;

void agent_encode_handshake_response(pb_writer *w, uint32_t protocol_version,
                                     const char *agent_version, const char *kernel_release,
                                     uint32_t initial_credit, uint32_t max_data_frame,
                                     uint32_t protocol_minor);
/* CreateContainerResponse and StartProcessResponse: { uint32 pid = 1 } */
void agent_encode_pid_response(pb_writer *w, uint32_t pid);
void agent_encode_wait_response(pb_writer *w, uint32_t exit_status, uint64_t exited_at_unix_nano,
                                uint64_t oom_kill);
void agent_encode_stats_response(pb_writer *w, const struct container_stats *st);
void agent_encode_watch_oom_response(pb_writer *w, uint64_t oom_kill, bool removed);
void agent_encode_reseed_response(pb_writer *w, bool crng_reseeded, uint32_t hwrng_bytes);
/* ListProcessesResponse; exec_ids may be NULL (all ""). */
void agent_encode_list_response(pb_writer *w, const uint32_t *pids, const char *const *exec_ids,
                                size_t n);

#endif
