/* Host-side unit tests of the agent's parsers (pb.c, ttrpc.c, agent_pb.c): malformed,
 * truncated and oversized input must be rejected cleanly (run under ASan/UBSan). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "agent_pb.h"
#include "pb.h"
#include "pb_table.h"
#include "security.h"
#include "ttrpc.h"

#include "check.h"

static void test_varint(void)
{
    uint64_t v;
    const uint8_t one[] = { 0x01 };
    pb_reader r = pb_reader_make(one, sizeof one);
    CHECK(pb_read_varint(&r, &v) == 0 && v == 1 && r.p == r.end);

    const uint8_t max[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
    r = pb_reader_make(max, sizeof max);
    CHECK(pb_read_varint(&r, &v) == 0 && v == UINT64_MAX);

    const uint8_t too_big[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02 };
    r = pb_reader_make(too_big, sizeof too_big);
    CHECK(pb_read_varint(&r, &v) < 0);

    const uint8_t overlong[] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00 };
    r = pb_reader_make(overlong, sizeof overlong);
    CHECK(pb_read_varint(&r, &v) < 0);

    const uint8_t truncated[] = { 0x80, 0x80 };
    r = pb_reader_make(truncated, sizeof truncated);
    CHECK(pb_read_varint(&r, &v) < 0);

    r = pb_reader_make(NULL, 0);
    CHECK(pb_read_varint(&r, &v) < 0);
}

static void test_tags_and_skip(void)
{
    uint32_t f, w;
    const uint8_t field0[] = { 0x00, 0x01 };
    pb_reader r = pb_reader_make(field0, sizeof field0);
    CHECK(pb_read_tag(&r, &f, &w) < 0);

    r = pb_reader_make(NULL, 0);
    CHECK(pb_read_tag(&r, &f, &w) == 0);

    for (uint32_t wire = 0; wire < 8; wire++) {
        uint8_t msg[16] = { (uint8_t)(1 << 3 | wire), 0x01, 0, 0, 0, 0, 0, 0, 0, 0 };
        r = pb_reader_make(msg, 10);
        CHECK(pb_read_tag(&r, &f, &w) == 1 && f == 1 && w == wire);
        int rc = pb_skip(&r, w);
        if (wire == 3 || wire == 4 || wire == 6 || wire == 7)
            CHECK(rc < 0);
        else
            CHECK(rc == 0);
    }
    /* Fixed-width fields cut short. */
    const uint8_t i64_short[] = { 1 << 3 | 1, 1, 2, 3 };
    r = pb_reader_make(i64_short, sizeof i64_short);
    CHECK(pb_read_tag(&r, &f, &w) == 1 && pb_skip(&r, w) < 0);
    const uint8_t i32_short[] = { 1 << 3 | 5, 1, 2 };
    r = pb_reader_make(i32_short, sizeof i32_short);
    CHECK(pb_read_tag(&r, &f, &w) == 1 && pb_skip(&r, w) < 0);
}

static void test_len_and_string(void)
{
    const uint8_t *d;
    size_t n;
    const uint8_t past_end[] = { 0x05, 'a', 'b' };
    pb_reader r = pb_reader_make(past_end, sizeof past_end);
    CHECK(pb_read_len(&r, &d, &n) < 0);

    /* A length near 2^64 must not wrap the pointer arithmetic. */
    const uint8_t huge[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 'x' };
    r = pb_reader_make(huge, sizeof huge);
    CHECK(pb_read_len(&r, &d, &n) < 0);

    char *s = NULL;
    const uint8_t ok[] = { 0x03, 'a', 'b', 'c' };
    r = pb_reader_make(ok, sizeof ok);
    CHECK(pb_read_string(&r, &s, 16) == 0 && s && strcmp(s, "abc") == 0);
    free(s);
    s = NULL;

    const uint8_t nul[] = { 0x03, 'a', 0, 'c' };
    r = pb_reader_make(nul, sizeof nul);
    CHECK(pb_read_string(&r, &s, 16) < 0 && s == NULL);

    r = pb_reader_make(ok, sizeof ok);
    CHECK(pb_read_string(&r, &s, 2) < 0 && s == NULL); /* too long */
}

static void test_writer(void)
{
    pb_writer w;
    pb_writer_init(&w);
    pb_put_uint_field(&w, 1, 0); /* omitted */
    pb_put_uint_field(&w, 2, 300);
    pb_put_string_field(&w, 3, "hi");
    pb_put_string_field(&w, 4, "");
    pb_put_uint_field(&w, 5, UINT64_MAX);
    CHECK(!w.failed);
    const uint8_t want[] = { 0x10, 0xac, 0x02, 0x1a, 0x02, 'h', 'i', 0x28, 0xff, 0xff, 0xff, 0xff, 0xff,
                             0xff, 0xff, 0xff, 0xff, 0x01 };
    CHECK(w.len == sizeof want && memcmp(w.buf, want, sizeof want) == 0);
    pb_writer_free(&w);
}

/* ---- frame reader ---- */

struct collected {
    int frames;
    int oversized;
    uint32_t last_sid;
    uint8_t last_type, last_flags;
    uint32_t last_len;
    uint8_t last_payload[64];
    uint32_t oversized_len;
};

static void on_frame(void *ctx, const struct ttrpc_frame *f)
{
    struct collected *c = ctx;
    c->frames++;
    c->last_sid = f->stream_id;
    c->last_type = f->type;
    c->last_flags = f->flags;
    c->last_len = f->len;
    memcpy(c->last_payload, f->payload, f->len < sizeof c->last_payload ? f->len : sizeof c->last_payload);
}

static void on_oversized(void *ctx, uint32_t sid, uint8_t type, uint32_t len)
{
    struct collected *c = ctx;
    c->oversized++;
    c->last_sid = sid;
    c->oversized_len = len;
}

static const struct ttrpc_reader_ops ops = { on_frame, on_oversized };

static size_t frame(uint8_t *out, uint32_t sid, uint8_t type, uint8_t flags, const char *payload, uint32_t len)
{
    ttrpc_put_header(out, len, sid, type, flags);
    memcpy(out + TTRPC_HEADER_LEN, payload, len);
    return TTRPC_HEADER_LEN + len;
}

