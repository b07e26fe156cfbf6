/* One fork + setsid, no double fork: the daemon leads its own session (start.ts spawns it with
 * detached: true, i.e. setsid), so containerd's signals to the launcher's group do not reach it,
 * and the launcher exits as soon as the daemon is ready, after which the daemon is reparented
 * (to containerd when it is a subreaper, else init) and never a zombie of the launcher. A
 * double fork would only matter if the launcher lived on; it does not. */
#include "spawn.h"

#include "fallback.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define READY_FD 3
/* How often the launcher looks for an early exit while the ready pipe stays silent (it may be
 * held open by something the daemon started). */
#define POLL_SLICE_MS 100
/* After EOF without a word: how long to look for the exit status of a daemon that just died. */
#define EXIT_GRACE_MS 200

static const char *const OWN_ENV[] = { "SMOLVM_SHIM_SOCKET=", "SMOLVM_SHIM_GROUP=" };

/* The launcher's environment with SMOLVM_SHIM_SOCKET and SMOLVM_SHIM_GROUP set (replaced),
 * as start.ts's { ...env, SMOLVM_SHIM_SOCKET, SMOLVM_SHIM_GROUP }. NULL when out of memory. */
static char **daemon_env(char *socket_var, char *group_var)
{
	size_t n = 0;
	while (environ[n])
		n++;
	char **env = calloc(n + 3, sizeof(char *));
	if (!env)
		return NULL;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		bool own = false;
		for (size_t j = 0; j < sizeof(OWN_ENV) / sizeof(OWN_ENV[0]); j++)
			own = own || strncmp(environ[i], OWN_ENV[j], strlen(OWN_ENV[j])) == 0;
		if (!own)
			env[k++] = environ[i];
	}
	env[k++] = socket_var;
	env[k++] = group_var;
	env[k] = NULL;
	return env;
}

/* Everything above fd 3 closed: the launcher's own fds are O_CLOEXEC, but containerd (or
 * whoever ran it) may have left others open, and the daemon must not hold them. */
static void close_from(int lowest)
{
	if (close_range((unsigned)lowest, ~0U, 0) == 0)
		return;
	struct rlimit rl;
	long max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (long)rl.rlim_cur : 65536;
	if (max > 65536)
		max = 65536;
	for (long fd = lowest; fd < max; fd++)
		close((int)fd);
}

/* In the child: only async-signal-safe calls from here to exec. */
static void run_child(int devnull, int ready, char **args, char **env, const char *main_js)
{
	setsid();
	/* As libuv's spawn: default dispositions and no blocked signals, whatever the caller set. */
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int sig = 1; sig < NSIG; sig++) {
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	}
	if (dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(devnull, 2) < 0)
		_exit(127);
	if (ready == READY_FD) {
		if (fcntl(READY_FD, F_SETFD, 0) != 0) /* dup2 onto itself would keep O_CLOEXEC */
			_exit(127);
	} else if (dup2(ready, READY_FD) < 0) {
		_exit(127);
	}
	close_from(READY_FD + 1);
	/* node from PATH, as the fallback's execvp (execvpe: the launcher's PATH, env for node). */
	execvpe("node", args, env);
	int err = errno;
	const char *pre = "error: exec node ";
	const char *mid = ": ";
	const char *why = strerror(err);
	if (write(READY_FD, pre, strlen(pre)) < 0 || write(READY_FD, main_js, strlen(main_js)) < 0 ||
	    write(READY_FD, mid, strlen(mid)) < 0 || write(READY_FD, why, strlen(why)) < 0)
		_exit(127);
	_exit(127);
}

static void trim(char *s)
{
	size_t len = strlen(s);
	while (len > 0 && strchr(" \t\r\n\v\f", s[len - 1]))
		s[--len] = '\0';
	size_t lead = strspn(s, " \t\r\n\v\f");
	memmove(s, s + lead, len - lead + 1);
}

