import type { Timestamp } from '../gen/google/protobuf/timestamp';

export function toTimestamp(date: Date): Timestamp {
  const ms = date.getTime();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}

export function timestampNow(): Timestamp {
  return toTimestamp(new Date());
}

export function fromUnixNano(ns: number): Date {
  return new Date(Math.floor(ns / 1e6));
}
