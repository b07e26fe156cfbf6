/* Encode/decode of the smolvm.agent.v1 messages (proto/smolvm/agent.proto) the agent uses.
 * Decoders copy strings into malloc'd memory (freed with the matching *_free) and fail on
 * malformed input, wrong wire types and implausible sizes. */
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
};

struct agent_rlimit {
    char *type;
    uint64_t hard;
    uint64_t soft;
};

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
};

struct stdio_streams {
    uint32_t stdin_id;
    uint32_t stdout_id;
    uint32_t stderr_id;
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

int agent_decode_handshake(const uint8_t *data, size_t len, struct handshake_request *out);
int agent_decode_create(const uint8_t *data, size_t len, struct create_container_request *out);
void agent_create_free(struct create_container_request *req);
int agent_decode_exec(const uint8_t *data, size_t len, struct exec_process_request *out);
void agent_exec_free(struct exec_process_request *req);
int agent_decode_resize(const uint8_t *data, size_t len, struct resize_pty_request *out);
void agent_resize_free(struct resize_pty_request *req);
int agent_decode_target(const uint8_t *data, size_t len, struct process_target *out);
void agent_target_free(struct process_target *t);

void agent_encode_handshake_response(pb_writer *w, uint32_t protocol_version,
                                     const char *agent_version, const char *kernel_release,
                                     uint32_t initial_credit, uint32_t max_data_frame,
                                     uint32_t protocol_minor);
/* CreateContainerResponse and StartProcessResponse: { uint32 pid = 1 } */
void agent_encode_pid_response(pb_writer *w, uint32_t pid);
void agent_encode_wait_response(pb_writer *w, uint32_t exit_status, uint64_t exited_at_unix_nano);
/* ListProcessesResponse; exec_ids may be NULL (all ""). */
void agent_encode_list_response(pb_writer *w, const uint32_t *pids, const char *const *exec_ids,
                                size_t n);

#endif
