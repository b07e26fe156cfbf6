/* Host-side unit test of the signal hold (signal_hold.c): which signals to a namespace init are
 * held, when held ones are delivered or dropped, the bound and the coalescing, and the parsing
 * of /proc/<pid>/status (run under ASan/UBSan). */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "signal_hold.h"

#include "check.h"

#define BIT(sig) (1ull << ((sig) - 1))

/* /proc/<pid>/status of a busybox sh as PID 1 of a container, shortened. */
static const char STATUS_TEXT[] =
    "Name:\tsh\n"
    "Umask:\t0022\n"
    "State:\tS (sleeping)\n"
    "Tgid:\t35\n"
    "NSpid:\t35\t1\n"
    "SigQ:\t0/3847\n"
    "SigPnd:\t0000000000000000\n"
    "ShdPnd:\t0000000000000000\n"
    "SigBlk:\t0000000000010000\n"
    "SigIgn:\t0000000000000004\n"
    "SigCgt:\t0000000000014002\n"
    "CapInh:\t0000000000000000\n"
    "Cpus_allowed_list:\t0\n";

static void test_parse(void)
{
    struct signal_masks m;
    CHECK(signal_masks_parse(STATUS_TEXT, &m) == 0);
    CHECK(m.blocked == BIT(SIGCHLD));
    CHECK(m.ignored == BIT(SIGQUIT));
    CHECK(m.caught == (BIT(SIGINT) | BIT(SIGTERM) | BIT(SIGCHLD)));
    CHECK(signal_masks_parse("SigBlk:\tFFFFFFFFFFFFFFFF\nSigIgn:\t0\nSigCgt:\t8000000000000000", &m) == 0);
    CHECK(m.blocked == ~0ull && m.ignored == 0 && m.caught == BIT(64));

    /* A field missing, empty, not hex or too long: refused, the output untouched. */
    static const char *const bad[] = {
        "SigBlk:\t0\nSigIgn:\t0\n",
        "SigBlk:\t0\nSigIgn:\t0\nSigCgt:\t\n",
        "SigBlk:\t0\nSigIgn:\t0\nSigCgt:\t00x1\n",
        "SigBlk:\t0\nSigIgn:\t0\nSigCgt:\t00000000000000000\n",
        /* A key that only starts like one, and no key at the start of a line. */
        "SigBlk:\t0\nSigIgn:\t0\nSigCgtX:\t1\n",
        "SigBlk:\t0\nSigIgn:\t0\nx SigCgt:\t1\n",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct signal_masks untouched = { 1, 2, 3 };
        CHECK(signal_masks_parse(bad[i], &untouched) < 0);
        CHECK(untouched.blocked == 1 && untouched.ignored == 2 && untouched.caught == 3);
    }
    CHECK(signal_masks_parse(NULL, &m) < 0);
}

static void test_wanted(void)
{
    struct signal_hold h = { 0 };
    struct signal_masks none = { 0 };

    /* Before the exec every signal but SIGKILL, SIGSTOP and SIGCONT is held, masks or not. */
    CHECK(signal_hold_wanted(&h, SIGTERM, NULL, 5));
    CHECK(signal_hold_wanted(&h, SIGINT, &none, 5));
    CHECK(signal_hold_wanted(&h, SIGWINCH, NULL, 5));
    CHECK(signal_hold_wanted(&h, 64, NULL, 5));
    CHECK(!signal_hold_wanted(&h, SIGKILL, NULL, 5));
    CHECK(!signal_hold_wanted(&h, SIGSTOP, NULL, 5));
    CHECK(!signal_hold_wanted(&h, SIGCONT, NULL, 5));
    CHECK(!signal_hold_wanted(&h, 0, NULL, 5));
    CHECK(!signal_hold_wanted(&h, 65, NULL, 5));

    /* In the window: held only when the process neither catches, ignores nor blocks it. */
    signal_hold_on_exec(&h, 1000);
    CHECK(signal_hold_wanted(&h, SIGTERM, &none, 1001));
    struct signal_masks caught = { .caught = BIT(SIGTERM) };
    struct signal_masks ignored = { .ignored = BIT(SIGTERM) };
    struct signal_masks blocked = { .blocked = BIT(SIGTERM) };
    CHECK(!signal_hold_wanted(&h, SIGTERM, &caught, 1001));
    CHECK(!signal_hold_wanted(&h, SIGTERM, &ignored, 1001));
    CHECK(!signal_hold_wanted(&h, SIGTERM, &blocked, 1001));
    CHECK(signal_hold_wanted(&h, SIGINT, &caught, 1001));
    /* Masks unreadable (the process is gone): sent, the kill reports it. */
    CHECK(!signal_hold_wanted(&h, SIGTERM, NULL, 1001));
    CHECK(!signal_hold_wanted(&h, SIGKILL, &none, 1001));

    /* The window's last millisecond, then past it: sent as it is. */
    CHECK(signal_hold_wanted(&h, SIGTERM, &none, 1000 + SIGNAL_HOLD_WINDOW_MS - 1));
    CHECK(!signal_hold_wanted(&h, SIGTERM, &none, 1000 + SIGNAL_HOLD_WINDOW_MS));
    CHECK(!signal_hold_wanted(&h, SIGTERM, &none, 1000 + 10 * SIGNAL_HOLD_WINDOW_MS));
}

