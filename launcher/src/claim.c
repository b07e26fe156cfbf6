#include "claim.h"

#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

extern char **environ;

#define CLAIM_MAGIC "smolvm-claim 1"

/* The daemon's own wiring, never compared by a spare (protocol.ts INTERNAL_ENV). */
static bool is_internal_env(const char *name, size_t len)
{
	static const char *const internal[] = { "SMOLVM_SHIM_SOCKET", "SMOLVM_SHIM_GROUP", "SMOLVM_SPARE_DIR" };
	for (size_t i = 0; i < sizeof(internal) / sizeof(internal[0]); i++) {
		if (strlen(internal[i]) == len && memcmp(internal[i], name, len) == 0)
			return true;
	}
	return false;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A spare's directory that has its claim.sock (it exists only while the spare takes claims). */
static bool takes_claims(int pool_fd, const char *name)
{
	struct stat st;
	if (fstatat(pool_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
		return false;
	char sock[NAME_MAX + 16];
	int n = snprintf(sock, sizeof(sock), "%s/claim.sock", name);
	if (n < 0 || (size_t)n >= sizeof(sock))
		return false;
	return fstatat(pool_fd, sock, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode);
}

int list_spares(struct spare_list *l)
{
	char dir[PATH_MAX];
	l->pool_fd = -1;
	l->names = NULL;
	l->count = 0;
	if (state_dir(dir, sizeof(dir)) != 0 || path_join(l->pool_path, sizeof(l->pool_path), dir, "pool") != 0)
		return -1;
	l->pool_fd = open(l->pool_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (l->pool_fd < 0)
		return errno == ENOENT ? 0 : -1;
	l->names = calloc(MAX_SPARES, sizeof(char *));
	int list_fd = fcntl(l->pool_fd, F_DUPFD_CLOEXEC, 0);
	DIR *d = list_fd >= 0 ? fdopendir(list_fd) : NULL;
	if (!l->names || !d) {
		if (list_fd >= 0 && !d)
			close(list_fd);
		if (d)
			closedir(d);
		return -1;
	}
	int rc = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		const char *name = e->d_name;
		if (name[0] == '.' || strcmp(name, "fill.lock") == 0 || !takes_claims(l->pool_fd, name))
			continue;
		if (l->count == MAX_SPARES || !(l->names[l->count] = strdup(name))) {
			rc = -1;
			break;
		}
		l->count++;
	}
	closedir(d);
	/* Oldest first: spare ids are "<ms since epoch>-<pid>". */
	qsort(l->names, l->count, sizeof(char *), compare_names);
	return rc;
}

void free_spares(struct spare_list *l)
{
	for (size_t i = 0; i < l->count; i++)
		free(l->names[i]);
	free(l->names);
	l->names = NULL;
	l->count = 0;
	if (l->pool_fd >= 0)
		close(l->pool_fd);
	l->pool_fd = -1;
}

struct out {
	char *p;
	size_t cap;
	size_t len;
	bool bad;
};

static void put_line(struct out *o, const char *key, const char *value)
{
	if (o->bad)
		return;
	if (!is_line_safe(value)) {
		o->bad = true;
		return;
	}
	size_t room = o->cap - o->len;
	int n = key ? snprintf(o->p + o->len, room, "%s=%s\n", key, value)
		    : snprintf(o->p + o->len, room, "%s\n", value);
	if (n < 0 || (size_t)n >= room) {
		o->bad = true;
		return;
	}
	o->len += (size_t)n;
}

/* true when the SMOLVM_* variable `entry` (NAME=…) appears earlier in environ: a spare keeps
 * one value per name, so which one node would have sent cannot be told. */
static bool repeated_name(size_t index, const char *entry, size_t name_len)
{
	for (size_t i = 0; i < index; i++) {
		if (strncmp(environ[i], entry, name_len + 1) == 0)
			return true;
	}
	return false;
}

static void put_env(struct out *o)
{
	for (size_t i = 0; environ[i] && !o->bad; i++) {
		const char *entry = environ[i];
		if (strncmp(entry, "SMOLVM_", 7) != 0)
			continue;
		const char *eq = strchr(entry, '=');
		if (!eq) {
			o->bad = true;
			return;
		}
		size_t name_len = (size_t)(eq - entry);
		if (is_internal_env(entry, name_len))
			continue;
		if (repeated_name(i, entry, name_len)) {
			o->bad = true;
			return;
		}
		put_line(o, "env", entry);
	}
}

size_t encode_claim(const struct claim_request *req, char *buf, size_t cap)
{
	struct out o = { buf, cap, 0, false };
	put_line(&o, NULL, CLAIM_MAGIC);
	put_line(&o, "namespace", req->namespace_);
	put_line(&o, "id", req->id);
	put_line(&o, "bundle", req->bundle);
	put_line(&o, "group", req->group);
	put_line(&o, "address", req->address);
	put_line(&o, "publish_binary", req->publish_binary);
	put_line(&o, "ttrpc_address", req->ttrpc_address);
	put_line(&o, "socket_dir", ""); /* containerd's default, /run/containerd/s */
	put_line(&o, "debug", req->debug ? "1" : "0");
	put_env(&o);
	put_line(&o, NULL, ""); /* the empty line that ends the request */
	if (o.bad || o.len > MAX_CLAIM_BYTES)
		return 0;
	return o.len;
}

/* Waits for `events` on fd until the deadline; 0 ready, -1 timeout or error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - monotonic_ms();
		if (left <= 0)
			return -1;
		struct pollfd p = { .fd = fd, .events = events, .revents = 0 };
		int r = poll(&p, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		return r > 0 ? 0 : -1;
	}
}

/* <pool>/<name>/claim.sock; through /proc/self/fd when the full path exceeds sun_path. */
static int claim_address(const struct spare_list *l, const char *name, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	int n = snprintf(sa->sun_path, sizeof(sa->sun_path), "%s/%s/claim.sock", l->pool_path, name);
	if (n >= 0 && (size_t)n < sizeof(sa->sun_path))
		return 0;
	n = snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d/%s/claim.sock", l->pool_fd, name);
	return (n >= 0 && (size_t)n < sizeof(sa->sun_path)) ? 0 : -1;
}

static int connect_by(int fd, const struct sockaddr_un *sa, int64_t deadline)
{
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
		return 0;
	/* EAGAIN (a full backlog) is not retried: a spare that busy is not worth the wait. */
	if (errno != EINPROGRESS && errno != EINTR)
		return -1;
	if (wait_fd(fd, POLLOUT, deadline) != 0)
		return -1;
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0)
		return -1;
	return 0;
}

static int send_by(int fd, const char *data, size_t len, int64_t deadline)
{
	while (len > 0) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN || wait_fd(fd, POLLOUT, deadline) != 0)
				return -1;
			continue;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One answer line, without its newline, NUL-terminated; -1 on EOF before it, overflow,
 * timeout or error. */
static int read_line(int fd, char *line, size_t cap, int64_t deadline)
{
	size_t len = 0;
	for (;;) {
		if (len + 1 >= cap)
			return -1;
		ssize_t n = recv(fd, line + len, cap - 1 - len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN || wait_fd(fd, POLLIN, deadline) != 0)
				return -1;
			continue;
		}
		if (n == 0)
			return -1;
		char *nl = memchr(line + len, '\n', (size_t)n);
		len += (size_t)n;
		if (nl) {
			*nl = '\0';
			/* A NUL inside the line would cut the address short: not an answer we take. */
			return memchr(line, '\0', (size_t)(nl - line)) ? -1 : 0;
		}
	}
}

int claim_spare(const struct spare_list *l, size_t index, const char *request, size_t len,
		char *addr, size_t addr_cap)
{
	struct sockaddr_un sa;
	if (claim_address(l, l->names[index], &sa) != 0)
		return 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	int64_t deadline = monotonic_ms() + CLAIM_TIMEOUT_MS;
	char line[MAX_ANSWER_BYTES];
	int ok = connect_by(fd, &sa, deadline) == 0 && send_by(fd, request, len, deadline) == 0 &&
		 read_line(fd, line, sizeof(line), deadline) == 0;
	close(fd);
	/* "ok unix://…": claimed. busy, refused … or anything else: the next spare. */
	if (!ok || strncmp(line, "ok unix://", 10) != 0 || line[10] == '\0')
		return 0;
	int n = snprintf(addr, addr_cap, "%s", line + 3);
	return (n >= 0 && (size_t)n < addr_cap) ? 1 : 0;
}
