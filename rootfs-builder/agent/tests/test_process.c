/* Host-side unit test of a process's life as process.c keeps it, with the child faked: its
 * status pipe is a pipe the test writes child_reports into (or closes: the exec), its start pipe
 * one the test reads, its pid a sleeping child of the test. Checks what the process reports
 * through process_events for each report, also when the reaping comes first, StartProcess's
 * refusals, the end of a process and the signal hold of an init (run under ASan/UBSan). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "event_loop.h"
#include "log.h"
#include "process.h"
#include "rpc_status.h"
#include "stdio_pump.h"

#include "check.h"

/* ---- the owner's side: what the process reported */

struct reported {
    int setup, start, finished;
    int32_t code;
    char message[800];
};

static struct reported got;

static void note(int *counter, int32_t code, const char *message)
{
    (*counter)++;
    got.code = code;
    snprintf(got.message, sizeof got.message, "%s", message ? message : "");
}

static void on_setup_done(struct process *p, int32_t code, const char *message)
{
    note(&got.setup, code, message);
}

static void on_start_done(struct process *p, int32_t code, const char *message)
{
    note(&got.start, code, message);
}

static void on_finished(struct process *p)
{
    got.finished++;
}

static const struct process_events events = { on_setup_done, on_start_done, on_finished };

/* ---- the streams' link: nothing is connected */

static void link_send(void *conn, enum wq_lane lane, uint32_t id, uint8_t flags, const void *payload, size_t len)
{
}

static size_t link_queued(const void *conn)
{
    return 0;
}

static struct stream_set streams;

/* ---- a faked child */

struct fake_child {
    struct process p;
    int report_w; /* the child's end of the status pipe */
    int start_r;  /* the child's end of the start pipe */
};

/* A process as process_spawn leaves it (awaiting its set-up report), its pid a real child of
 * ours that waits to be killed. */
static void fake_spawn(struct fake_child *f, const char *exec_id)
{
    memset(f, 0, sizeof *f);
    f->p.exec_id = exec_id ? strdup(exec_id) : NULL;
    process_init(&f->p, NULL, "c1", false);
    /* The sleeper first: it must not hold the pipes' ends (their EOFs are the test's). */
    pid_t pid = fork();
    if (pid == 0) {
        for (;;)
            pause();
    }
    CHECK(pid > 0);
    f->p.pid = pid;
    int status[2], start[2];
    CHECK(pipe2(status, O_CLOEXEC) == 0 && pipe2(start, O_CLOEXEC) == 0);
    fcntl(status[0], F_SETFL, O_NONBLOCK);
    f->p.status_fd = status[0];
    f->report_w = status[1];
    f->p.start_fd = start[1];
    f->start_r = start[0];
    f->p.state = PROC_CREATING;
    f->p.awaiting = AWAIT_SETUP;
}

static void child_reports(struct fake_child *f, int32_t code, const char *message)
{
    struct child_report rep;
    memset(&rep, 0, sizeof rep);
    rep.code = code;
    snprintf(rep.message, sizeof rep.message, "%s", message);
    CHECK(write(f->report_w, &rep, sizeof rep) == (ssize_t)sizeof rep);
}

/* The child execs (or dies): its end of the status pipe closes. */
static void child_closes_status(struct fake_child *f)
{
    close(f->report_w);
    f->report_w = -1;
}

/* epoll says the status pipe is readable. */
static void status_ready(struct fake_child *f)
{
    f->p.status_watch.fn(f->p.status_watch.obj, EPOLLIN);
}

/* SIGCHLD: the child is killed and reaped, as the container layer's reaper would. */
static void reap(struct fake_child *f)
{
    kill(f->p.pid, SIGKILL);
    int status;
    CHECK(waitpid(f->p.pid, &status, 0) == f->p.pid);
    process_exited(&f->p, status, 0);
}

