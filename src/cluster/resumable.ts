import { PassThrough, type Readable } from 'node:stream';
import type { Logger } from 'pino';
import { drainedOrClosed } from '../streams/drained.js';

/** Where a miss's bytes come from: a stream that starts at byte `from`, from `peer` (null: the origin). */
export interface OpenedSource {
  stream: Readable;
  peer: string | null;
  from: number;
}

/**
 * Opens the next source of a miss: the first (offset 0, no failed peer), or the one that continues at `offset`
 * after `failedPeer` failed or stalled mid-stream. Its rejection ends the miss with that error.
 */
export type SourceOpener = (offset: number, failedPeer: string | null) => Promise<OpenedSource>;

export interface ResumableOptions {
  onPeerBytes: (bytes: number) => void;
  /** Counts every byte passed on, from any source. @default none */
  onBytes?: (bytes: number) => void;
  logger: Logger;
  /** A peer silent this long (while we wait for it, not for our reader) counts as failed. @default none */
  peerStallMs?: number;
}

/** A peer that sent nothing for `peerStallMs`: replaced like one that failed. */
class PeerStalledError extends Error {
  constructor(peer: string, ms: number) {
    super(`peer ${peer} sent nothing for ${ms} ms`);
  }
}

/**
 * One stream of a miss's bytes over successive sources: when a peer fails or stalls mid-stream, `next` opens
 * another source at the byte reached (a peer's stream is read from byte 0 and skipped to it; the origin is asked
 * for a range), so the fill reading this stream (which verifies every byte) never notices. A failure of the
 * origin itself ends the stream with its error: the fill's own rules (retry, idle timeout) apply then.
 * Rejects when the first source cannot be opened.
 */
export async function resumableStream(
  imageId: string,
  next: SourceOpener,
  options: ResumableOptions,
  signal: AbortSignal,
): Promise<Readable> {
  let current = await next(0, null);
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  let offset = 0;
  out.once('close', () => current.stream.destroy());

  const pump = async ({ stream, peer, from }: OpenedSource): Promise<void> => {
    let skip = offset - from;
    const ms = options.peerStallMs;
    // One timer per source, refreshed per chunk (no timer allocated per chunk); it does not count the time spent
    // waiting for our own reader to drain.
    let waitingForReader = false;
    const stall =
      peer !== null && ms !== undefined
        ? setTimeout(function onStall(this: NodeJS.Timeout) {
            if (waitingForReader) this.refresh();
            else stream.destroy(new PeerStalledError(peer, ms));
          }, ms)
        : undefined;
    try {
      for await (const chunk of stream) {
        let buffer = chunk as Buffer;
        if (skip > 0) {
          const dropped = Math.min(skip, buffer.length);
          skip -= dropped;
          buffer = buffer.subarray(dropped);
        }
        if (buffer.length > 0) {
          offset += buffer.length;
          if (peer !== null) options.onPeerBytes(buffer.length);
          options.onBytes?.(buffer.length);
          if (out.destroyed) return;
          // 'close' too: a reader that goes away never drains, and the loop (and the source's socket) would wait forever.
          if (!out.write(buffer)) {
            waitingForReader = true;
            await drainedOrClosed(out);
            waitingForReader = false;
          }
          if (out.destroyed) return;
        }
        stall?.refresh();
      }
    } finally {
      clearTimeout(stall);
    }
  };

  const run = async (): Promise<void> => {
    for (;;) {
      try {
        await pump(current);
        out.end();
        return;
      } catch (error) {
        const failed = current.peer;
        if (signal.aborted || out.destroyed || failed === null) throw error;
        options.logger.warn({ imageId, peer: failed, offset, err: error }, 'peer failed mid-stream; continuing from another source');
        current.stream.destroy();
        current = await next(offset, failed);
        if (out.destroyed) {
          current.stream.destroy(); // the reader left while the next source was being opened
          return;
        }
      }
    }
  };
  run().catch((error: unknown) => out.destroy(error as Error));
  return out;
}
