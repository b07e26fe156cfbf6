/* Clone safety: VMs restored from one template snapshot start with the same kernel RNG state,
 * clock and hostname. The host's first calls on a restored VM (Handshake, then Reseed) mix
 * fresh host entropy into the RNG and force the CRNG to reseed, set the wall clock and the
 * hostname, so no two clones hand out the same "random" keys, UUIDs or nonces. */
#ifndef SMOLVM_RESEED_H
#define SMOLVM_RESEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent_pb.h"

/* Fewest host entropy bytes a Reseed accepts (256 bits), and the most. */
#define RESEED_MIN_ENTROPY 32
#define RESEED_MAX_ENTROPY 65536
/* virtio-rng output mixed in on top of the host's bytes. */
#define RESEED_HWRNG_BYTES 64

/* Credits `len` bytes to the input pool (RNDADDENTROPY) and forces a CRNG reseed
 * (RNDRESEEDCRNG). True when the reseed took effect. */
bool rng_mix_and_reseed(const uint8_t *entropy, size_t len);

/* Reads up to `cap` bytes from /dev/hwrng (virtio-rng) without waiting long; bytes read. */
size_t rng_read_hwrng(uint8_t *buf, size_t cap);

/* Handshake: sets the wall clock to the host's (0: left alone) and mixes the host's entropy in. */
void reseed_on_handshake(uint64_t host_time_unix_nano, const uint8_t *entropy, size_t len);

/* The Reseed RPC's work (proto/smolvm/agent.proto): host entropy and virtio-rng's mixed in, the
 * CRNG reseeded, clock and hostname set. RPC_OK with what was done, or RPC_INVALID_ARGUMENT and
 * the message in err. */
int reseed_apply(const struct reseed_request *req, bool *crng_reseeded, uint32_t *hwrng_bytes, char *err,
                 size_t errcap);

#endif
