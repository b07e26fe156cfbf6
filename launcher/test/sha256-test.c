/* Test tool for src/sha256.c (not shipped): prints hex(sha256(stdin)) and a newline. The digest
 * is computed in one piece and again fed in chunks of several sizes (across block boundaries);
 * exit 2 when they disagree. test/unit/launcher.test.ts compares the output to node's crypto. */
#include "../src/sha256.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_INPUT (64 * 1024 * 1024)

int main(void)
{
	size_t cap = 1 << 16, len = 0;
	unsigned char *buf = malloc(cap);
	if (!buf)
		return 1;
	for (;;) {
		if (len == cap) {
			if (cap >= MAX_INPUT) {
				fprintf(stderr, "sha256-test: input over %d bytes\n", MAX_INPUT);
				free(buf);
				return 1;
			}
			unsigned char *bigger = realloc(buf, cap * 2);
			if (!bigger) {
				free(buf);
				return 1;
			}
			buf = bigger;
			cap *= 2;
		}
		ssize_t n = read(0, buf + len, cap - len);
		if (n < 0) {
			perror("sha256-test: read");
			free(buf);
			return 1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	char whole[SHA256_HEX_BYTES];
	sha256_hex(buf, len, whole);
	static const size_t chunks[] = { 1, 3, 55, 56, 63, 64, 65, 1000 };
	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		struct sha256 s;
		unsigned char d[SHA256_DIGEST_BYTES];
		char hex[SHA256_HEX_BYTES];
		sha256_init(&s);
		for (size_t off = 0; off < len; off += chunks[c])
			sha256_update(&s, buf + off, len - off < chunks[c] ? len - off : chunks[c]);
		sha256_final(&s, d);
		for (int i = 0; i < SHA256_DIGEST_BYTES; i++)
			snprintf(hex + 2 * i, 3, "%02x", d[i]);
		if (strcmp(hex, whole) != 0) {
			fprintf(stderr, "sha256-test: in chunks of %zu: %s, in one piece: %s\n", chunks[c], hex, whole);
			free(buf);
			return 2;
		}
	}
	free(buf);
	printf("%s\n", whole);
	return 0;
}
