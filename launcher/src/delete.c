#include "delete.h"

#include "identifier.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXIT_STATUS_KILLED 137

static size_t put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

size_t encode_delete_response(uint8_t *out, size_t cap, uint32_t pid, uint32_t exit_status,
			      int64_t seconds, int32_t nanos)
{
	uint8_t ts[32];
	size_t tn = 0;
	if (seconds != 0) {
		ts[tn++] = 0x08;
		tn += put_varint(ts + tn, (uint64_t)seconds);
	}
	if (nanos != 0) {
		ts[tn++] = 0x10;
		tn += put_varint(ts + tn, (uint64_t)(uint32_t)nanos);
	}
	/* At most 2*(1+5) + 1+1 + tn bytes: the buffer must hold that. */
	if (cap < 14 + tn)
		return 0;
	size_t n = 0;
	if (pid != 0) {
		out[n++] = 0x08;
		n += put_varint(out + n, pid);
	}
	if (exit_status != 0) {
		out[n++] = 0x10;
		n += put_varint(out + n, exit_status);
	}
	out[n++] = 0x1a;
	n += put_varint(out + n, tn);
	memcpy(out + n, ts, tn);
	return n + tn;
}

/* 0: no state file (fast path applies); 1: it exists or cannot be told (node decides). */
static int state_file_absent(const char *namespace_, const char *id)
{
	char dir[PATH_MAX], tasks[PATH_MAX], ns_dir[PATH_MAX], name[NAME_MAX + 8], file[PATH_MAX];
	if (state_dir(dir, sizeof(dir)) != 0)
		return 1;
	int n = snprintf(name, sizeof(name), "%s.json", id);
	if (n < 0 || (size_t)n >= sizeof(name))
		return 1;
	if (path_join(tasks, sizeof(tasks), dir, "tasks") != 0 ||
	    path_join(ns_dir, sizeof(ns_dir), tasks, namespace_) != 0 ||
	    path_join(file, sizeof(file), ns_dir, name) != 0)
		return 1;
	struct stat st;
	if (lstat(file, &st) == 0)
		return 1;
	return errno == ENOENT ? 0 : 1;
}

enum fast_result delete_fast(const struct shim_flags *f)
{
	const char *namespace_ = f->namespace_[0] ? f->namespace_ : "default";
	/* Before any path is built: the id and namespace name the state file. */
	if (!check_identifier("delete", "container id", f->id) || !check_identifier("delete", "namespace", namespace_))
		return FAST_FAILED;
	if (state_file_absent(namespace_, f->id) != 0)
		return FAST_FALLBACK;

	char cwd[PATH_MAX], options[PATH_MAX];
	const char *bundle = f->bundle;
	if (!bundle[0]) {
		if (!getcwd(cwd, sizeof(cwd)))
			return FAST_FALLBACK;
		bundle = cwd;
	}
	/* containerd passes an absolute, clean bundle path: anything else is node's to refuse. */
	if (bundle[0] != '/' || has_dotdot_component(bundle) || path_join(options, sizeof(options), bundle, "options.pb") != 0)
		return FAST_FALLBACK;
	/* The runtime options start left for the daemon; anything but "already gone" is node's. */
	if (unlink(options) != 0 && errno != ENOENT)
		return FAST_FALLBACK;

	/* Millisecond precision, as delete.ts (Date) encodes it. */
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	uint8_t out[64];
	size_t len = encode_delete_response(out, sizeof(out), 0, EXIT_STATUS_KILLED, (int64_t)now.tv_sec,
					    (int32_t)(now.tv_nsec / 1000000) * 1000000);
	if (len == 0 || write_all(1, out, len) != 0) {
		fprintf(stderr, PROG ": delete %s: writing the DeleteResponse: %s\n", f->id,
			len == 0 ? "encoding failed" : strerror(errno));
		return FAST_FAILED;
	}
	return FAST_DONE;
}