static void describe_status(int status, char *buf, size_t cap)
{
	if (WIFEXITED(status))
		snprintf(buf, cap, "exit code %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, cap, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(buf, cap, "status 0x%x", (unsigned)status);
}

struct ready {
	char text[MAX_READY_MESSAGE + 1];
	size_t len;
	bool truncated;
	bool eof;
	bool exited; /* reaped: status is valid, the pid is no longer ours to signal */
	int status;
};

/* Reads what is in the pipe now (it is O_NONBLOCK); -1 on a read error (errno set). */
static int drain(int fd, struct ready *r)
{
	for (;;) {
		char chunk[4096];
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? 0 : -1;
		}
		if (n == 0) {
			r->eof = true;
			return 0;
		}
		size_t keep = (size_t)n;
		if (keep > MAX_READY_MESSAGE - r->len) {
			keep = MAX_READY_MESSAGE - r->len;
			r->truncated = true;
		}
		memcpy(r->text + r->len, chunk, keep);
		r->len += keep;
	}
}

/* Waits for the daemon's answer: EOF on the ready pipe, or its exit (what it wrote before it
 * exited is all in the pipe by then, even while something it started holds the pipe open).
 * Which of the two is noticed first is a race: the answer is decided by what it wrote either
 * way ("ok" is ready), the exit status only explains silence. Fills *why on failure. */
static bool wait_ready(pid_t pid, int fd, struct ready *r, char *why, size_t why_cap)
{
	int64_t deadline = monotonic_ms() + READY_TIMEOUT_MS;
	while (!r->eof && !r->exited) {
		int64_t left = deadline - monotonic_ms();
		if (left <= 0) {
			snprintf(why, why_cap, "not ready within %d s", READY_TIMEOUT_MS / 1000);
			return false;
		}
		struct pollfd p = { .fd = fd, .events = POLLIN, .revents = 0 };
		int n = poll(&p, 1, (int)(left < POLL_SLICE_MS ? left : POLL_SLICE_MS));
		if (n < 0 && errno != EINTR) {
			snprintf(why, why_cap, "polling the ready pipe: %s", strerror(errno));
			return false;
		}
		if (n > 0 && drain(fd, r) != 0) {
			snprintf(why, why_cap, "reading the ready pipe: %s", strerror(errno));
			return false;
		}
		if (!r->eof && waitpid(pid, &r->status, WNOHANG) == pid) {
			/* It may have written and exited since the drain above: read what it left. */
			r->exited = true;
			if (drain(fd, r) != 0) {
				snprintf(why, why_cap, "reading the ready pipe: %s", strerror(errno));
				return false;
			}
		}
	}
	r->text[r->len] = '\0';
	trim(r->text);
	if (strcmp(r->text, "ok") == 0 && !r->truncated)
		return true;
	if (r->text[0]) {
		snprintf(why, why_cap, "%s%s", r->text, r->truncated ? " …" : "");
		return false;
	}
	/* Closed without a word: most likely it died; say how if it did. */
	int64_t until = monotonic_ms() + EXIT_GRACE_MS;
	while (!r->exited && monotonic_ms() < until) {
		if (waitpid(pid, &r->status, WNOHANG) == pid)
			r->exited = true;
		else
			usleep(5000);
	}
	if (r->exited) {
		char st[64];
		describe_status(r->status, st, sizeof(st));
		snprintf(why, why_cap, "exited during start (%s) without a word", st);
	} else {
		snprintf(why, why_cap, "no reason given");
	}
	return false;
}

/* How long node's `delete` may take to clean after a daemon that failed to start (containerd
 * gives its own `delete` about 5 s). */
#define CLEANUP_TIMEOUT_MS 5000

/* Waits up to `ms` for child `pid` to end; true once it has (or is no child of ours). */
static bool reap_within(pid_t pid, int ms)
{
	for (int waited = 0;; waited += 10) {
		pid_t got = waitpid(pid, NULL, WNOHANG);
		if (got == pid || (got < 0 && errno != EINTR))
			return true;
		if (waited >= ms)
			return false;
		usleep(10 * 1000);
	}
}

/* The daemon died (or was killed) before it served. containerd runs no `delete` for a shim it
 * never reached, so what the daemon left (its state file, an early VM's directory; its VMM
 * died with it) is cleaned here by node's `delete` for this id, bounded. Its stdout (a
 * DeleteResponse) is dropped; its stderr goes where the launcher's does. */
