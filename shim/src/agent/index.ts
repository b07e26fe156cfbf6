// Host side of the agent API: the client and its flow-controlled stdio streams.
export {
  AgentClient,
  AGENT_PROTOCOL_VERSION,
  AGENT_PROTOCOL_MINOR_EXEC,
  type AgentConnectOptions,
  type ProcessIo,
  type ProcessStdio,
  type WaitResult,
} from './client';
export * from './streams';