static void test_reader(void)
{
    struct ttrpc_reader r;
    struct collected c;
    uint8_t buf[256];

    /* Byte by byte. */
    ttrpc_reader_init(&r, 64);
    memset(&c, 0, sizeof c);
    size_t n = frame(buf, 7, TTRPC_REQUEST, 0, "hello", 5);
    for (size_t i = 0; i < n; i++)
        CHECK(ttrpc_reader_push(&r, buf + i, 1, &ops, &c) == 0);
    CHECK(c.frames == 1 && c.last_sid == 7 && c.last_type == 1 && c.last_len == 5 &&
          memcmp(c.last_payload, "hello", 5) == 0);

    /* Several frames in one push, including an empty one. */
    memset(&c, 0, sizeof c);
    n = frame(buf, 1, TTRPC_REQUEST, 0, "a", 1);
    n += frame(buf + n, 2, TTRPC_DATA, TTRPC_FLAG_REMOTE_CLOSED | TTRPC_FLAG_NO_DATA, "", 0);
    n += frame(buf + n, 3, TTRPC_REQUEST, 0, "xyz", 3);
    CHECK(ttrpc_reader_push(&r, buf, n, &ops, &c) == 0);
    CHECK(c.frames == 3 && c.last_sid == 3 && c.last_len == 3);

    /* Truncated: a header without its payload yields nothing. */
    memset(&c, 0, sizeof c);
    n = frame(buf, 5, TTRPC_REQUEST, 0, "abcdef", 6);
    CHECK(ttrpc_reader_push(&r, buf, n - 2, &ops, &c) == 0 && c.frames == 0);
    ttrpc_reader_reset(&r); /* a new connection drops the partial frame */
    n = frame(buf, 9, TTRPC_REQUEST, 0, "ok", 2);
    CHECK(ttrpc_reader_push(&r, buf, n, &ops, &c) == 0 && c.frames == 1 && c.last_sid == 9);

    /* Oversized: skipped without allocation, stream stays in sync. */
    memset(&c, 0, sizeof c);
    uint8_t hdr[TTRPC_HEADER_LEN];
    ttrpc_put_header(hdr, 100, 11, TTRPC_REQUEST, 0);
    CHECK(ttrpc_reader_push(&r, hdr, sizeof hdr, &ops, &c) == 0);
    uint8_t junk[100];
    memset(junk, 0xee, sizeof junk);
    CHECK(ttrpc_reader_push(&r, junk, 60, &ops, &c) == 0 && c.oversized == 0);
    n = frame(buf, 13, TTRPC_REQUEST, 0, "next", 4);
    memcpy(junk + 60, buf, 0);
    uint8_t tail[200];
    memcpy(tail, junk + 60, 40);
    memcpy(tail + 40, buf, n);
    CHECK(ttrpc_reader_push(&r, tail, 40 + n, &ops, &c) == 0);
    CHECK(c.oversized == 1 && c.oversized_len == 100 && c.frames == 1 && c.last_sid == 13 &&
          memcmp(c.last_payload, "next", 4) == 0);

    /* A 4 GiB length claim is skipped, never allocated. */
    memset(&c, 0, sizeof c);
    ttrpc_put_header(hdr, 0xffffffffu, 15, TTRPC_REQUEST, 0);
    CHECK(ttrpc_reader_push(&r, hdr, sizeof hdr, &ops, &c) == 0 && r.payload == NULL);
    ttrpc_reader_reset(&r);
    ttrpc_reader_reset(&r);
}

static void test_request(void)
{
    struct ttrpc_request req;
    pb_writer w;
    pb_writer_init(&w);
    pb_put_string_field(&w, 1, "smolvm.agent.v1.Agent");
    pb_put_string_field(&w, 2, "Handshake");
    pb_put_bytes_field(&w, 3, "\x08\x01", 2);
    pb_put_uint_field(&w, 4, 5000000000ull);
    /* metadata (5) and an unknown field (99) are skipped */
    pb_writer kv;
    pb_writer_init(&kv);
    pb_put_string_field(&kv, 1, "k");
    pb_put_message_field(&w, 5, &kv);
    pb_writer_free(&kv);
    pb_put_uint_field(&w, 99, 1);
    CHECK(ttrpc_decode_request(w.buf, w.len, &req) == 0);
    CHECK(req.service_len == 21 && memcmp(req.service, "smolvm.agent.v1.Agent", 21) == 0);
    CHECK(req.method_len == 9 && req.payload_len == 2 && req.timeout_nano == 5000000000ll);
    /* Every truncation either fails or decodes a prefix; none reads out of bounds. */
    for (size_t cut = 0; cut < w.len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, w.buf, cut);
        (void)ttrpc_decode_request(copy, cut, &req);
        free(copy);
    }
    pb_writer_free(&w);

    const uint8_t wrong_wire[] = { 0x08, 0x01 }; /* service as a varint */
    CHECK(ttrpc_decode_request(wrong_wire, sizeof wrong_wire, &req) < 0);
    const uint8_t cut_string[] = { 0x0a, 0x05, 'a' };
    CHECK(ttrpc_decode_request(cut_string, sizeof cut_string, &req) < 0);

    /* Response: status present only for errors. */
    pb_writer_init(&w);
    ttrpc_encode_response(&w, 5, "not found", NULL, 0);
    pb_reader r = pb_reader_make(w.buf, w.len);
    uint32_t f, wt;
    const uint8_t *d;
    size_t n;
    CHECK(pb_read_tag(&r, &f, &wt) == 1 && f == 1 && wt == PB_WIRE_LEN && pb_read_len(&r, &d, &n) == 0);
    pb_reader st = pb_reader_make(d, n);
    uint64_t code;
    CHECK(pb_read_tag(&st, &f, &wt) == 1 && f == 1 && pb_read_varint(&st, &code) == 0 && code == 5);
    pb_writer_free(&w);
    pb_writer_init(&w);
    ttrpc_encode_response(&w, 0, NULL, (const uint8_t *)"\x08\x01", 2);
    CHECK(w.len == 4 && w.buf[0] == 0x12);
    pb_writer_free(&w);
}

