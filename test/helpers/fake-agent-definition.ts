// The agent service definition for fake agents (ttrpc servers playing smolvm-init in tests).
// The generated HandshakeRequest decoder (forceLong=number) refuses host_time_unix_nano, which
// is above 2^53; the real agent is C and unaffected. The fake decodes it by hand.
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { AgentDefinition, HandshakeRequest } from '../../shim/src/gen/smolvm/agent';
import type { MessageCodec } from '../../shim/src/ttrpc';

const LenientHandshakeRequest: MessageCodec<HandshakeRequest> = {
  encode: (message, writer) => HandshakeRequest.encode(message, writer),
  decode(input) {
    const reader = input instanceof BinaryReader ? input : new BinaryReader(input);
    const message: HandshakeRequest = { protocolVersion: 0, hostTimeUnixNano: 0n, entropy: Buffer.alloc(0) };
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (field === 1 && wireType === WireType.Varint) message.protocolVersion = reader.uint32();
      else if (field === 2 && wireType === WireType.Varint) message.hostTimeUnixNano = BigInt(reader.uint64());
      else if (field === 3 && wireType === WireType.LengthDelimited) message.entropy = Buffer.from(reader.bytes());
      else reader.skip(wireType, field);
    }
    return message;
  },
};

export const FakeAgentDefinition = {
  ...AgentDefinition,
  methods: { ...AgentDefinition.methods, handshake: { ...AgentDefinition.methods.handshake, requestType: LenientHandshakeRequest } },
} as const;
