/* smolvm-vmm-exec: the one way smolvm starts a VMM process (QEMU for the tcg backend,
 * smolvm-vmm for kvm). Node's spawn and posix_spawn have no pre-exec hook, so this small
 * program runs in the child between fork and the VMM's exec:
 *
 *   smolvm-vmm-exec --vm-dir DIR --record FILE --parent PID -- PROG [ARG...]
 *
 *  1. PR_SET_PDEATHSIG(SIGKILL): the VMM dies with the shim process that spawned it, then
 *     getppid() is checked against PID (the parent may have died before the prctl took hold);
 *  2. FILE (inside DIR) gets our pid and start time and the parent's, written atomically
 *     (write + rename), before the VMM can run: a sweep finds every VMM from disk;
 *  3. SMOLVM_VM_DIR=DIR and SMOLVM_VMM_PARENT=<pid>:<start time> go into the VMM's
 *     environment (/proc/<pid>/environ): the /proc backstop of that sweep, which attributes
 *     the process to one state root by DIR (shim/src/sandbox/vmm-sweep.ts);
 *  4. exec PROG (PATH is searched when it has no '/'), keeping every inherited descriptor.
 *
 * Later (issues 10/11/14) it is also where the pod's network namespace is joined and the
 * jail applied, between 3 and 4: further options go in parse_args, further steps in main.
 *
 * Exit codes (the VMMs' own are 0-3): see enum below. Nothing but the record is created, and
 * the record is removed again when the exec fails. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROG_NAME "smolvm-vmm-exec"

enum exit_code {
	EXIT_USAGE = 121,       /* bad arguments */
	EXIT_PARENT_GONE = 122, /* the parent named by --parent is no longer ours */
	EXIT_SETUP = 123,       /* prctl, /proc or the record failed */
	EXIT_EXEC = 124,        /* PROG could not be executed */
};

#define ENV_VM_DIR "SMOLVM_VM_DIR"
#define ENV_PARENT "SMOLVM_VMM_PARENT"

/* Field 22 of /proc/<pid>/stat is at most 20 digits; pids fit an int (pid_max <= 2^22). */
#define START_TIME_MAX 24

struct args {
	const char *vm_dir; /* without trailing slashes once parsed */
	const char *record;
	pid_t parent;
	char **command; /* PROG ARG... (NULL-terminated, as argv is) */
};

static void usage_error(const char *fmt, const char *what)
{
	fprintf(stderr, PROG_NAME ": ");
	fprintf(stderr, fmt, what);
	fprintf(stderr, "\nusage: " PROG_NAME " --vm-dir DIR --record FILE --parent PID -- PROG [ARG...]\n");
	exit(EXIT_USAGE);
}

static pid_t parse_pid(const char *text)
{
	char *end = NULL;
	errno = 0;
	long value = strtol(text, &end, 10);
	if (text[0] < '0' || text[0] > '9' || errno != 0 || *end != '\0' || value <= 0 || value > INT_MAX)
		usage_error("--parent %s is not a process id", text);
	return (pid_t)value;
}

/* The directory part of an absolute path, without trailing slashes, into buf. */
static int dir_of(const char *file, char *buf, size_t cap)
{
	const char *slash = strrchr(file, '/');
	size_t len = (size_t)(slash - file);
	while (len > 1 && file[len - 1] == '/')
		len--;
	if (len == 0)
		len = 1; /* "/name" lives in "/" */
	if (len >= cap)
		return -1;
	memcpy(buf, file, len);
	buf[len] = '\0';
	return 0;
}

/* DIR without trailing slashes, for comparing with dir_of(FILE). */
static int trimmed(const char *dir, char *buf, size_t cap)
{
	size_t len = strlen(dir);
	while (len > 1 && dir[len - 1] == '/')
		len--;
	if (len >= cap)
		return -1;
	memcpy(buf, dir, len);
	buf[len] = '\0';
	return 0;
}

