#include "flags.h"

#include <stddef.h>
#include <string.h>

/* Flags that take a value; -socket is an alias of -address (containerd 2.x). */
static const char **value_slot(struct shim_flags *f, const char *name, size_t len)
{
	static const struct {
		const char *name;
		size_t offset;
	} table[] = {
		{ "namespace", offsetof(struct shim_flags, namespace_) },
		{ "address", offsetof(struct shim_flags, address) },
		{ "publish-binary", offsetof(struct shim_flags, publish_binary) },
		{ "id", offsetof(struct shim_flags, id) },
		{ "bundle", offsetof(struct shim_flags, bundle) },
		{ "socket", offsetof(struct shim_flags, address) },
	};
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		if (strlen(table[i].name) == len && memcmp(table[i].name, name, len) == 0)
			return (const char **)((char *)f + table[i].offset);
	}
	return NULL;
}

static bool name_is(const char *name, size_t len, const char *want)
{
	return strlen(want) == len && memcmp(name, want, len) == 0;
}

int parse_flags(int argc, char **argv, struct shim_flags *f)
{
	*f = (struct shim_flags){ "", "", "", "", "", "", false, false };
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (arg[0] != '-') {
			if (f->action[0])
				return -1; /* a second positional: flags.ts throws */
			f->action = arg;
			continue;
		}
		/* flags.ts strips /^--?/, then splits at the first '='. */
		const char *name = arg + 1;
		if (*name == '-')
			name++;
		const char *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		const char *value = eq ? eq + 1 : NULL;

		if (name_is(name, len, "debug")) {
			f->debug = value == NULL || strcmp(value, "false") != 0;
			continue;
		}
		if (name_is(name, len, "v") || name_is(name, len, "version")) {
			f->version = true;
			continue;
		}
		const char **slot = value_slot(f, name, len);
		if (!slot) {
			/* Unknown flags of newer containerd versions take a value: skip it. */
			if (!value && i + 1 < argc && argv[i + 1][0] != '-')
				i++;
			continue;
		}
		if (!value) {
			if (i + 1 >= argc)
				return -1; /* "flag needs an argument" */
			value = argv[++i];
		}
		*slot = value;
	}
	return 0;
}