static void build_create(pb_writer *w)
{
    pb_writer slot, proc, user, rl, stdio;
    pb_writer_init(w);
    pb_put_string_field(w, 1, "c1");
    pb_writer_init(&slot);
    pb_put_string_field(&slot, 1, "slot0");
    pb_put_string_field(&slot, 2, "erofs");
    pb_put_uint_field(&slot, 3, 1);
    pb_put_message_field(w, 2, &slot);
    pb_writer_free(&slot);
    pb_writer_init(&proc);
    pb_put_string_field(&proc, 1, "sh");
    pb_put_string_field(&proc, 1, "-c");
    pb_put_string_field(&proc, 1, "echo hi");
    pb_put_string_field(&proc, 2, "PATH=/bin");
    pb_put_string_field(&proc, 3, "/tmp");
    pb_writer_init(&user);
    pb_put_uint_field(&user, 1, 1000);
    pb_put_uint_field(&user, 2, 100);
    pb_put_bytes_field(&user, 3, "\x0a\x0b", 2); /* packed gids 10, 11 */
    pb_put_uint_field(&user, 3, 12);             /* and one unpacked */
    pb_put_message_field(&proc, 4, &user);
    pb_writer_free(&user);
    pb_writer_init(&rl);
    pb_put_string_field(&rl, 1, "RLIMIT_NOFILE");
    pb_put_uint_field(&rl, 2, 1024);
    pb_put_uint_field(&rl, 3, 512);
    pb_put_message_field(&proc, 6, &rl);
    pb_writer_free(&rl);
    pb_put_message_field(w, 4, &proc);
    pb_writer_free(&proc);
    pb_writer_init(&stdio);
    pb_put_uint_field(&stdio, 1, 2);
    pb_put_uint_field(&stdio, 2, 4);
    pb_put_uint_field(&stdio, 3, 6);
    pb_put_message_field(w, 5, &stdio);
    pb_writer_free(&stdio);
    pb_put_string_field(w, 6, "host");
    pb_put_uint_field(w, 7, 1);
}

static void test_create(void)
{
    pb_writer w;
    build_create(&w);
    struct create_container_request req;
    CHECK(agent_decode_create(w.buf, w.len, &req) == 0);
    CHECK(strcmp(req.container_id, "c1") == 0 && req.image.present && !req.writable.present);
    CHECK(strcmp(req.image.serial, "slot0") == 0 && strcmp(req.image.fs_type, "erofs") == 0 && req.image.read_only);
    CHECK(req.process.nargs == 3 && strcmp(req.process.args[2], "echo hi") == 0 && req.process.args[3] == NULL);
    CHECK(req.process.nenv == 1 && req.process.env[1] == NULL && strcmp(req.process.cwd, "/tmp") == 0);
    CHECK(req.process.uid == 1000 && req.process.gid == 100 && req.process.ngids == 3 && req.process.gids[2] == 12);
    CHECK(req.process.nrlimits == 1 && req.process.rlimits[0].hard == 1024 && req.process.rlimits[0].soft == 512);
    CHECK(req.stdio.stdin_id == 2 && req.stdio.stdout_id == 4 && req.stdio.stderr_id == 6);
    CHECK(strcmp(req.hostname, "host") == 0 && req.readonly_rootfs);
    agent_create_free(&req);

    /* Every truncation: no leak (ASan), no overread; most fail. */
    int failed = 0;
    for (size_t cut = 0; cut < w.len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, w.buf, cut);
        if (agent_decode_create(copy, cut, &req) < 0)
            failed++;
        else
            agent_create_free(&req);
        free(copy);
    }
    CHECK(failed > 0);
    /* Single-byte corruptions everywhere. */
    for (size_t i = 0; i < w.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            uint8_t *copy = malloc(w.len);
            memcpy(copy, w.buf, w.len);
            copy[i] ^= (uint8_t)(1 << bit);
            if (agent_decode_create(copy, w.len, &req) == 0)
                agent_create_free(&req);
            free(copy);
        }
    }
    pb_writer_free(&w);
}

/* A CreateContainerRequest with the protocol 1.2 fields: capabilities, umask, linux, mounts. */
static void build_create_oci(pb_writer *w)
{
    pb_writer slot, proc, caps, lin, sc, rule, arg, mounts, mount, file, sysctl;
    pb_writer_init(w);
    pb_put_string_field(w, 1, "oci");
    pb_writer_init(&slot);
    pb_put_string_field(&slot, 1, "slot0");
    pb_put_message_field(w, 2, &slot);
    pb_writer_free(&slot);
    pb_writer_init(&proc);
    pb_put_string_field(&proc, 1, "true");
    pb_writer_init(&caps);
    pb_put_string_field(&caps, 1, "CAP_CHOWN");
    pb_put_string_field(&caps, 1, "CAP_KILL");
    pb_put_string_field(&caps, 5, "CAP_KILL");
    pb_put_message_field(&proc, 9, &caps);
    pb_writer_free(&caps);
    pb_put_tag(&proc, 10, PB_WIRE_VARINT); /* umask 0: present even though zero */
    pb_put_varint(&proc, 0);
    pb_put_message_field(w, 4, &proc);
    pb_writer_free(&proc);

    pb_writer_init(&lin);
    pb_put_string_field(&lin, 1, "/proc/kcore");
    pb_put_string_field(&lin, 2, "/proc/sys");
    pb_writer_init(&sysctl);
    pb_put_string_field(&sysctl, 1, "net.ipv4.ip_forward");
    pb_put_string_field(&sysctl, 2, "1");
    pb_put_message_field(&lin, 3, &sysctl);
    pb_writer_free(&sysctl);
    pb_writer_init(&sc);
    pb_put_string_field(&sc, 1, "SCMP_ACT_ERRNO");
    pb_put_uint_field(&sc, 2, 38);
    pb_put_string_field(&sc, 3, "SCMP_ARCH_X86_64");
    pb_writer_init(&rule);
    pb_put_string_field(&rule, 1, "read");
    pb_put_string_field(&rule, 2, "SCMP_ACT_ALLOW");
    pb_writer_init(&arg);
    pb_put_uint_field(&arg, 1, 2);
    pb_put_uint_field(&arg, 2, UINT64_MAX);
    pb_put_string_field(&arg, 4, "SCMP_CMP_LE");
    pb_put_message_field(&rule, 4, &arg);
    pb_writer_free(&arg);
    pb_put_message_field(&sc, 5, &rule);
    pb_writer_free(&rule);
    pb_put_message_field(&lin, 4, &sc);
    pb_writer_free(&sc);
    pb_put_message_field(w, 8, &lin);
    pb_writer_free(&lin);

    pb_writer_init(&mounts);
    pb_writer_init(&mount);
    pb_put_string_field(&mount, 1, "/etc/hosts");
    pb_put_string_field(&mount, 2, "bind");
    pb_put_uint_field(&mount, 4, 1);
    pb_writer_init(&file);
    pb_put_bytes_field(&file, 1, "127.0.0.1 x\n", 12);
    pb_put_uint_field(&file, 2, 0644);
    pb_put_message_field(&mount, 8, &file);
    pb_writer_free(&file);
    pb_put_message_field(&mounts, 1, &mount);
    pb_writer_free(&mount);
    pb_writer_init(&mount);
    pb_put_string_field(&mount, 1, "/data");
    pb_put_string_field(&mount, 2, "bind");
    pb_put_string_field(&mount, 9, "smolvm9p0");
    pb_put_message_field(&mounts, 1, &mount);
    pb_writer_free(&mount);
    pb_put_message_field(w, 9, &mounts);
    pb_writer_free(&mounts);
}