static void parse_args(int argc, char **argv, struct args *out)
{
	memset(out, 0, sizeof(*out));
	bool have_parent = false;
	int i = 1;
	for (; i < argc; i++) {
		const char *opt = argv[i];
		if (strcmp(opt, "--") == 0)
			break;
		const char **slot = NULL;
		if (strcmp(opt, "--vm-dir") == 0)
			slot = &out->vm_dir;
		else if (strcmp(opt, "--record") == 0)
			slot = &out->record;
		else if (strcmp(opt, "--parent") != 0)
			usage_error("unknown option %s", opt);
		if (i + 1 >= argc)
			usage_error("%s needs a value", opt);
		const char *value = argv[++i];
		if (slot) {
			if (*slot)
				usage_error("%s given twice", opt);
			*slot = value;
		} else {
			if (have_parent)
				usage_error("%s given twice", opt);
			out->parent = parse_pid(value);
			have_parent = true;
		}
	}
	if (i >= argc)
		usage_error("%s", "missing -- before the program to run");
	if (i + 1 >= argc || argv[i + 1][0] == '\0')
		usage_error("%s", "no program after --");
	out->command = &argv[i + 1];
	if (!out->vm_dir)
		usage_error("%s", "--vm-dir is required");
	if (!out->record)
		usage_error("%s", "--record is required");
	if (!have_parent)
		usage_error("%s", "--parent is required");
	if (out->vm_dir[0] != '/')
		usage_error("--vm-dir %s is not an absolute path", out->vm_dir);
	if (out->record[0] != '/')
		usage_error("--record %s is not an absolute path", out->record);
	struct stat st;
	if (stat(out->vm_dir, &st) != 0 || !S_ISDIR(st.st_mode))
		usage_error("--vm-dir %s is not a directory", out->vm_dir);
	char record_dir[PATH_MAX], vm_dir[PATH_MAX];
	const char *base = strrchr(out->record, '/') + 1;
	if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		usage_error("--record %s does not name a file", out->record);
	if (dir_of(out->record, record_dir, sizeof(record_dir)) != 0 || trimmed(out->vm_dir, vm_dir, sizeof(vm_dir)) != 0)
		usage_error("%s: path too long", out->record);
	if (strcmp(record_dir, vm_dir) != 0)
		usage_error("--record %s is not a file directly inside --vm-dir", out->record);
	static char normalized[PATH_MAX];
	memcpy(normalized, vm_dir, strlen(vm_dir) + 1);
	out->vm_dir = normalized;
}

/* Field 22 (starttime) of /proc/<pid>/stat ("self" when pid is 0), as text; -1 when the
 * process is gone or a zombie (a dead parent must not count as alive). */
static int start_time(pid_t pid, char *out, size_t cap)
{
	char path[64];
	if (pid == 0)
		snprintf(path, sizeof(path), "/proc/self/stat");
	else
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	char buf[4096];
	ssize_t n;
	do
		n = read(fd, buf, sizeof(buf) - 1);
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* comm (field 2) may hold spaces and parentheses: fields 3.. follow the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p || p[1] != ' ')
		return -1;
	p += 2;
	if (*p == 'Z' || *p == 'X')
		return -1;
	for (int field = 3; field < 22; field++) {
		p = strchr(p, ' ');
		if (!p)
			return -1;
		p++;
	}
	size_t len = strcspn(p, " \n");
	if (len == 0 || len >= cap)
		return -1;
	for (size_t k = 0; k < len; k++)
		if (p[k] < '0' || p[k] > '9')
			return -1;
	memcpy(out, p, len);
	out[len] = '\0';
	return 0;
}

static int write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* s as a JSON string (quotes included) into buf; -1 when it does not fit. */
static int json_string(const char *s, char *buf, size_t cap)
{
	size_t at = 0;
	if (cap < 3)
		return -1;
	buf[at++] = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		char esc[8];
		size_t len;
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			len = 2;
		} else if (*p < 0x20) {
			len = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", *p);
		} else {
			esc[0] = (char)*p;
			len = 1;
		}
		if (at + len + 2 > cap)
			return -1;
		memcpy(buf + at, esc, len);
		at += len;
	}
	buf[at++] = '"';
	buf[at] = '\0';
	return 0;
}