static void finish(struct fake_child *f)
{
    if (!f->p.exited)
        reap(f);
    process_release(&f->p, "was removed");
    if (f->report_w >= 0)
        close(f->report_w);
    close(f->start_r);
    free(f->p.exec_id);
    memset(&got, 0, sizeof got);
}

/* ---- the tests */

static void test_setup_reports(void)
{
    struct fake_child f;

    /* Ready: created, waiting for its start. */
    fake_spawn(&f, NULL);
    child_reports(&f, RPC_OK, "");
    status_ready(&f);
    CHECK(got.setup == 1 && got.code == RPC_OK && f.p.state == PROC_CREATED && f.p.awaiting == AWAIT_NONE);
    /* A second wake-up with nothing to read reports nothing. */
    status_ready(&f);
    CHECK(got.setup == 1 && got.start == 0);
    finish(&f);

    /* A failed set-up: its code, and the message naming the process. */
    fake_spawn(&f, "e1");
    child_reports(&f, RPC_NOT_FOUND, "exec: \"nope\": executable file not found in $PATH");
    status_ready(&f);
    CHECK(got.setup == 1 && got.code == RPC_NOT_FOUND);
    CHECK(strcmp(got.message, "container \"c1\" exec \"e1\": exec: \"nope\": executable file not found in $PATH") == 0);
    finish(&f);

    /* The child died before it reported. */
    fake_spawn(&f, NULL);
    child_closes_status(&f);
    status_ready(&f);
    CHECK(got.setup == 1 && got.code == RPC_INTERNAL &&
          strcmp(got.message, "container \"c1\": process died during setup") == 0);
    CHECK(f.p.status_fd == -1);
    finish(&f);
}

/* SIGCHLD and the status pipe are ready in one batch and the reaping runs first: the report
 * still answers the set-up (the process's state is EXITED by then). */
static void test_reaped_before_its_report(void)
{
    struct fake_child f;
    fake_spawn(&f, "e2");
    child_reports(&f, RPC_NOT_FOUND, "exec: \"nope\": executable file not found in $PATH");
    child_closes_status(&f);
    reap(&f);
    CHECK(f.p.exited && f.p.state == PROC_EXITED);
    status_ready(&f);
    CHECK(got.setup == 1 && got.code == RPC_NOT_FOUND);
    finish(&f);

    /* The same for an exec failure after StartProcess. */
    fake_spawn(&f, NULL);
    child_reports(&f, RPC_OK, "");
    status_ready(&f);
    char err[256];
    CHECK(process_start(&f.p, err, sizeof err) == RPC_OK);
    child_reports(&f, RPC_FAILED_PRECONDITION, "exec: \"/bin/x\": permission denied");
    reap(&f);
    status_ready(&f);
    CHECK(got.start == 1 && got.code == RPC_FAILED_PRECONDITION &&
          strcmp(got.message, "container \"c1\": exec: \"/bin/x\": permission denied") == 0);
    finish(&f);
}