static void test_create_oci(void)
{
    pb_writer w;
    build_create_oci(&w);
    struct create_container_request req;
    CHECK(agent_decode_create(w.buf, w.len, &req) == 0);
    CHECK(req.process.has_caps && req.process.caps.nsets[CAPSET_BOUNDING] == 2 &&
          strcmp(req.process.caps.sets[CAPSET_AMBIENT][0], "CAP_KILL") == 0 && req.process.caps.nsets[CAPSET_EFFECTIVE] == 0);
    CHECK(req.process.has_umask && req.process.umask == 0);
    CHECK(req.has_linux && req.linux_sec.nmasked == 1 && req.linux_sec.nreadonly == 1 && req.linux_sec.nsysctls == 1);
    CHECK(strcmp(req.linux_sec.sysctls[0].name, "net.ipv4.ip_forward") == 0 && strcmp(req.linux_sec.sysctls[0].value, "1") == 0);
    CHECK(req.linux_sec.has_seccomp && req.linux_sec.seccomp.has_default_errno && req.linux_sec.seccomp.default_errno == 38);
    CHECK(req.linux_sec.seccomp.nrules == 1 && req.linux_sec.seccomp.rules[0].nargs == 1 &&
          req.linux_sec.seccomp.rules[0].args[0].value == UINT64_MAX && req.linux_sec.seccomp.rules[0].args[0].index == 2);
    CHECK(req.has_mounts && req.nmounts == 2 && req.mounts[0].file.present && req.mounts[0].file.len == 12 &&
          req.mounts[0].flags == 1 && req.mounts[0].file.mode == 0644 && !req.mounts[0].share_tag);
    CHECK(!req.mounts[1].file.present && strcmp(req.mounts[1].share_tag, "smolvm9p0") == 0);
    struct seccomp_program prog;
    char err[300];
    CHECK(seccomp_compile(&req.linux_sec.seccomp, &prog, err, sizeof err) == 0 && prog.len > 6);
    seccomp_program_free(&prog);
    struct cap_masks masks;
    CHECK(caps_resolve(&req.process.caps, &masks, err, sizeof err) == 0 && masks.sets[CAPSET_BOUNDING] == ((1ull << 0) | (1ull << 5)));
    agent_create_free(&req);

    int failed = 0;
    for (size_t cut = 0; cut < w.len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, w.buf, cut);
        if (agent_decode_create(copy, cut, &req) < 0)
            failed++;
        else
            agent_create_free(&req);
        free(copy);
    }
    CHECK(failed > 0);
    for (size_t i = 0; i < w.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            uint8_t *copy = malloc(w.len);
            memcpy(copy, w.buf, w.len);
            copy[i] ^= (uint8_t)(1 << bit);
            if (agent_decode_create(copy, w.len, &req) == 0)
                agent_create_free(&req);
            free(copy);
        }
    }
    pb_writer_free(&w);
}

/* Runs `calls` syscalls in a child under the filter; returns each one's errno (0: success) in out. */
static int run_filtered(const struct seccomp_program *prog, const uint64_t (*args)[2], size_t n, int *out)
{
    int pipefd[2];
    if (pipe(pipefd) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || seccomp_install(prog) < 0)
            _exit(2);
        int results[64];
        for (size_t i = 0; i < n; i++) {
            long rc = syscall(SYS_getpriority, (long)args[i][0], (long)args[i][1]);
            results[i] = rc < 0 ? errno : 0;
        }
        ssize_t wr = write(pipefd[1], results, n * sizeof results[0]);
        _exit(wr == (ssize_t)(n * sizeof results[0]) ? 0 : 3);
    }
    close(pipefd[1]);
    ssize_t got = read(pipefd[0], out, n * sizeof *out);
    close(pipefd[0]);
    int status;
    waitpid(pid, &status, 0);
    return got == (ssize_t)(n * sizeof *out) && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* The compiled filter against the kernel: every comparison operator across the 32-bit halves. */