/* The record, written to a temporary name and renamed: a reader sees all of it or nothing. */
static int write_record(const struct args *args, const char *own_start, const char *parent_start)
{
	char dir_json[PATH_MAX * 6 + 3], prog_json[PATH_MAX * 6 + 3];
	if (json_string(args->vm_dir, dir_json, sizeof(dir_json)) != 0 ||
	    json_string(args->command[0], prog_json, sizeof(prog_json)) != 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	char *text = NULL;
	int len = asprintf(&text,
			   "{\"pid\":%d,\"startTime\":\"%s\",\"parent\":{\"pid\":%d,\"startTime\":\"%s\"},"
			   "\"vmDir\":%s,\"program\":%s}\n",
			   (int)getpid(), own_start, (int)args->parent, parent_start, dir_json, prog_json);
	if (len < 0)
		return -1;
	char tmp[PATH_MAX];
	int n = snprintf(tmp, sizeof(tmp), "%s.%d.tmp", args->record, (int)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		free(text);
		errno = ENAMETOOLONG;
		return -1;
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		free(text);
		return -1;
	}
	int rc = write_all(fd, text, (size_t)len);
	int saved = errno;
	free(text);
	if (close(fd) != 0 && rc == 0) {
		rc = -1;
		saved = errno;
	}
	if (rc == 0 && rename(tmp, args->record) != 0) {
		rc = -1;
		saved = errno;
	}
	if (rc != 0) {
		unlink(tmp);
		errno = saved;
	}
	return rc;
}

int main(int argc, char **argv)
{
	struct args args;
	parse_args(argc, argv, &args);

	/* Armed first, checked second: a parent that died before the prctl sends nothing. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) {
		fprintf(stderr, PROG_NAME ": prctl(PR_SET_PDEATHSIG): %s\n", strerror(errno));
		return EXIT_SETUP;
	}
	if (getppid() != args.parent) {
		fprintf(stderr, PROG_NAME ": parent %d is gone (our parent is now %d): not starting %s\n",
			(int)args.parent, (int)getppid(), args.command[0]);
		return EXIT_PARENT_GONE;
	}
	char own_start[START_TIME_MAX], parent_start[START_TIME_MAX];
	if (start_time(0, own_start, sizeof(own_start)) != 0) {
		fprintf(stderr, PROG_NAME ": cannot read /proc/self/stat\n");
		return EXIT_SETUP;
	}
	/* Still our parent after its start time was read: that start time is the parent's, not a
	 * successor's under a recycled pid. */
	if (start_time(args.parent, parent_start, sizeof(parent_start)) != 0 || getppid() != args.parent) {
		fprintf(stderr, PROG_NAME ": parent %d is gone: not starting %s\n", (int)args.parent, args.command[0]);
		return EXIT_PARENT_GONE;
	}
	if (write_record(&args, own_start, parent_start) != 0) {
		fprintf(stderr, PROG_NAME ": cannot write the record %s: %s\n", args.record, strerror(errno));
		return EXIT_SETUP;
	}
	char parent_env[64];
	snprintf(parent_env, sizeof(parent_env), "%d:%s", (int)args.parent, parent_start);
	if (setenv(ENV_VM_DIR, args.vm_dir, 1) != 0 || setenv(ENV_PARENT, parent_env, 1) != 0) {
		int saved = errno;
		unlink(args.record);
		fprintf(stderr, PROG_NAME ": setenv: %s\n", strerror(saved));
		return EXIT_SETUP;
	}
	execvp(args.command[0], args.command);
	int saved = errno;
	unlink(args.record);
	fprintf(stderr, PROG_NAME ": cannot execute %s: %s\n", args.command[0], strerror(saved));
	return EXIT_EXEC;
}
