/* `delete` when the daemon already deleted the container (no state file): containerd 1.6 runs
 * it after every shim disconnect and `ctr run --rm` waits for it. */
#ifndef SMOLVM_LAUNCHER_DELETE_H
#define SMOLVM_LAUNCHER_DELETE_H

#include "flags.h"
#include "util.h"

#include <stddef.h>
#include <stdint.h>

enum fast_result delete_fast(const struct shim_flags *flags);

/* containerd.task.v2.DeleteResponse as shim/src/bootstrap/delete.ts encodes it (zero fields
 * left out). Returns the length, or 0 when cap is too small. */
size_t encode_delete_response(uint8_t *out, size_t cap, uint32_t pid, uint32_t exit_status,
			      int64_t seconds, int32_t nanos);

#endif
