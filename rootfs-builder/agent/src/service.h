/* The ttrpc service smolvm.agent.v1.Agent: decodes requests, enforces the handshake, and
 * dispatches to the handlers; data frames go to the stdio streams. */
#ifndef SMOLVM_SERVICE_H
#define SMOLVM_SERVICE_H

#include <stdint.h>

#include "ttrpc.h"

void service_on_frame(const struct ttrpc_frame *f);
void service_on_oversized(uint32_t stream_id, uint8_t type, uint32_t len);

#endif