static void test_add_bound_and_coalescing(void)
{
    struct signal_hold h = { 0 };
    CHECK(signal_hold_add(&h, SIGTERM));
    CHECK(signal_hold_add(&h, SIGTERM)); /* a standard signal: held once */
    CHECK(h.n == 1);
    CHECK(signal_hold_add(&h, 40));
    CHECK(signal_hold_add(&h, 40)); /* a real-time signal queues: each one */
    CHECK(h.n == 3);
    while (h.n < SIGNAL_HOLD_MAX)
        CHECK(signal_hold_add(&h, 50));
    CHECK(!signal_hold_add(&h, 51));
    CHECK(signal_hold_add(&h, SIGTERM)); /* already held: nothing to add */
    CHECK(h.n == SIGNAL_HOLD_MAX);
    CHECK(signal_hold_clear(&h) == SIGNAL_HOLD_MAX);
    CHECK(h.n == 0 && signal_hold_clear(&h) == 0);
}

static void test_poll(void)
{
    struct signal_hold h = { 0 };
    int deliver[SIGNAL_HOLD_MAX];
    size_t dropped = 99;
    struct signal_masks none = { 0 };

    /* Held before the exec: a poll changes nothing, and none is needed. */
    CHECK(signal_hold_add(&h, SIGTERM));
    CHECK(signal_hold_add(&h, SIGHUP));
    CHECK(signal_hold_add(&h, SIGINT));
    CHECK(!signal_hold_needs_poll(&h));
    struct signal_masks all = { .caught = ~0ull };
    CHECK(signal_hold_poll(&h, &all, 50000, deliver, &dropped) == 0);
    CHECK(dropped == 0 && h.n == 3);

    signal_hold_on_exec(&h, 100);
    CHECK(signal_hold_needs_poll(&h));
    /* Nothing taken yet, or masks unreadable: all stay. */
    CHECK(signal_hold_poll(&h, &none, 110, deliver, &dropped) == 0 && dropped == 0 && h.n == 3);
    CHECK(signal_hold_poll(&h, NULL, 120, deliver, &dropped) == 0 && dropped == 0 && h.n == 3);

    /* INT and TERM handled (in the order they came), HUP still not: it stays alone. */
    struct signal_masks some = { .caught = BIT(SIGINT), .blocked = BIT(SIGTERM) };
    CHECK(signal_hold_poll(&h, &some, 250, deliver, &dropped) == 2);
    CHECK(deliver[0] == SIGTERM && deliver[1] == SIGINT);
    CHECK(dropped == 0 && h.n == 1 && h.sigs[0] == SIGHUP);

    /* The window ends: what the process still does not take is dropped, what it takes goes. */
    CHECK(signal_hold_add(&h, SIGUSR1));
    struct signal_masks usr1 = { .ignored = BIT(SIGUSR1) };
    CHECK(signal_hold_poll(&h, &usr1, 100 + SIGNAL_HOLD_WINDOW_MS, deliver, &dropped) == 1);
    CHECK(deliver[0] == SIGUSR1 && dropped == 1 && h.n == 0);
    CHECK(!signal_hold_needs_poll(&h));

    /* Past the window with unreadable masks: everything dropped. */
    CHECK(signal_hold_add(&h, SIGTERM) && signal_hold_add(&h, 40));
    CHECK(signal_hold_poll(&h, NULL, 200 + SIGNAL_HOLD_WINDOW_MS, deliver, &dropped) == 0);
    CHECK(dropped == 2 && h.n == 0);
}

