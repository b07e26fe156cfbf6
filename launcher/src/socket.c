#include "socket.h"

#include "sha256.h"
#include "util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static bool printable_ascii(const char *s)
{
	for (; *s; s++) {
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return false;
	}
	return true;
}

/* An absolute path that node's path.join(p, …) keeps byte for byte. */
static bool is_normal_absolute(const char *p)
{
	if (p[0] != '/' || p[1] == '\0' || !printable_ascii(p))
		return false;
	const char *c = p + 1;
	for (;;) {
		const char *end = strchr(c, '/');
		size_t len = end ? (size_t)(end - c) : strlen(c);
		if (len == 0) /* "//" or a trailing '/' */
			return false;
		if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		if (!end)
			return true;
		c = end + 1;
	}
}

int shim_socket_path(const char *address, const char *namespace_, const char *group, char *buf, size_t cap)
{
	if (!is_normal_absolute(address) || !is_plain_name(namespace_) || !printable_ascii(namespace_) ||
	    !is_plain_name(group) || !printable_ascii(group))
		return -1;
	/* path.join(address, namespace, group), which is then just this concatenation. */
	struct sha256 s;
	uint8_t digest[SHA256_DIGEST_BYTES];
	sha256_init(&s);
	sha256_update(&s, address, strlen(address));
	sha256_update(&s, "/", 1);
	sha256_update(&s, namespace_, strlen(namespace_));
	sha256_update(&s, "/", 1);
	sha256_update(&s, group, strlen(group));
	sha256_final(&s, digest);
	char hex[SHA256_HEX_BYTES];
	for (int i = 0; i < SHA256_DIGEST_BYTES; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	int n = snprintf(buf, cap, "%s/%s", SOCKET_DIR, hex);
	if (n < 0 || (size_t)n >= cap || n > MAX_SOCKET_PATH)
		return -1;
	return 0;
}

int make_socket_dir(void)
{
	struct stat st;
	if (stat(SOCKET_DIR, &st) == 0)
		return S_ISDIR(st.st_mode) ? 0 : -1;
	char dir[] = SOCKET_DIR;
	for (char *slash = strchr(dir + 1, '/');; slash = strchr(slash + 1, '/')) {
		if (slash)
			*slash = '\0';
		if (mkdir(dir, 0711) != 0 && errno != EEXIST)
			return -1;
		if (!slash)
			break;
		*slash = '/';
	}
	return stat(SOCKET_DIR, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

int probe_socket(const char *path)
{
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (n < 0 || (size_t)n >= sizeof(sa.sun_path))
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	/* A unix-domain connect completes at once or fails: no timeout to wait out. */
	int rc = connect(fd, (const struct sockaddr *)&sa, sizeof(sa));
	int err = errno;
	close(fd);
	if (rc == 0)
		return 1;
	/* A listener whose backlog is full is alive (node would call it dead and remove its socket:
	 * the launcher leaves it alone and answers with it). */
	if (err == EAGAIN)
		return 1;
	if (err == EINTR)
		return -1;
	/* ENOENT, ECONNREFUSED (stale), ENOTSOCK …: nothing answers. */
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path); /* as removeStaleSocket: a failure shows when the daemon binds */
	return 0;
}
