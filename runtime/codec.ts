import { Packr } from 'msgpackr';

/**
 * The value codec for replies, payloads, patches and snapshots: MessagePack
 * with structured-clone extensions, so that Map, Set, Date, undefined and
 * binary values (Uint8Array) survive a round trip. bench/ compares it with JSON.
 *
 * One Packr per codec instance (not per module) keeps no shared mutable state
 * at module level beyond this immutable configuration.
 */
export interface ValueCodec {
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
}

/** Creates the default MessagePack codec. */
export function createValueCodec(): ValueCodec {
  const packr = new Packr({ structuredClone: true, moreTypes: true });
  return {
    encode: (value) => packr.pack(value),
    decode: (bytes) => packr.unpack(bytes),
  };
}
