/* The shim's command line, parsed exactly as shim/src/bootstrap/flags.ts does (Go flag style). */
#ifndef SMOLVM_LAUNCHER_FLAGS_H
#define SMOLVM_LAUNCHER_FLAGS_H

#include <stdbool.h>

struct shim_flags {
	/* Point into argv (never NULL: "" when not given, as in flags.ts). */
	const char *namespace_;
	const char *address;
	const char *publish_binary;
	const char *id;
	const char *bundle;
	const char *action;
	bool debug;
	bool version;
};

/* 0 when parsed as flags.ts would; -1 where flags.ts throws (node reports it). */
int parse_flags(int argc, char **argv, struct shim_flags *out);

#endif
