#include "fallback.h"

#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SMOLVM_MAIN_JS
#error "SMOLVM_MAIN_JS (absolute path of bin/containerd-shim-smolvm-v1.js) must be defined by the Makefile"
#endif

#define MAIN_JS_REL "bin/containerd-shim-smolvm-v1.js"

int resolve_main_js(char *buf, size_t cap)
{
	char exe[PATH_MAX];
	if (realpath("/proc/self/exe", exe)) {
		char *slash = strrchr(exe, '/'); /* …/bin/<binary> -> …/bin */
		if (slash)
			*slash = '\0';
		slash = strrchr(exe, '/'); /* …/bin -> … (the repository) */
		if (slash && slash != exe) {
			*slash = '\0';
			struct stat st;
			if (path_join(buf, cap, exe, MAIN_JS_REL) == 0 && stat(buf, &st) == 0)
				return 0;
		}
	}
	int n = snprintf(buf, cap, "%s", SMOLVM_MAIN_JS);
	return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}

int exec_node(int argc, char **argv)
{
	static char main_js[PATH_MAX];
	if (resolve_main_js(main_js, sizeof(main_js)) != 0) {
		fprintf(stderr, PROG ": cannot resolve the shim's node entry (path too long)\n");
		return 1;
	}
	char **args = calloc((size_t)argc + 2, sizeof(char *));
	if (!args) {
		fprintf(stderr, PROG ": out of memory building node's arguments\n");
		return 1;
	}
	args[0] = "node";
	args[1] = main_js;
	for (int i = 1; i < argc; i++)
		args[i + 1] = argv[i];
	args[argc + 1] = NULL;
	execvp("node", args);
	fprintf(stderr, PROG ": exec node %s: %s\n", main_js, strerror(errno));
	free(args);
	return 1;
}

int restore_stdin(int memfd)
{
	if (lseek(memfd, 0, SEEK_SET) != 0) {
		fprintf(stderr, PROG ": rewinding the saved stdin: %s\n", strerror(errno));
		close(memfd);
		return -1;
	}
	if (dup2(memfd, 0) < 0) {
		fprintf(stderr, PROG ": putting the saved stdin back on fd 0: %s\n", strerror(errno));
		close(memfd);
		return -1;
	}
	close(memfd);
	return 0;
}
