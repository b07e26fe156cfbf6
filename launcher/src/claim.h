/* The claimer side of the warm pool's claim protocol (shim/src/pool/protocol.ts). */
#ifndef SMOLVM_LAUNCHER_CLAIM_H
#define SMOLVM_LAUNCHER_CLAIM_H

#include <stdbool.h>
#include <stddef.h>

#define MAX_CLAIM_BYTES (64 * 1024)
#define CLAIM_TIMEOUT_MS 2000
/* "ok unix://" + a socket path (108 bytes at most) fits easily. */
#define MAX_ANSWER_BYTES 1024
/* More spares than this is not a pool we know: node handles it. */
#define MAX_SPARES 1024

struct claim_request {
	const char *namespace_;
	const char *id;
	const char *bundle;
	const char *group;
	const char *address;
	const char *publish_binary;
	const char *ttrpc_address;
	bool debug;
};

/* The spares of <stateDir>/pool that take claims, oldest (smallest name) first. */
struct spare_list {
	int pool_fd; /* <stateDir>/pool, O_DIRECTORY; -1 when absent */
	char pool_path[4096];
	char **names;
	size_t count;
};

/* 0 with the list filled (maybe empty), -1 when the pool cannot be read as we expect. */
int list_spares(struct spare_list *list);
void free_spares(struct spare_list *list);

/* The request bytes; returns the length, 0 when a value cannot be sent (newline, a
 * malformed or repeated SMOLVM_* variable) or it would exceed MAX_CLAIM_BYTES. */
size_t encode_claim(const struct claim_request *req, char *buf, size_t cap);

/* Claims one spare: 1 with the shim address in addr (NUL-terminated), 0 when this spare
 * did not answer ok (busy, refused, timeout, error). */
int claim_spare(const struct spare_list *list, size_t index, const char *request, size_t len,
		char *addr, size_t addr_cap);

#endif
