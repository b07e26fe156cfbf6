// The agent protocol revision that carries the OCI spec's security settings and mounts
// (proto/smolvm/agent.proto, HandshakeResponse.protocol_minor).
export const AGENT_PROTOCOL_MINOR_OCI = 2;
