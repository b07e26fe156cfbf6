/* The google.rpc.Status codes (containerd errdefs) the agent answers with. Every layer reports
 * its results in them (0 or a code, and a message), so that the RPC layer can answer the host
 * with exactly what went wrong; only the RPC layer puts them on the wire. */
#ifndef SMOLVM_RPC_STATUS_H
#define SMOLVM_RPC_STATUS_H

enum rpc_code {
    RPC_OK = 0,
    RPC_INVALID_ARGUMENT = 3,
    RPC_NOT_FOUND = 5,
    RPC_ALREADY_EXISTS = 6,
    RPC_RESOURCE_EXHAUSTED = 8,
    RPC_FAILED_PRECONDITION = 9,
    RPC_UNIMPLEMENTED = 12,
    RPC_INTERNAL = 13,
    RPC_UNAVAILABLE = 14,
};

#endif
