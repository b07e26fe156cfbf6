#include "start.h"

#include "claim.h"
#include "fallback.h"
#include "identifier.h"
#include "socket.h"
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CONFIG_BYTES (4 * 1024 * 1024)

/* Only containerd 1.6's bare-address answer over ttrpc is produced here; JSON and protobuf
 * answers (1.7+, 2.x) and gRPC stay with negotiate.ts. */
static bool env_allows_fast_start(void)
{
	const char *max = getenv("MAX_SHIM_VERSION");
	if (max && *max)
		return false;
	const char *proto = getenv("SMOLVM_SHIM_PROTOCOL");
	return !proto || !*proto || strcmp(proto, "auto") == 0 || strcmp(proto, "ttrpc") == 0;
}

/* The group is the id unless an annotation groups containers (start.ts groupOf): a spec that
 * could name one (or hide it behind a \u escape) is node's to read. */
static bool spec_has_no_group(const char *spec, size_t len)
{
	static const char *const needles[] = { "io.kubernetes.cri.sandbox-id", "io.containerd.runc.v2.group", "\\u" };
	for (size_t i = 0; i < sizeof(needles) / sizeof(needles[0]); i++) {
		if (memmem(spec, len, needles[i], strlen(needles[i])))
			return false;
	}
	return true;
}

static bool config_allows_fast_start(void)
{
	int fd = open("config.json", O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return false;
	struct stat st;
	char *buf = NULL;
	bool ok = false;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_CONFIG_BYTES)
		goto out;
	/* Read to EOF, not to st_size: the file may have changed since fstat. */
	buf = malloc(MAX_CONFIG_BYTES + 1);
	if (!buf)
		goto out;
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, MAX_CONFIG_BYTES + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto out;
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > MAX_CONFIG_BYTES)
			goto out;
	}
	ok = spec_has_no_group(buf, len);
out:
	free(buf);
	close(fd);
	return ok;
}

/* Reads stdin to EOF. 0: empty (or a TTY, which node also reads as empty); 1: it held bytes,
 * now in *memfd, or it could not be read (node reads what is left); -1: bytes were read and
 * cannot be handed on (message written). */
static int drain_stdin(int *memfd)
{
	*memfd = -1;
	if (isatty(0))
		return 0;
	char chunk[64 * 1024];
	for (;;) {
		ssize_t n = read(0, chunk, sizeof(chunk));
		if (n == 0)
			return *memfd >= 0 ? 1 : 0;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		if (*memfd < 0) {
			*memfd = memfd_create("smolvm-start-stdin", MFD_CLOEXEC);
			if (*memfd < 0) {
				fprintf(stderr, PROG ": start: saving stdin for node: memfd_create: %s\n", strerror(errno));
				return -1;
			}
		}
		if (write_all(*memfd, chunk, (size_t)n) != 0) {
			fprintf(stderr, PROG ": start: saving stdin for node: %s\n", strerror(errno));
			close(*memfd);
			*memfd = -1;
			return -1;
		}
	}
}

/* The answer (a live daemon, a claimed spare or a new daemon): `address` in the bundle
 * (containerd 1.6 reads it when it reconnects), then the bare address on stdout. */
static enum fast_result answer(const char *bundle, const char *addr)
{
	char file[PATH_MAX];
	if (path_join(file, sizeof(file), bundle, "address") != 0)
		return FAST_FALLBACK;
	int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644);
	if (fd < 0)
		return FAST_FALLBACK; /* node reuses the live socket the spare bound, or says why not */
	int rc = write_all(fd, addr, strlen(addr));
	if (close(fd) != 0)
		rc = -1;
	if (rc != 0)
		return FAST_FALLBACK;
	if (write_all(1, addr, strlen(addr)) != 0) {
		fprintf(stderr, PROG ": start: writing the address: %s\n", strerror(errno));
		return FAST_FAILED;
	}
	return FAST_DONE;
}

/* Tries the spares in order: 1 claimed (*result says how the answer went), 0 no spare took
 * it, -1 the pool cannot be read as we expect (node's). */
static int claim_from_pool(const char *request, size_t len, const char *bundle, enum fast_result *result)
{
	static char addr[MAX_ANSWER_BYTES];
	struct spare_list spares;
	int claimed = 0;
	if (list_spares(&spares) != 0) {
		claimed = -1;
		goto out;
	}
	for (size_t i = 0; i < spares.count; i++) {
		if (claim_spare(&spares, i, request, len, addr, sizeof(addr))) {
			*result = answer(bundle, addr);
			claimed = 1;
			goto out;
		}
	}
out:
	free_spares(&spares);
	return claimed;
}

/* start.ts startShim for containerd 1.6 with the id as the group: a live daemon of the group,
 * else a warm-pool spare, else a new daemon. Nothing with a side effect happens before every
 * check that could send the case to node has passed (stdin aside, which is put back). */
enum fast_result start_fast(const struct shim_flags *f)
{
	/* First of all, whoever answers: the id and namespace name sockets, files and claims. */
	if (!check_identifier("start", "container id", f->id) || !check_identifier("start", "namespace", f->namespace_))
		return FAST_FAILED;
	if (!env_allows_fast_start())
		return FAST_FALLBACK;
	char bundle[PATH_MAX];
	if (!getcwd(bundle, sizeof(bundle)) || bundle[0] != '/' || !is_line_safe(bundle))
		return FAST_FALLBACK;
	if (!config_allows_fast_start())
		return FAST_FALLBACK;
	const char *group = f->id;
	char socket[MAX_SOCKET_PATH + 1];
	if (shim_socket_path(f->address, f->namespace_, group, socket, sizeof(socket)) != 0)
		return FAST_FALLBACK;
	char address[MAX_SOCKET_PATH + sizeof("unix://")];
	snprintf(address, sizeof(address), "unix://%s", socket);

	static char request[MAX_CLAIM_BYTES + 1];
	const char *ttrpc = getenv("TTRPC_ADDRESS");
	struct claim_request req = {
		.namespace_ = f->namespace_, .id = f->id, .bundle = bundle, .group = group,
		.address = f->address, .publish_binary = f->publish_binary,
		.ttrpc_address = ttrpc ? ttrpc : "", .debug = f->debug,
	};
	size_t len = encode_claim(&req, request, sizeof(request));
	if (len == 0)
		return FAST_FALLBACK;

	int memfd;
	int in = drain_stdin(&memfd);
	if (in != 0) {
		/* Runtime options (or 2.3+ BootstrapParams): node's to read, from the same fd 0. */
		if (in < 0 || (memfd >= 0 && restore_stdin(memfd) != 0))
			return FAST_FAILED;
		return FAST_FALLBACK;
	}

	if (make_socket_dir() != 0)
		return FAST_FALLBACK; /* node says what is wrong with it */
	/* A live daemon serves every transport on its one socket: reuse it. */
	int live = probe_socket(socket);
	if (live < 0)
		return FAST_FALLBACK;
	if (live > 0)
		return answer(bundle, address);

	enum fast_result result = FAST_FALLBACK;
	int claimed = claim_from_pool(request, len, bundle, &result);
	if (claimed < 0)
		return FAST_FALLBACK;
	if (claimed > 0)
		return result;

	result = spawn_daemon(f, socket, group);
	if (result != FAST_DONE)
		return result;
	/* A failure here falls back to node, which finds the daemon's live socket. */
	return answer(bundle, address);
}