static void clean_after_failed_start(const struct shim_flags *f, const char *main_js, pid_t daemon)
{
	/* Reaped first: the sweep in `delete` leaves a VM directory alone while its owner lives. */
	reap_within(daemon, 2000);
	pid_t pid = fork();
	if (pid < 0)
		return;
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0)
			_exit(127);
		close_from(3);
		char *args[] = { "node", (char *)main_js, "-namespace", (char *)f->namespace_, "-id", (char *)f->id,
				 "-address", (char *)f->address, "-publish-binary", (char *)f->publish_binary,
				 "delete", NULL };
		execvp("node", args);
		_exit(127);
	}
	if (!reap_within(pid, CLEANUP_TIMEOUT_MS)) {
		kill(pid, SIGKILL);
		reap_within(pid, 1000);
		fprintf(stderr, PROG ": start: cleaning up after the daemon took over %d ms; stopped\n", CLEANUP_TIMEOUT_MS);
	}
}

enum fast_result spawn_daemon(const struct shim_flags *f, const char *socket, const char *group)
{
	static char main_js[PATH_MAX];
	if (resolve_main_js(main_js, sizeof(main_js)) != 0)
		return FAST_FALLBACK; /* node says why */

	size_t socket_len = strlen("SMOLVM_SHIM_SOCKET=") + strlen(socket) + 1;
	size_t group_len = strlen("SMOLVM_SHIM_GROUP=") + strlen(group) + 1;
	char *socket_var = malloc(socket_len);
	char *group_var = malloc(group_len);
	char **env = NULL;
	enum fast_result result = FAST_FALLBACK;
	int devnull = -1, pipefd[2] = { -1, -1 };
	if (!socket_var || !group_var)
		goto out;
	snprintf(socket_var, socket_len, "SMOLVM_SHIM_SOCKET=%s", socket);
	snprintf(group_var, group_len, "SMOLVM_SHIM_GROUP=%s", group);
	if (!(env = daemon_env(socket_var, group_var)))
		goto out;
	/* Cast: execvpe takes char *const[], the strings are never written. */
	char *args[] = { "node", main_js, "-namespace", (char *)f->namespace_, "-id", (char *)f->id,
			 "-address", (char *)f->address, "-publish-binary", (char *)f->publish_binary,
			 f->debug ? "-debug" : "daemon", f->debug ? "daemon" : NULL, NULL };

	devnull = open("/dev/null", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (devnull < 0 || pipe2(pipefd, O_CLOEXEC) != 0)
		goto out;
	/* Only the launcher's end: the daemon's end stays blocking. */
	if (fcntl(pipefd[0], F_SETFL, O_NONBLOCK) != 0)
		goto out;

	pid_t pid = fork();
	if (pid < 0)
		goto out;
	if (pid == 0)
		run_child(devnull, pipefd[1], args, env, main_js);
	close(pipefd[1]);
	pipefd[1] = -1;
	close(devnull);
	devnull = -1;

	static struct ready r; /* 16 KiB: not on the stack */
	char why[MAX_READY_MESSAGE + 256];
	memset(&r, 0, sizeof(r));
	if (wait_ready(pid, pipefd[0], &r, why, sizeof(why))) {
		result = FAST_DONE; /* it runs on, detached (reaped only if it exited after "ok") */
		goto out;
	}
	/* Its process group too (setsid made it the leader; the group outlives a leader that
	 * exited while its members hold the pipe): what it started goes with it. */
	kill(-pid, SIGKILL);
	if (!r.exited)
		kill(pid, SIGKILL);
	fprintf(stderr, PROG ": shim daemon failed to start: %s\n", why);
	clean_after_failed_start(f, main_js, pid);
	result = FAST_FAILED;
out:
	if (result == FAST_FALLBACK)
		fprintf(stderr, PROG ": start: preparing the shim daemon: %s (handing over to node)\n", strerror(errno));
	for (int i = 0; i < 2; i++) {
		if (pipefd[i] >= 0)
			close(pipefd[i]);
	}
	if (devnull >= 0)
		close(devnull);
	free(env);
	free(socket_var);
	free(group_var);
	return result;
}
