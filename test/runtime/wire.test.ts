import { strict as assert } from 'node:assert';
import { EventFlag, FrameKind, decodeFrame, encodeEvent, encodeInput } from '../../runtime/wire.ts';

const bytes = (s: string) => new TextEncoder().encode(s);

describe('wire: the sender of an input and the clients of an event', () => {
  it('an input carries its sender, and an input without one decodes with an empty sender', () => {
    const named = decodeFrame(encodeInput('ann.1', 'move', bytes('p'), 'ann'));
    assert.equal(named.kind, FrameKind.input);
    assert.deepEqual(
      named.kind === FrameKind.input && [
        named.requestId,
        named.type,
        named.sender,
        [...named.payload],
      ],
      ['ann.1', 'move', 'ann', [...bytes('p')]],
    );
    const unnamed = decodeFrame(encodeInput('x.1', 'tick', bytes('q')));
    assert.equal(unnamed.kind === FrameKind.input && unnamed.sender, '');
    assert.deepEqual(unnamed.kind === FrameKind.input && [...unnamed.payload], [...bytes('q')]);
  });

  it('an event names its clients, or none for all', () => {
    const at = { epoch: 2, term: 1, seq: 7 };
    const some = decodeFrame(encodeEvent(1, at, 'whisper', bytes('hi'), ['bob', 'cy']));
    assert.ok(some.kind === FrameKind.event);
    assert.deepEqual(some.to, ['bob', 'cy']);
    assert.equal(some.flags & EventFlag.targeted, EventFlag.targeted);
    assert.deepEqual([...some.payload], [...bytes('hi')]);
    const all = decodeFrame(encodeEvent(1, at, 'shout', bytes('yo')));
    assert.ok(all.kind === FrameKind.event);
    assert.equal(all.to, undefined);
  });

  it('a truncated sender or target list is a malformed frame, not a crash', () => {
    const input = encodeInput('ann.1', 'move', new Uint8Array(0), 'ann');
    assert.throws(() => decodeFrame(input.subarray(0, input.length - 2)), /malformed frame/);
    const event = encodeEvent(1, { epoch: 1, term: 0, seq: 1 }, 'e', new Uint8Array(0), ['bob']);
    assert.throws(() => decodeFrame(event.subarray(0, event.length - 1)), /malformed frame/);
  });
});