static void test_seccomp(void)
{
    static const char *const ops[] = { "SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE",
                                       "SCMP_CMP_GT", "SCMP_CMP_GE", "SCMP_CMP_MASKED_EQ" };
    const uint64_t v = 0x100000005ull;
    static const uint64_t probes[] = { 0, 5, 0x100000004ull, 0x100000005ull, 0x100000006ull, 0x200000000ull,
                                       0xffffffffull, 0x0500000005ull, UINT64_MAX };
    const size_t nprobes = sizeof probes / sizeof probes[0];
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        char *names[] = { "getpriority", "no_such_syscall", NULL };
        struct agent_seccomp_arg arg = { .index = 1, .value = o == 6 ? 0xff000000ffull : v, .value_two = 0x0500000005ull,
                                         .op = (char *)ops[o] };
        struct agent_seccomp_rule rule = { .names = names, .nnames = 2, .action = "SCMP_ACT_ERRNO", .has_errno = true,
                                           .errno_ret = 77, .args = &arg, .nargs = 1 };
        char *arches[] = { "SCMP_ARCH_X86_64", "SCMP_ARCH_X86", NULL };
        struct agent_seccomp sc = { .default_action = "SCMP_ACT_ALLOW", .architectures = arches, .narchitectures = 2,
                                    .rules = &rule, .nrules = 1 };
        struct seccomp_program prog;
        char err[300];
        CHECK(seccomp_compile(&sc, &prog, err, sizeof err) == 0);
        uint64_t calls[16][2];
        for (size_t i = 0; i < nprobes; i++) {
            calls[i][0] = 0; /* PRIO_PROCESS */
            calls[i][1] = probes[i];
        }
        int got[16];
        CHECK(run_filtered(&prog, (const uint64_t(*)[2])calls, nprobes, got) == 0);
        for (size_t i = 0; i < nprobes; i++) {
            uint64_t a = probes[i];
            bool match = o == 0 ? a == v : o == 1 ? a != v : o == 2 ? a < v : o == 3 ? a <= v : o == 4 ? a > v
                       : o == 5 ? a >= v : (a & 0xff000000ffull) == 0x0500000005ull;
            if ((got[i] == 77) != match) {
                fprintf(stderr, "seccomp %s: arg 0x%llx: errno %d, want match=%d\n", ops[o], (unsigned long long)a, got[i],
                        match);
                CHECK(0);
            }
        }
        seccomp_program_free(&prog);
    }

    /* Two conditions on one index: OR (runc); on different indexes: AND. */
    char *names[] = { "getpriority", NULL };
    struct agent_seccomp_arg same[2] = { { .index = 1, .value = 1, .op = "SCMP_CMP_EQ" }, { .index = 1, .value = 2, .op = "SCMP_CMP_EQ" } };
    struct agent_seccomp_arg diff[2] = { { .index = 0, .value = 0, .op = "SCMP_CMP_EQ" }, { .index = 1, .value = 3, .op = "SCMP_CMP_EQ" } };
    struct agent_seccomp_rule rules[2] = {
        { .names = names, .nnames = 1, .action = "SCMP_ACT_ERRNO", .has_errno = true, .errno_ret = 71, .args = same, .nargs = 2 },
        { .names = names, .nnames = 1, .action = "SCMP_ACT_ERRNO", .has_errno = true, .errno_ret = 72, .args = diff, .nargs = 2 },
    };
    struct agent_seccomp sc = { .default_action = "SCMP_ACT_ALLOW", .rules = rules, .nrules = 2 };
    struct seccomp_program prog;
    char err[300];
    CHECK(seccomp_compile(&sc, &prog, err, sizeof err) == 0);
    const uint64_t calls[5][2] = { { 0, 1 }, { 0, 2 }, { 0, 3 }, { 1, 3 }, { 0, 4 } };
    int got[5];
    CHECK(run_filtered(&prog, calls, 5, got) == 0);
    CHECK(got[0] == 71 && got[1] == 71 && got[2] == 72 && got[3] != 72 && got[3] != 71 && got[4] != 71 && got[4] != 72);
    seccomp_program_free(&prog);

    /* Bad input: clear errors. */
    struct agent_seccomp bad = { .default_action = "SCMP_ACT_NOPE" };
    CHECK(seccomp_compile(&bad, &prog, err, sizeof err) < 0 && strstr(err, "SCMP_ACT_NOPE"));
    struct agent_seccomp notify = { .default_action = "SCMP_ACT_NOTIFY" };
    CHECK(seccomp_compile(&notify, &prog, err, sizeof err) < 0 && strstr(err, "NOTIFY"));
    struct agent_seccomp_arg badarg = { .index = 6, .op = "SCMP_CMP_EQ" };
    struct agent_seccomp_rule badrule = { .names = names, .nnames = 1, .action = "SCMP_ACT_ALLOW", .args = &badarg, .nargs = 1 };
    struct agent_seccomp badidx = { .default_action = "SCMP_ACT_ALLOW", .rules = &badrule, .nrules = 1 };
    CHECK(seccomp_compile(&badidx, &prog, err, sizeof err) < 0 && strstr(err, "index 6"));
    CHECK(syscall_from_name("read") == 0 && syscall_from_name("openat2") == 437 && syscall_from_name("nope") < 0);
    CHECK(cap_from_name("CAP_CHOWN") == 0 && cap_from_name("CAP_CHECKPOINT_RESTORE") == 40 && cap_from_name("CAP_X") < 0);
}

/* The generic table-driven decoder (pb_table.c) on a test schema of its own. */
struct t_inner {
    char *name;
    uint32_t n;
    const uint8_t *blob;
    size_t blob_len;
};

struct t_outer {
    char *id;
    uint64_t big;
    int64_t neg;
    bool flag;
    bool has_inner;
    struct t_inner inner;
    char **tags;
    size_t ntags;
    uint32_t *nums;
    size_t nnums;
    struct t_inner *items;
    size_t nitems;
};

PB_MESSAGE(t_inner_msg, struct t_inner,
           PB_STRING(struct t_inner, 1, name, 8),
           PB_U32(struct t_inner, 2, n),
           PB_BYTES(struct t_inner, 3, blob, blob_len, 4));

PB_MESSAGE(t_outer_msg, struct t_outer,
           PB_STRING(struct t_outer, 1, id, 16),
           PB_U64(struct t_outer, 2, big),
           PB_I64(struct t_outer, 3, neg),
           PB_BOOL(struct t_outer, 4, flag),
           PB_MSG(struct t_outer, 5, inner, struct t_inner, t_inner_msg, .has1 = PB_HAS(struct t_outer, has_inner)),
           PB_REP_STRING(struct t_outer, 6, tags, ntags, 3, 8),
           PB_REP_U32(struct t_outer, 7, nums, nnums, 4),
           PB_REP_MSG(struct t_outer, 8, items, nitems, struct t_inner, t_inner_msg, 2));

