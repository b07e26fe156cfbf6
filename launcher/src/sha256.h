/* SHA-256 (FIPS 180-4), for the shim socket name: hex(sha256(address/namespace/group)), as
 * shim/src/bootstrap/address.ts computes it with node's crypto. */
#ifndef SMOLVM_LAUNCHER_SHA256_H
#define SMOLVM_LAUNCHER_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_BYTES 32
#define SHA256_HEX_BYTES (2 * SHA256_DIGEST_BYTES + 1) /* with the NUL */

struct sha256 {
	uint32_t h[8];
	uint64_t total; /* bytes hashed so far */
	uint8_t block[64];
	size_t used; /* bytes waiting in block */
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t len);
void sha256_final(struct sha256 *s, uint8_t out[SHA256_DIGEST_BYTES]);

/* The digest of data as 64 lowercase hex digits and a NUL. */
void sha256_hex(const void *data, size_t len, char out[SHA256_HEX_BYTES]);

#endif
