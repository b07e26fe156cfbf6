#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int path_join(char *buf, size_t cap, const char *a, const char *b)
{
	int n = snprintf(buf, cap, "%s/%s", a, b);
	if (n < 0 || (size_t)n >= cap)
		return -1;
	return 0;
}

bool is_plain_name(const char *s)
{
	size_t len = strlen(s);
	if (len == 0 || len > 255)
		return false;
	if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return false;
	return strchr(s, '/') == NULL && strchr(s, '\n') == NULL;
}

bool is_line_safe(const char *s)
{
	return strchr(s, '\n') == NULL;
}

bool has_dotdot_component(const char *s)
{
	const char *p = s;
	while (*p) {
		const char *end = strchr(p, '/');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == 2 && p[0] == '.' && p[1] == '.')
			return true;
		if (!end)
			break;
		p = end + 1;
	}
	return false;
}

int state_dir(char *buf, size_t cap)
{
	const char *root = getenv("SMOLVM_ROOT");
	if (!root || !*root) {
		int n = snprintf(buf, cap, "%s", "/run/smolvm");
		return (n < 0 || (size_t)n >= cap) ? -1 : 0;
	}
	if (has_dotdot_component(root))
		return -1;
	return path_join(buf, cap, root, "run");
}

int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int64_t monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