/* Polled often while handlers usually appear, then less: each poll reads the process's status. */
static void test_poll_interval(void)
{
    struct signal_hold h = { 0 };
    CHECK(signal_hold_poll_interval_ms(&h, 5) == SIGNAL_HOLD_POLL_FAST_MS);
    signal_hold_on_exec(&h, 100);
    CHECK(signal_hold_poll_interval_ms(&h, 100) == SIGNAL_HOLD_POLL_FAST_MS);
    CHECK(signal_hold_poll_interval_ms(&h, 100 + SIGNAL_HOLD_FAST_FOR_MS - 1) == SIGNAL_HOLD_POLL_FAST_MS);
    CHECK(signal_hold_poll_interval_ms(&h, 100 + SIGNAL_HOLD_FAST_FOR_MS) == SIGNAL_HOLD_POLL_SLOW_MS);
    CHECK(signal_hold_poll_interval_ms(&h, 100 + SIGNAL_HOLD_WINDOW_MS) == SIGNAL_HOLD_POLL_SLOW_MS);
    CHECK(SIGNAL_HOLD_POLL_FAST_MS < SIGNAL_HOLD_POLL_SLOW_MS && SIGNAL_HOLD_FAST_FOR_MS < SIGNAL_HOLD_WINDOW_MS);
}

/* kubelet's stop right after a start: SIGTERM while the start is in flight, the program
 * installs its handler a while after the exec; the signal goes out once, at the first poll
 * that sees the handler. */
static void test_stop_right_after_start(void)
{
    struct signal_hold h = { 0 };
    struct signal_masks m = { 0 };
    int deliver[SIGNAL_HOLD_MAX];
    size_t dropped, delivered = 0;
    CHECK(signal_hold_wanted(&h, SIGTERM, NULL, 0) && signal_hold_add(&h, SIGTERM));
    signal_hold_on_exec(&h, 3);
    for (uint64_t now = 3; now < 3 + SIGNAL_HOLD_WINDOW_MS; now += signal_hold_poll_interval_ms(&h, now)) {
        if (now >= 150)
            m.caught = BIT(SIGTERM) | BIT(SIGINT);
        size_t n = signal_hold_poll(&h, &m, now, deliver, &dropped);
        CHECK(dropped == 0);
        if (n) {
            CHECK(n == 1 && deliver[0] == SIGTERM);
            CHECK(now >= 150 && now < 150 + SIGNAL_HOLD_POLL_FAST_MS);
        }
        delivered += n;
        if (!signal_hold_needs_poll(&h))
            break;
    }
    CHECK(delivered == 1 && h.n == 0);
    /* A later SIGTERM, handler installed: sent at once. */
    CHECK(!signal_hold_wanted(&h, SIGTERM, &m, 5000));
}

/* A PID 1 that never installs a handler (`sleep` as the init): held through the window, then
 * dropped, as runc's kernel would have dropped it at once. */
static void test_never_handled(void)
{
    struct signal_hold h = { 0 };
    struct signal_masks m = { .caught = BIT(SIGINT) };
    int deliver[SIGNAL_HOLD_MAX];
    size_t dropped, total_dropped = 0, polls = 0;
    signal_hold_on_exec(&h, 0);
    CHECK(signal_hold_wanted(&h, SIGTERM, &m, 20) && signal_hold_add(&h, SIGTERM));
    uint64_t now = 20;
    while (signal_hold_needs_poll(&h) && polls < 100000) {
        now += signal_hold_poll_interval_ms(&h, now);
        CHECK(signal_hold_poll(&h, &m, now, deliver, &dropped) == 0);
        total_dropped += dropped;
        polls++;
    }
    CHECK(total_dropped == 1 && h.n == 0);
    CHECK(now >= SIGNAL_HOLD_WINDOW_MS && now < SIGNAL_HOLD_WINDOW_MS + SIGNAL_HOLD_POLL_SLOW_MS);
    /* About 1000/10 fast polls, then (window - 1000)/50 slow ones. */
    CHECK(polls <= SIGNAL_HOLD_FAST_FOR_MS / SIGNAL_HOLD_POLL_FAST_MS +
                       (SIGNAL_HOLD_WINDOW_MS - SIGNAL_HOLD_FAST_FOR_MS) / SIGNAL_HOLD_POLL_SLOW_MS + 2);
}

int main(void)
{
    test_parse();
    test_wanted();
    test_add_bound_and_coalescing();
    test_poll();
    test_poll_interval();
    test_stop_right_after_start();
    test_never_handled();
    printf("signal hold tests: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
