/* containerd-shim-smolvm-v1: the binary containerd executes. It answers the two frequent,
 * simple cases itself (no ~70 ms node start for them): `delete` of a container the daemon
 * already deleted, and `start` for containerd 1.6 (the group's live daemon, a warm-pool spare,
 * or a shim daemon it spawns as start.ts does). Everything else runs the
 * TypeScript shim (bin/containerd-shim-smolvm-v1.js, which loads dist/shim/src/main.js) with the same arguments, stdin and environment. */
#include "delete.h"
#include "fallback.h"
#include "flags.h"
#include "start.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* A closed fd 0-2 would be reused by the first open(); node reopens them on /dev/null at
 * start-up too, so doing it here changes nothing for it. */
static void ensure_std_fds(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
			int nfd = open("/dev/null", O_RDWR);
			if (nfd >= 0 && nfd != fd)
				close(nfd); /* not the lowest free fd after all: leave it */
		}
	}
}

int main(int argc, char **argv)
{
	ensure_std_fds();
	struct shim_flags flags;
	if (parse_flags(argc, argv, &flags) == 0 && !flags.version) {
		enum fast_result r = FAST_FALLBACK;
		if (strcmp(flags.action, "delete") == 0)
			r = delete_fast(&flags);
		else if (strcmp(flags.action, "start") == 0)
			r = start_fast(&flags);
		if (r == FAST_DONE)
			return 0;
		if (r == FAST_FAILED)
			return 1;
	}
	return exec_node(argc, argv);
}