static void test_start(void)
{
    struct fake_child f;
    char err[256];

    /* Not created yet: refused, nothing sent to the child. */
    fake_spawn(&f, NULL);
    CHECK(process_start(&f.p, err, sizeof err) == RPC_FAILED_PRECONDITION);
    CHECK(strcmp(err, "container \"c1\" cannot be started: it is being created") == 0);
    child_reports(&f, RPC_OK, "");
    status_ready(&f);

    /* Created: the start byte goes to the child, the answer waits for its exec. */
    CHECK(process_start(&f.p, err, sizeof err) == RPC_OK);
    char go = 0;
    CHECK(read(f.start_r, &go, 1) == 1 && go == 1);
    CHECK(f.p.state == PROC_STARTING && got.start == 0);
    /* Started twice: refused. */
    CHECK(process_start(&f.p, err, sizeof err) == RPC_FAILED_PRECONDITION);
    CHECK(strcmp(err, "container \"c1\" cannot be started: it is starting") == 0);
    /* It exec'd: the status pipe closes. */
    child_closes_status(&f);
    status_ready(&f);
    CHECK(got.start == 1 && got.code == RPC_OK && f.p.state == PROC_RUNNING && f.p.held.execd);
    finish(&f);

    /* The exec failed: reported, and the process runs on until it exits 127. */
    fake_spawn(&f, "e3");
    child_reports(&f, RPC_OK, "");
    status_ready(&f);
    CHECK(process_start(&f.p, err, sizeof err) == RPC_OK);
    child_reports(&f, RPC_NOT_FOUND, "exec: \"x\": no such file");
    status_ready(&f);
    CHECK(got.start == 1 && got.code == RPC_NOT_FOUND && f.p.state == PROC_RUNNING);
    /* Its EOF afterwards changes nothing. */
    child_closes_status(&f);
    status_ready(&f);
    CHECK(got.start == 1 && got.setup == 1);
    finish(&f);

    /* Gone: the start byte cannot be written. */
    fake_spawn(&f, NULL);
    child_reports(&f, RPC_OK, "");
    status_ready(&f);
    close(f.start_r);
    f.start_r = open("/dev/null", O_RDONLY);
    CHECK(process_start(&f.p, err, sizeof err) == RPC_FAILED_PRECONDITION);
    CHECK(strcmp(err, "container \"c1\": the process is gone") == 0);
    finish(&f);
}

static void test_end(void)
{
    struct fake_child f;
    fake_spawn(&f, NULL);
    child_reports(&f, RPC_OK, "");
    status_ready(&f);
    CHECK(!process_finished(&f.p));
    kill(f.p.pid, SIGKILL);
    int status;
    CHECK(waitpid(f.p.pid, &status, 0) == f.p.pid);
    process_exited(&f.p, status, 7);
    CHECK(process_finished(&f.p)); /* no output streams */
    CHECK(f.p.exit_status == 128 + SIGKILL && f.p.oom_kill == 7 && f.p.exited_at > 0);
    CHECK(process_start(&f.p, (char[64]){ 0 }, 64) == RPC_FAILED_PRECONDITION);
    finish(&f);

    /* exit(3) is 3, a signal 128 + it. */
    fake_spawn(&f, NULL);
    process_exited(&f.p, 3 << 8, 0);
    CHECK(f.p.exit_status == 3);
    f.p.exited = false; /* the fake child still runs: finish kills it */
    finish(&f);
}

static void test_signal_hold(void)
{
    struct fake_child f;

    /* Created: the child waits with handlers that end it; never held. */
    fake_spawn(&f, NULL);
    child_reports(&f, RPC_OK, "");
    status_ready(&f);
    CHECK(!process_hold_signal(&f.p, SIGTERM));
    /* Between the start and the exec every catchable signal is held (not SIGKILL). */
    char err[64];
    CHECK(process_start(&f.p, err, sizeof err) == RPC_OK);
    CHECK(process_hold_signal(&f.p, SIGTERM));
    CHECK(!process_hold_signal(&f.p, SIGKILL));
    CHECK(f.p.held.n == 1);
    /* Exited: its held signals go. */
    reap(&f);
    CHECK(f.p.held.n == 0 && !process_hold_signal(&f.p, SIGTERM));
    finish(&f);

    /* Never for an exec: the kernel does not drop its signals. */
    fake_spawn(&f, "e4");
    child_reports(&f, RPC_OK, "");
    status_ready(&f);
    CHECK(process_start(&f.p, err, sizeof err) == RPC_OK);
    CHECK(!process_hold_signal(&f.p, SIGTERM));
    finish(&f);
}

int main(void)
{
    log_set_fd(-1); /* the agent's log lines are expected here, not wanted */
    signal(SIGPIPE, SIG_IGN);
    CHECK(event_loop_init() == 0);
    struct stream_link link = { link_send, link_queued, NULL };
    stream_set_init(&streams, &link);
    process_layer_init(&events, &streams);
    test_setup_reports();
    test_reaped_before_its_report();
    test_start();
    test_end();
    test_signal_hold();
    printf("process: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