static void put_inner(pb_writer *w, uint32_t field, const char *name, uint32_t n)
{
    pb_writer in;
    pb_writer_init(&in);
    pb_put_string_field(&in, 1, name);
    pb_put_uint_field(&in, 2, n);
    pb_put_message_field(w, field, &in);
    pb_writer_free(&in);
}

static void test_pb_table(void)
{
    CHECK(pb_msg_check(&t_outer_msg) == 0);
    for (size_t i = 0; i < agent_pb_ntables; i++)
        CHECK(pb_msg_check(agent_pb_tables[i]) == 0);

    /* A bad table: a destination past the struct, a duplicate field number. */
    static const struct pb_field past[] = { { .num = 1, .kind = PBK_U32, .off = sizeof(struct t_inner) - 2,
                                              .size = sizeof(uint32_t) } };
    static const struct pb_msg past_msg = { past, 1, sizeof(struct t_inner) };
    static const struct pb_field dup[] = { PB_U32(struct t_inner, 2, n), PB_STRING(struct t_inner, 2, name, 8) };
    static const struct pb_msg dup_msg = { dup, 2, sizeof(struct t_inner) };
    CHECK(pb_msg_check(&past_msg) < 0 && pb_msg_check(&dup_msg) < 0);
    const uint8_t one[] = { 0x08, 0x05 };
    struct t_inner ti;
    CHECK(pb_decode(&past_msg, one, sizeof one, &ti) < 0);

    pb_writer w;
    pb_writer_init(&w);
    pb_put_string_field(&w, 1, "first");
    pb_put_string_field(&w, 1, "second"); /* a repeated singular field: the last one wins */
    pb_put_uint_field(&w, 2, UINT64_MAX);
    pb_put_uint_field(&w, 3, (uint64_t)-5);
    pb_put_uint_field(&w, 4, 7);
    put_inner(&w, 5, "in", 3);
    pb_writer in;
    pb_writer_init(&in);
    pb_put_uint_field(&in, 2, 0x1ffffffffull); /* uint32: truncated */
    pb_put_bytes_field(&in, 3, "abcd", 4);
    pb_put_message_field(&w, 5, &in); /* a second occurrence merges */
    pb_writer_free(&in);
    pb_put_string_field(&w, 6, "t1");
    pb_put_string_field(&w, 6, "t2");
    pb_put_uint_field(&w, 7, 9);                          /* unpacked */
    pb_put_bytes_field(&w, 7, "\x01\x80\x01", 3);         /* packed: 1, 128 */
    put_inner(&w, 8, "i1", 1);
    put_inner(&w, 8, "i2", 2);
    pb_put_uint_field(&w, 99, 1);                         /* unknown: skipped */
    pb_put_bytes_field(&w, 98, "xyz", 3);
    struct t_outer o;
    CHECK(pb_decode(&t_outer_msg, w.buf, w.len, &o) == 0);
    CHECK(strcmp(o.id, "second") == 0 && o.big == UINT64_MAX && o.neg == -5 && o.flag);
    CHECK(o.has_inner && strcmp(o.inner.name, "in") == 0 && o.inner.n == 0xffffffffu && o.inner.blob_len == 4 &&
          memcmp(o.inner.blob, "abcd", 4) == 0);
    CHECK(o.ntags == 2 && strcmp(o.tags[1], "t2") == 0 && o.tags[2] == NULL);
    CHECK(o.nnums == 3 && o.nums[0] == 9 && o.nums[1] == 1 && o.nums[2] == 128);
    CHECK(o.nitems == 2 && strcmp(o.items[1].name, "i2") == 0 && o.items[1].n == 2);
    pb_free(&t_outer_msg, &o);
    CHECK(o.id == NULL && o.tags == NULL && o.items == NULL && o.ntags == 0);

    /* Every truncation of it is refused (also those in the middle of a nested message), and
     * every failure leaves nothing allocated (ASan) and the struct zeroed. */
    uint8_t *copy = malloc(w.len);
    for (size_t cut = 0; cut < w.len; cut++) {
        memcpy(copy, w.buf, cut);
        int rc = pb_decode(&t_outer_msg, copy, cut, &o);
        if (rc == 0)
            pb_free(&t_outer_msg, &o);
        else
            CHECK(o.id == NULL && o.items == NULL && o.nitems == 0 && o.nums == NULL);
    }
    free(copy);
    pb_writer_free(&w);

    /* Truncated inside the nested message: its declared length runs past the end. */
    const uint8_t cut_nested[] = { 0x0a, 0x01, 'x', 0x2a, 0x05, 0x0a, 0x02, 'a' };
    CHECK(pb_decode(&t_outer_msg, cut_nested, sizeof cut_nested, &o) < 0 && o.id == NULL);
    /* The nested message's own content is truncated (a string cut short inside it). */
    const uint8_t cut_inside[] = { 0x0a, 0x01, 'x', 0x42, 0x03, 0x0a, 0x05, 'a' };
    CHECK(pb_decode(&t_outer_msg, cut_inside, sizeof cut_inside, &o) < 0 && o.id == NULL && o.items == NULL);

    /* Wrong wire types: a varint for a string, a string for a varint, a fixed64 for a message. */
    const uint8_t wrong1[] = { 0x08, 0x01 };
    const uint8_t wrong2[] = { 0x12, 0x01, 'a' };
    const uint8_t wrong3[] = { 0x29, 1, 2, 3, 4, 5, 6, 7, 8 };
    const uint8_t wrong4[] = { 0x3d, 1, 2, 3, 4 }; /* fixed32 for repeated uint32 */
    CHECK(pb_decode(&t_outer_msg, wrong1, sizeof wrong1, &o) < 0);
    CHECK(pb_decode(&t_outer_msg, wrong2, sizeof wrong2, &o) < 0);
    CHECK(pb_decode(&t_outer_msg, wrong3, sizeof wrong3, &o) < 0);
    CHECK(pb_decode(&t_outer_msg, wrong4, sizeof wrong4, &o) < 0);

    /* Limits: string and bytes lengths, and every repeated cap (checked before allocating). */
    pb_writer_init(&w);
    pb_put_string_field(&w, 1, "0123456789abcdef"); /* 16: at the limit */
    CHECK(pb_decode(&t_outer_msg, w.buf, w.len, &o) == 0);
    pb_free(&t_outer_msg, &o);
    pb_put_string_field(&w, 1, "0123456789abcdefg"); /* 17 */
    CHECK(pb_decode(&t_outer_msg, w.buf, w.len, &o) < 0 && o.id == NULL);
    pb_writer_free(&w);

    pb_writer_init(&w);
    pb_writer_init(&in);
    pb_put_bytes_field(&in, 3, "abcde", 5);
    pb_put_message_field(&w, 5, &in);
    CHECK(pb_decode(&t_outer_msg, w.buf, w.len, &o) < 0);
    pb_writer_free(&in);
    pb_writer_free(&w);

    pb_writer_init(&w);
    for (int i = 0; i < 3; i++)
        pb_put_string_field(&w, 6, "t");
    CHECK(pb_decode(&t_outer_msg, w.buf, w.len, &o) == 0 && o.ntags == 3);
    pb_free(&t_outer_msg, &o);
    pb_put_string_field(&w, 6, "t");
    CHECK(pb_decode(&t_outer_msg, w.buf, w.len, &o) < 0 && o.tags == NULL && o.ntags == 0);
    pb_writer_free(&w);

    pb_writer_init(&w);
    pb_put_bytes_field(&w, 7, "\x01\x02\x03\x04", 4);
    CHECK(pb_decode(&t_outer_msg, w.buf, w.len, &o) == 0 && o.nnums == 4);
    pb_free(&t_outer_msg, &o);
    pb_put_uint_field(&w, 7, 5);
    CHECK(pb_decode(&t_outer_msg, w.buf, w.len, &o) < 0 && o.nums == NULL);
    pb_writer_free(&w);
    const uint8_t packed_bad[] = { 0x3a, 0x02, 0x01, 0x80 }; /* a packed varint cut short */
    CHECK(pb_decode(&t_outer_msg, packed_bad, sizeof packed_bad, &o) < 0 && o.nums == NULL);

    pb_writer_init(&w);
    put_inner(&w, 8, "a", 1);
    put_inner(&w, 8, "b", 2);
    CHECK(pb_decode(&t_outer_msg, w.buf, w.len, &o) == 0 && o.nitems == 2);
    pb_free(&t_outer_msg, &o);
    put_inner(&w, 8, "c", 3);
    CHECK(pb_decode(&t_outer_msg, w.buf, w.len, &o) < 0 && o.items == NULL && o.nitems == 0);
    pb_writer_free(&w);

    /* A failure inside the second element frees the first one and the partial second. */
    pb_writer_init(&w);
    put_inner(&w, 8, "a", 1);
    put_inner(&w, 8, "toolongname", 2);
    CHECK(pb_decode(&t_outer_msg, w.buf, w.len, &o) < 0 && o.items == NULL);
    pb_writer_free(&w);
}

