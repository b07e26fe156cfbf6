/* Host-side unit tests of cgroups.c (planning, parsing, the file functions against an
 * ordinary directory) and of the protocol 1.3 messages in agent_pb.c. ASan/UBSan. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_pb.h"
#include "cgroups.h"
#include "pb.h"
#include "ttrpc.h"

#include "check.h"

/* The value the plan writes to `file`, or NULL. */
static const char *planned(const struct cgroup_plan *plan, const char *file)
{
    for (size_t i = 0; i < plan->n; i++)
        if (strcmp(plan->w[i].file, file) == 0)
            return plan->w[i].value;
    return NULL;
}

static void test_cpu_weight(void)
{
    CHECK(cgroup_cpu_weight(0) == 0);
    CHECK(cgroup_cpu_weight(2) == 1);
    CHECK(cgroup_cpu_weight(1024) == 39);
    CHECK(cgroup_cpu_weight(262144) == 10000);
}

static void test_plan(void)
{
    struct cgroup_plan plan;
    char err[300];
    struct agent_resources r = { 0 };
    CHECK(cgroup_plan_resources(&r, NULL, &plan, err, sizeof err) == RPC_OK && plan.n == 0);

    r.has_memory_limit = true, r.memory_limit = 100 << 20;
    r.has_memory_swap = true, r.memory_swap = 300 << 20;
    r.has_memory_reservation = true, r.memory_reservation = 50 << 20;
    CHECK(cgroup_plan_resources(&r, NULL, &plan, err, sizeof err) == RPC_OK);
    CHECK(planned(&plan, "memory.max") && strcmp(planned(&plan, "memory.max"), "104857600") == 0);
    CHECK(planned(&plan, "memory.swap.max") && strcmp(planned(&plan, "memory.swap.max"), "209715200") == 0);
    CHECK(planned(&plan, "memory.low") && strcmp(planned(&plan, "memory.low"), "52428800") == 0);
    /* runc's order: swap before memory.max. */
    CHECK(plan.n == 3 && strcmp(plan.w[0].file, "memory.swap.max") == 0 && strcmp(plan.w[1].file, "memory.max") == 0);

    /* swap == limit: swap disabled ("0"). */
    r.memory_swap = 100 << 20;
    CHECK(cgroup_plan_resources(&r, NULL, &plan, err, sizeof err) == RPC_OK &&
          strcmp(planned(&plan, "memory.swap.max"), "0") == 0);
    /* swap < limit, and swap without a limit: clear errors. */
    r.memory_swap = 10 << 20;
    CHECK(cgroup_plan_resources(&r, NULL, &plan, err, sizeof err) == RPC_INVALID_ARGUMENT && strstr(err, "memory.swap"));
    struct agent_resources only_swap = { .has_memory_swap = true, .memory_swap = 200 << 20 };
    CHECK(cgroup_plan_resources(&only_swap, NULL, &plan, err, sizeof err) == RPC_INVALID_ARGUMENT &&
          strstr(err, "needs a memory limit"));
    /* ... but an update of swap alone uses the current limit. */
    struct agent_resources current = { .has_memory_limit = true, .memory_limit = 100 << 20 };
    CHECK(cgroup_plan_resources(&only_swap, &current, &plan, err, sizeof err) == RPC_OK &&
          strcmp(planned(&plan, "memory.swap.max"), "104857600") == 0 && !planned(&plan, "memory.max"));
    /* Unlimited memory, swap unset: both unlimited. */
    struct agent_resources unlimited = { .has_memory_limit = true, .memory_limit = -1 };
    CHECK(cgroup_plan_resources(&unlimited, NULL, &plan, err, sizeof err) == RPC_OK &&
          strcmp(planned(&plan, "memory.max"), "max") == 0 && strcmp(planned(&plan, "memory.swap.max"), "max") == 0);
    struct agent_resources bad = { .has_memory_limit = true, .memory_limit = -5 };
    CHECK(cgroup_plan_resources(&bad, NULL, &plan, err, sizeof err) == RPC_INVALID_ARGUMENT &&
          strstr(err, "memory.limit"));

    struct agent_resources cpu = { .has_cpu_quota = true, .cpu_quota = 50000, .has_cpu_period = true, .cpu_period = 100000,
                                   .has_cpu_shares = true, .cpu_shares = 1024 };
    CHECK(cgroup_plan_resources(&cpu, NULL, &plan, err, sizeof err) == RPC_OK &&
          strcmp(planned(&plan, "cpu.max"), "50000 100000") == 0 && strcmp(planned(&plan, "cpu.weight"), "39") == 0);
    cpu.cpu_quota = -1;
    CHECK(cgroup_plan_resources(&cpu, NULL, &plan, err, sizeof err) == RPC_OK &&
          strcmp(planned(&plan, "cpu.max"), "max 100000") == 0);
    cpu.has_cpu_period = false;
    cpu.cpu_quota = 20000;
    CHECK(cgroup_plan_resources(&cpu, NULL, &plan, err, sizeof err) == RPC_OK && strcmp(planned(&plan, "cpu.max"), "20000") == 0);
    cpu.cpu_shares = 1;
    CHECK(cgroup_plan_resources(&cpu, NULL, &plan, err, sizeof err) == RPC_INVALID_ARGUMENT && strstr(err, "cpu.shares"));

    struct agent_resources pids = { .has_pids_limit = true, .pids_limit = -1 };
    CHECK(cgroup_plan_resources(&pids, NULL, &plan, err, sizeof err) == RPC_OK && strcmp(planned(&plan, "pids.max"), "max") == 0);
    pids.pids_limit = 0;
    CHECK(cgroup_plan_resources(&pids, NULL, &plan, err, sizeof err) == RPC_OK && plan.n == 0);
    pids.pids_limit = 42;
    CHECK(cgroup_plan_resources(&pids, NULL, &plan, err, sizeof err) == RPC_OK && strcmp(planned(&plan, "pids.max"), "42") == 0);

    char cpus[] = "0-1,3", evil[] = "0\nmax";
    struct agent_resources sets = { .cpuset_cpus = cpus };
    CHECK(cgroup_plan_resources(&sets, NULL, &plan, err, sizeof err) == RPC_OK &&
          strcmp(planned(&plan, "cpuset.cpus"), "0-1,3") == 0);
    sets.cpuset_mems = evil;
    CHECK(cgroup_plan_resources(&sets, NULL, &plan, err, sizeof err) == RPC_INVALID_ARGUMENT && strstr(err, "cpu.mems"));

    /* merge */
    struct agent_resources into = { 0 };
    CHECK(cgroup_resources_merge(&into, &r) == 0 && into.has_memory_limit && into.memory_limit == 100 << 20);
    struct agent_resources sets2 = { .cpuset_cpus = cpus };
    CHECK(cgroup_resources_merge(&into, &sets2) == 0 && strcmp(into.cpuset_cpus, "0-1,3") == 0 && into.has_memory_swap);
    agent_resources_free(&into);
}

