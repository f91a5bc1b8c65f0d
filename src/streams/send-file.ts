import type { Writable } from 'node:stream';
import type { BufferPool } from './buffer-pool.js';
import { drainedOrClosed } from './drained.js';

/** Reads `length` bytes at `position` into the start of `buffer`; resolves the count read (a positional read). */
export type PositionalRead = (buffer: Buffer, length: number, position: number) => Promise<number>;

/** What {@link sendFileRange} did: every byte went to the writable, or the writable went away first. */
export interface SendOutcome {
  readonly complete: boolean;
  /** Bytes handed to the writable. */
  readonly bytes: number;
}

/**
 * Writes bytes `start..end` (inclusive) of a file to `out` through pooled buffers: no allocation per chunk, one
 * read always in flight ahead of the write the socket is busy with, and back-pressure from `out` (`write` false:
 * wait for `drain`). A buffer goes back to the pool in its write's callback, when the kernel no longer reads it.
 *
 * `beforeLast` runs before the last chunk is written (a hit is recorded then: see hit.ts). It runs once, also for
 * an empty range. A read that fails or returns short rejects; the caller decides what `out` then gets. No read is
 * left running when this settles, so the caller may close the file at once.
 */
export async function sendFileRange(
  read: PositionalRead,
  range: { start: number; end: number },
  out: Writable,
  pool: BufferPool,
  beforeLast: () => Promise<void>,
): Promise<SendOutcome> {
  const end = range.end + 1;
  let position = range.start;
  let failed = false;
  let bytes = 0;
  const closed = (): SendOutcome => ({ complete: false, bytes });
  const readNext = (): Promise<{ buffer: Buffer; length: number }> | null => {
    if (position >= end || failed) return null;
    const buffer = pool.take();
    const length = Math.min(pool.bufferSize, end - position);
    const at = position;
    position += length;
    const reading = read(buffer, length, at).then(
      (count) => {
        if (count === length) return { buffer, length };
        pool.give(buffer);
        failed = true;
        throw new Error(`short read at byte ${at + count} of a cached file: it was truncated while being served`);
      },
      (error: unknown) => {
        pool.give(buffer);
        failed = true;
        throw error;
      },
    );
    // Awaited later (after the write before it drained): until then a failure must not count as unhandled.
    reading.catch(() => {});
    return reading;
  };

  let next = readNext();
  if (!next) {
    await beforeLast();
    return { complete: !out.destroyed, bytes };
  }
  while (next) {
    const { buffer, length } = await next;
    if (out.destroyed) {
      pool.give(buffer);
      return closed();
    }
    next = readNext();
    if (!next) await beforeLast();
    const chunk = length === buffer.length ? buffer : buffer.subarray(0, length);
    const flowing = out.write(chunk, () => pool.give(buffer));
    bytes += length;
    if (!flowing || out.destroyed) {
      await drainedOrClosed(out);
      if (out.destroyed) {
        // The read ahead must finish before the caller closes the file (an fd closed under a running read may be
        // reused by the next open and read from).
        if (next) await next.then((ahead) => pool.give(ahead.buffer), () => {});
        return closed();
      }
    }
  }
  return { complete: true, bytes };
}