static void test_target_and_handshake(void)
{
    pb_writer w;
    pb_writer_init(&w);
    pb_put_string_field(&w, 1, "c1");
    pb_put_string_field(&w, 2, "");
    pb_put_uint_field(&w, 3, 15);
    pb_put_uint_field(&w, 4, 1);
    struct process_target t;
    CHECK(agent_decode_target(w.buf, w.len, &t) == 0 && strcmp(t.container_id, "c1") == 0 && t.signal == 15 && t.all);
    agent_target_free(&t);
    pb_writer_free(&w);
    const uint8_t bad[] = { 0x0a, 0x02, 'c', 0 }; /* embedded NUL in the id */
    CHECK(agent_decode_target(bad, sizeof bad, &t) < 0 && t.container_id == NULL);

    struct handshake_request h;
    pb_writer_init(&w);
    pb_put_uint_field(&w, 1, 1);
    pb_put_uint_field(&w, 2, 1700000000000000000ull);
    pb_put_bytes_field(&w, 3, "0123456789abcdef", 16);
    CHECK(agent_decode_handshake(w.buf, w.len, &h) == 0 && h.protocol_version == 1 && h.entropy_len == 16 &&
          h.host_time_unix_nano == 1700000000000000000ull);
    CHECK(agent_decode_handshake(w.buf, w.len - 1, &h) < 0);
    pb_writer_free(&w);
}

static void test_exec_and_resize(void)
{
    pb_writer w, proc, size, stdio;
    pb_writer_init(&w);
    pb_put_string_field(&w, 1, "c1");
    pb_put_string_field(&w, 2, "e1");
    pb_writer_init(&proc);
    pb_put_string_field(&proc, 1, "sh");
    pb_put_uint_field(&proc, 5, 1);
    pb_writer_init(&size);
    pb_put_uint_field(&size, 1, 24);
    pb_put_uint_field(&size, 2, 80);
    pb_put_message_field(&proc, 8, &size);
    pb_writer_free(&size);
    pb_put_message_field(&w, 3, &proc);
    pb_writer_free(&proc);
    pb_writer_init(&stdio);
    pb_put_uint_field(&stdio, 1, 8);
    pb_put_uint_field(&stdio, 2, 10);
    pb_put_message_field(&w, 4, &stdio);
    pb_writer_free(&stdio);
    struct exec_process_request req;
    CHECK(agent_decode_exec(w.buf, w.len, &req) == 0);
    CHECK(strcmp(req.container_id, "c1") == 0 && strcmp(req.exec_id, "e1") == 0 && req.has_process);
    CHECK(req.process.nargs == 1 && req.process.terminal && req.process.has_console_size);
    CHECK(req.process.console_height == 24 && req.process.console_width == 80);
    CHECK(req.stdio.stdin_id == 8 && req.stdio.stdout_id == 10 && req.stdio.stderr_id == 0);
    agent_exec_free(&req);
    int failed = 0;
    for (size_t cut = 0; cut < w.len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, w.buf, cut);
        if (agent_decode_exec(copy, cut, &req) < 0)
            failed++;
        else
            agent_exec_free(&req);
        free(copy);
    }
    CHECK(failed > 0);
    pb_writer_free(&w);

    pb_writer_init(&w);
    pb_put_string_field(&w, 1, "c1");
    pb_put_uint_field(&w, 3, 132);
    pb_put_uint_field(&w, 4, 43);
    struct resize_pty_request rz;
    CHECK(agent_decode_resize(w.buf, w.len, &rz) == 0 && strcmp(rz.container_id, "c1") == 0 && rz.exec_id == NULL &&
          rz.width == 132 && rz.height == 43);
    agent_resize_free(&rz);
    CHECK(agent_decode_resize(w.buf, w.len - 1, &rz) < 0 && rz.container_id == NULL);
    pb_writer_free(&w);
    /* A wrong wire type for width is malformed, not misread. */
    const uint8_t bad[] = { 0x1a, 0x01, 'x' };
    CHECK(agent_decode_resize(bad, sizeof bad, &rz) < 0);
}