static void test_parse(void)
{
    uint64_t v;
    CHECK(cgroup_parse_value("max\n", &v) == 0 && v == UINT64_MAX);
    CHECK(cgroup_parse_value("123\n", &v) == 0 && v == 123);
    CHECK(cgroup_parse_value("18446744073709551615", &v) == 0 && v == UINT64_MAX);
    CHECK(cgroup_parse_value("18446744073709551616", &v) < 0);
    CHECK(cgroup_parse_value("-1", &v) < 0 && cgroup_parse_value("", &v) < 0 && cgroup_parse_value("maxi", &v) < 0);

    struct cgroup_counter c[4];
    size_t n = cgroup_parse_flat("usage_usec 10\nuser_usec 7\nbroken\nsystem_usec 3\nnr_periods 1\nextra 9\n", c, 4);
    CHECK(n == 4 && strcmp(c[0].name, "usage_usec") == 0 && c[0].value == 10 && strcmp(c[2].name, "system_usec") == 0 &&
          c[3].value == 1);
    CHECK(cgroup_parse_flat("", c, 4) == 0);
    char long_name[200];
    memset(long_name, 'a', sizeof long_name - 3);
    strcpy(long_name + sizeof long_name - 3, " 1");
    CHECK(cgroup_parse_flat(long_name, c, 4) == 0);

    struct io_device_stat io[2];
    n = cgroup_parse_io_stat("254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n254:16 rbytes=1\ngarbage\n", io, 2);
    CHECK(n == 2 && io[0].major == 254 && io[0].minor == 0 && io[0].rbytes == 4096 && io[0].wbytes == 8192 &&
          io[0].rios == 1 && io[0].wios == 2 && io[1].minor == 16 && io[1].rbytes == 1);
}

