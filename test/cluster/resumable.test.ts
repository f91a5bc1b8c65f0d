import assert from 'node:assert/strict';
import { PassThrough, Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { resumableStream, type SourceOpener } from '../../src/cluster/resumable.js';
import { imageBytes } from '../helpers/origin.js';

const logger = pino({ level: 'silent' });

/** A peer that sends `data` up to `stopAt` and then stays silent (its connection open). */
function silentPeer(data: Buffer, stopAt: number): Readable {
  const peer = new PassThrough();
  peer.write(data.subarray(0, stopAt));
  return peer;
}

describe('one stream over successive sources (src/cluster/resumable.ts)', () => {
  it('replaces a peer silent for peerStallMs by the origin from the byte reached', { timeout: 10_000 }, async () => {
    const data = imageBytes(256 * 1024, 51);
    const calls: Array<[number, string | null]> = [];
    const next: SourceOpener = async (offset, failedPeer) => {
      calls.push([offset, failedPeer]);
      if (failedPeer === null) return { stream: silentPeer(data, 100_000), peer: 'http://peer', from: 0 };
      return { stream: Readable.from([data.subarray(offset)]), peer: null, from: offset };
    };
    const stream = await resumableStream('img', next, { onPeerBytes: () => {}, logger, peerStallMs: 200 }, new AbortController().signal);
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    assert.ok(Buffer.concat(chunks).equals(data));
    assert.deepEqual(calls, [
      [0, null],
      [100_000, 'http://peer'],
    ]);
  });

  it('does not count the time its own reader takes to drain as the peer stalling', { timeout: 10_000 }, async () => {
    const data = imageBytes(4 << 20, 52);
    const next: SourceOpener = async (offset, failedPeer) => {
      assert.equal(failedPeer, null, `the peer was replaced at ${offset} while it was waiting for our reader`);
      return { stream: Readable.from([data.subarray(0, 2 << 20), data.subarray(2 << 20)]), peer: 'http://peer', from: 0 };
    };
    const stream = await resumableStream('img', next, { onPeerBytes: () => {}, logger, peerStallMs: 100 }, new AbortController().signal);
    await sleep(400); // nobody reads: the 1 MiB buffer is full and the pump waits for 'drain' far past 100 ms
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    assert.ok(Buffer.concat(chunks).equals(data));
  });
});