/* Random bytes through every decoder: they must fail or succeed, never crash or leak. */
static void test_fuzz(void)
{
    srand(12345);
    uint8_t buf[512];
    for (int iter = 0; iter < 50000; iter++) {
        size_t n = (size_t)(rand() % (int)sizeof buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)rand();
        /* Bias toward valid tags so nested decoders are reached. */
        if (n > 2 && iter % 2)
            buf[0] = (uint8_t)((1 + rand() % 9) << 3 | 2);
        struct create_container_request c;
        if (agent_decode_create(buf, n, &c) == 0)
            agent_create_free(&c);
        struct process_target t;
        if (agent_decode_target(buf, n, &t) == 0)
            agent_target_free(&t);
        struct exec_process_request e;
        if (agent_decode_exec(buf, n, &e) == 0)
            agent_exec_free(&e);
        struct resize_pty_request rz;
        if (agent_decode_resize(buf, n, &rz) == 0)
            agent_resize_free(&rz);
        struct handshake_request h;
        (void)agent_decode_handshake(buf, n, &h);
        struct ttrpc_request req;
        (void)ttrpc_decode_request(buf, n, &req);
        struct ttrpc_reader r;
        struct collected col;
        ttrpc_reader_init(&r, 256);
        (void)ttrpc_reader_push(&r, buf, n, &ops, &col);
        ttrpc_reader_reset(&r);
    }
    CHECK(1);
}

/* The write queue: control frames overtake queued data frames, but never split one. */
static void test_write_queue(void)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    struct write_queue q;
    wq_init(&q);
    static uint8_t big[65536];
    memset(big, 'D', sizeof big);
    CHECK(wq_push_frame(&q, WQ_DATA, 2, TTRPC_DATA, 0, big, sizeof big) == 0);
    CHECK(wq_push_frame(&q, WQ_DATA, 2, TTRPC_DATA, 0, big, 10) == 0);
    CHECK(wq_flush(&q, sv[0]) == 1); /* partially written */
    CHECK(wq_push_frame(&q, WQ_CONTROL, 1, TTRPC_RESPONSE, 0, "RESP", 4) == 0);
    CHECK(wq_queued(&q, WQ_CONTROL) == 14);
    /* Drain the other end while flushing; then parse what arrived. */
    static uint8_t got[200000];
    size_t have = 0;
    for (int i = 0; i < 100000 && !wq_empty(&q); i++) {
        ssize_t r = recv(sv[1], got + have, sizeof got - have, MSG_DONTWAIT);
        if (r > 0)
            have += (size_t)r;
        CHECK(wq_flush(&q, sv[0]) >= 0);
    }
    CHECK(wq_empty(&q));
    ssize_t r;
    while ((r = recv(sv[1], got + have, sizeof got - have, MSG_DONTWAIT)) > 0)
        have += (size_t)r;
    struct ttrpc_reader rd;
    struct collected c;
    memset(&c, 0, sizeof c);
    ttrpc_reader_init(&rd, TTRPC_MAX_PAYLOAD);
    /* Frame order: big data (partially sent before the response existed), response, small data. */
    uint32_t order[3];
    int k = 0;
    size_t off = 0;
    while (off < have && k < 3) {
        uint32_t len = (uint32_t)got[off] << 24 | (uint32_t)got[off + 1] << 16 | (uint32_t)got[off + 2] << 8 | got[off + 3];
        order[k++] = got[off + 8];
        off += TTRPC_HEADER_LEN + len;
    }
    CHECK(k == 3 && off == have);
    CHECK(order[0] == TTRPC_DATA && order[1] == TTRPC_RESPONSE && order[2] == TTRPC_DATA);
    CHECK(ttrpc_reader_push(&rd, got, have, &ops, &c) == 0 && c.frames == 3);
    ttrpc_reader_reset(&rd);

    /* Control first when nothing is partial. */
    wq_init(&q);
    CHECK(wq_push_frame(&q, WQ_DATA, 2, TTRPC_DATA, 0, "d", 1) == 0);
    CHECK(wq_push_frame(&q, WQ_CONTROL, 1, TTRPC_RESPONSE, 0, "r", 1) == 0);
    CHECK(wq_flush(&q, sv[0]) == 0);
    uint8_t two[22];
    CHECK(recv(sv[1], two, sizeof two, MSG_WAITALL) == 22 && two[8] == TTRPC_RESPONSE && two[19] == TTRPC_DATA);
    CHECK(wq_push_frame(&q, WQ_DATA, 2, TTRPC_DATA, 0, big, TTRPC_MAX_PAYLOAD + 1) < 0);
    wq_clear(&q);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    test_varint();
    test_tags_and_skip();
    test_len_and_string();
    test_writer();
    test_reader();
    test_request();
    test_create();
    test_create_oci();
    test_seccomp();
    test_pb_table();
    test_target_and_handshake();
    test_exec_and_resize();
    test_fuzz();
    test_write_queue();
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