static void write_text(const char *dir, const char *file, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_files(void)
{
    char dir[] = "/tmp/smolvm-cgtest-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    static const char *const files[] = { "memory.max", "memory.low", "cpu.max", "pids.max" };
    for (size_t i = 0; i < 4; i++)
        write_text(dir, files[i], "");
    struct agent_resources r = { .has_memory_limit = true, .memory_limit = 64 << 20, .has_cpu_quota = true,
                                 .cpu_quota = 50000, .has_pids_limit = true, .pids_limit = 64 };
    struct cgroup_plan plan;
    char err[300];
    CHECK(cgroup_plan_resources(&r, NULL, &plan, err, sizeof err) == RPC_OK);
    CHECK(cgroup_apply(dir, &plan, err, sizeof err) == RPC_OK);
    char buf[64] = { 0 };
    char path[512];
    snprintf(path, sizeof path, "%s/memory.max", dir);
    FILE *f = fopen(path, "r");
    CHECK(f && fgets(buf, sizeof buf, f) && strcmp(buf, "67108864") == 0);
    if (f)
        fclose(f);
    /* A file the "kernel" lacks: InvalidArgument naming it; swap "max" without swap: ignored. */
    struct agent_resources sets = { .cpuset_cpus = (char *)"0" };
    CHECK(cgroup_plan_resources(&sets, NULL, &plan, err, sizeof err) == RPC_OK);
    CHECK(cgroup_apply(dir, &plan, err, sizeof err) == RPC_INVALID_ARGUMENT && strstr(err, "cpuset.cpus"));
    struct agent_resources unlimited = { .has_memory_limit = true, .memory_limit = -1 };
    CHECK(cgroup_plan_resources(&unlimited, NULL, &plan, err, sizeof err) == RPC_OK);
    CHECK(cgroup_apply(dir, &plan, err, sizeof err) == RPC_OK);

    write_text(dir, "cgroup.procs", "1\n");
    write_text(dir, "cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n");
    write_text(dir, "memory.stat", "anon 4096\nfile 8192\ninactive_file 100\n");
    write_text(dir, "memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n");
    write_text(dir, "memory.current", "1048576\n");
    write_text(dir, "memory.max", "max\n");
    write_text(dir, "pids.current", "3\n");
    write_text(dir, "pids.max", "64\n");
    static struct container_stats st;
    CHECK(cgroup_read_stats(dir, &st) == 0);
    CHECK(st.ncpu_stat == 4 && st.cpu_stat[0].value == 1500 && st.nmemory_stat == 3 && st.nmemory_events == 5);
    CHECK(st.memory_current == 1048576 && st.memory_max == UINT64_MAX && st.pids_current == 3 && st.pids_max == 64);
    CHECK(st.memory_swap_max == 0 && st.memory_peak == 0 && st.nio == 0);
    CHECK(cgroup_read_oom_kill(dir) == 2);

    pb_writer w;
    pb_writer_init(&w);
    agent_encode_stats_response(&w, &st);
    CHECK(!w.failed && w.len > 0);
    /* Walk the encoding: 4 cpu_stat, 3 memory_stat, 5 memory_events; memory_max = 2^64-1. */
    pb_reader rd = pb_reader_make(w.buf, w.len);
    uint32_t field, wire;
    int counts[12] = { 0 };
    uint64_t memory_max = 0;
    while (pb_read_tag(&rd, &field, &wire) == 1) {
        if (field < 12)
            counts[field]++;
        if (field == 5)
            CHECK(pb_read_varint(&rd, &memory_max) == 0);
        else
            CHECK(pb_skip(&rd, wire) == 0);
    }
    CHECK(counts[1] == 4 && counts[2] == 3 && counts[3] == 5 && memory_max == UINT64_MAX);
    pb_writer_free(&w);

    /* cgroup_destroy on an ordinary dir with files cannot rmdir: busy (-1); empty: 0. */
    CHECK(cgroup_destroy(dir) == -1);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    CHECK(cgroup_destroy(dir) == 0);
}

static void put_int64(pb_writer *w, uint32_t field, int64_t v)
{
    pb_put_tag(w, field, PB_WIRE_VARINT);
    pb_put_varint(w, (uint64_t)v);
}

static void test_messages(void)
{
    pb_writer res;
    pb_writer_init(&res);
    put_int64(&res, 1, 64 << 20);
    put_int64(&res, 3, -1);
    put_int64(&res, 5, -1);
    pb_put_uint_field(&res, 6, 100000);
    pb_put_string_field(&res, 7, "0-1");
    put_int64(&res, 9, -1);
    pb_writer w;
    pb_writer_init(&w);
    pb_put_string_field(&w, 1, "c1");
    pb_put_message_field(&w, 2, &res);
    struct update_container_request req;
    CHECK(agent_decode_update(w.buf, w.len, &req) == 0);
    CHECK(strcmp(req.container_id, "c1") == 0 && req.resources.has_memory_limit && req.resources.memory_limit == 64 << 20);
    CHECK(req.resources.has_memory_swap && req.resources.memory_swap == -1 && req.resources.cpu_quota == -1);
    CHECK(req.resources.has_cpu_period && req.resources.cpu_period == 100000 && !req.resources.has_cpu_shares);
    CHECK(strcmp(req.resources.cpuset_cpus, "0-1") == 0 && !req.resources.cpuset_mems && req.resources.pids_limit == -1);
    agent_update_free(&req);
    for (size_t cut = 0; cut < w.len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, w.buf, cut);
        if (agent_decode_update(copy, cut, &req) == 0)
            agent_update_free(&req);
        free(copy);
    }
    /* A string where a number belongs: malformed. */
    pb_writer badw;
    pb_writer_init(&badw);
    pb_writer badres;
    pb_writer_init(&badres);
    pb_put_string_field(&badres, 1, "64M");
    pb_put_message_field(&badw, 2, &badres);
    CHECK(agent_decode_update(badw.buf, badw.len, &req) < 0);
    pb_writer_free(&badw);
    pb_writer_free(&badres);

    /* CreateContainerRequest.resources = 10 */
    pb_writer create;
    pb_writer_init(&create);
    pb_put_string_field(&create, 1, "c2");
    pb_put_message_field(&create, 10, &res);
    struct create_container_request creq;
    CHECK(agent_decode_create(create.buf, create.len, &creq) == 0 && creq.has_resources &&
          creq.resources.memory_limit == 64 << 20);
    agent_create_free(&creq);
    pb_writer_free(&create);
    pb_writer_free(&w);
    pb_writer_free(&res);

    pb_writer_init(&w);
    pb_put_string_field(&w, 1, "c3");
    pb_put_uint_field(&w, 2, 7);
    struct watch_oom_request wo;
    CHECK(agent_decode_watch_oom(w.buf, w.len, &wo) == 0 && strcmp(wo.container_id, "c3") == 0 && wo.seen == 7);
    agent_watch_oom_free(&wo);
    pb_writer_free(&w);

    pb_writer_init(&w);
    agent_encode_wait_response(&w, 137, 5, 1);
    const uint8_t want[] = { 0x08, 137, 1, 0x10, 5, 0x18, 1 };
    CHECK(w.len == sizeof want && memcmp(w.buf, want, sizeof want) == 0);
    pb_writer_free(&w);
    pb_writer_init(&w);
    agent_encode_watch_oom_response(&w, 2, true);
    const uint8_t want_oom[] = { 0x08, 2, 0x10, 1 };
    CHECK(w.len == sizeof want_oom && memcmp(w.buf, want_oom, sizeof want_oom) == 0);
    pb_writer_free(&w);
}

int main(void)
{
    test_cpu_weight();
    test_plan();
    test_parse();
    test_files();
    test_messages();
    printf("cgroups: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
