import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { type DirectBody, DirectReadable, directBodyOf } from '../streams/direct-body.js';

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
  /** Called once when the stream is over: true when its last byte was delivered, false when it failed or was destroyed. */
  onSettled?: (complete: boolean) => void;
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

/** What the reader's callback threw or rejected with: it ends the stream, it never moves it to another source. */
class ReaderError extends Error {
  constructor(readonly error: unknown) {
    super('the reader of the stream failed');
  }
}

type OnBytes = (view: Buffer) => void | Promise<void>;

/**
 * One miss's bytes over successive sources, as a {@link DirectBody}: when a peer fails or stalls mid-stream, the
 * next source is opened at the byte reached (a peer's stream is read from byte 0 and skipped to it; the origin is
 * asked for a range), so the fill reading it (which verifies every byte) never notices. A failure of the origin
 * itself ends the body with its error: the fill's own rules (retry, idle timeout) apply then. Sources that are
 * direct bodies (the `http:` origin's image GET, a peer's stream) pass their views on, reading into the reader's
 * memory where it offers some; other sources' chunks are passed on as they come.
 */
class ResumableBody implements DirectBody {
  #current: OpenedSource;
  /** Bytes delivered so far, from every source. */
  #offset = 0;
  #destroyed: Error | null = null;
  #settled = false;
  /** The reader's promise for the last view (rejecting with a {@link ReaderError}): the next source waits for it. */
  #pending: Promise<void> | null = null;

  constructor(
    first: OpenedSource,
    private readonly imageId: string,
    private readonly next: SourceOpener,
    private readonly options: ResumableOptions,
    private readonly signal: AbortSignal,
  ) {
    this.#current = first;
  }

  async pipeTo(onBytes: OnBytes, memory?: () => Buffer | null): Promise<void> {
    try {
      for (;;) {
        try {
          await this.#pump(this.#current, onBytes, memory);
          this.#settle(true);
          return;
        } catch (error) {
          if (error instanceof ReaderError) throw error;
          // The reader takes the view it holds before the next source's first (it rejects with a ReaderError).
          await this.#pending;
          const failed = this.#current.peer;
          if (this.#destroyed) throw this.#destroyed;
          if (this.signal.aborted || failed === null) throw error;
          this.options.logger.warn(
            { imageId: this.imageId, peer: failed, offset: this.#offset, err: error },
            'peer failed mid-stream; continuing from another source',
          );
          this.#current.stream.destroy();
          this.#current = await this.next(this.#offset, failed);
          if (this.#destroyed) throw this.#destroyed; // the reader left while the next source was being opened
        }
      }
    } catch (error) {
      this.#current.stream.destroy();
      this.#settle(false);
      throw error instanceof ReaderError ? error.error : error;
    }
  }

  destroy(error?: Error): void {
    if (this.#destroyed) return;
    this.#destroyed = error ?? new Error('the stream was destroyed');
    this.#current.stream.destroy(); // a direct source's body too: its pipeTo rejects
    this.#settle(false);
  }

  #settle(complete: boolean): void {
    if (this.#settled) return;
    this.#settled = true;
    this.options.onSettled?.(complete);
  }

  /** Passes one source's bytes from {@link #offset} on; rejects with the source's error or a {@link ReaderError}. */
  async #pump({ stream, peer, from }: OpenedSource, onBytes: OnBytes, memory?: () => Buffer | null): Promise<void> {
    let skip = this.#offset - from;
    const ms = this.options.peerStallMs;
    let waitingForReader = false;
    /** The source's body once taken (then it is destroyed itself: its stream has no 'error' listener). */
    let direct: DirectBody | null = null;
    // One timer per source, refreshed per read; the time spent waiting for our own reader does not count.
    const stall =
      peer !== null && ms !== undefined
        ? setTimeout(function onStall(this: NodeJS.Timeout) {
            if (waitingForReader) this.refresh();
            else if (direct) direct.destroy(new PeerStalledError(peer, ms)); // its pipeTo rejects with it
            else stream.destroy(new PeerStalledError(peer, ms));
          }, ms)
        : undefined;
    const deliver = (view: Buffer): void | Promise<void> => {
      stall?.refresh();
      if (skip > 0) {
        const dropped = Math.min(skip, view.length);
        skip -= dropped;
        view = view.subarray(dropped);
        if (view.length === 0) return undefined;
      }
      this.#offset += view.length;
      if (peer !== null) this.options.onPeerBytes(view.length);
      this.options.onBytes?.(view.length);
      let result: void | Promise<void>;
      try {
        result = onBytes(view);
      } catch (error) {
        throw new ReaderError(error);
      }
      if (!result) return undefined;
      waitingForReader = true;
      const pending = result.then(
        () => {
          waitingForReader = false;
          stall?.refresh();
        },
        (error: unknown) => {
          throw new ReaderError(error);
        },
      );
      this.#pending = pending;
      return pending;
    };
    try {
      direct = directBodyOf(stream);
      if (this.#destroyed) throw this.#destroyed;
      await (direct ? direct.pipeTo(deliver, memory && (() => (skip > 0 ? null : memory()))) : pumpStream(stream, deliver));
      await this.#pending;
    } finally {
      clearTimeout(stall);
    }
  }
}

/** A source that is a plain stream: its chunks, one at a time, waiting for the reader where it asks to. */
async function pumpStream(stream: Readable, deliver: OnBytes): Promise<void> {
  for await (const chunk of stream) {
    const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    const waiting = deliver(buffer);
    if (waiting) await waiting;
  }
}

/**
 * One stream of a miss's bytes over successive sources ({@link ResumableBody}): a {@link DirectReadable}, so a
 * fill takes its views, and everything else reads it as a stream. Rejects when the first source cannot be opened.
 */
export async function resumableStream(
  imageId: string,
  next: SourceOpener,
  options: ResumableOptions,
  signal: AbortSignal,
): Promise<Readable> {
  const first = await next(0, null);
  return new DirectReadable(new ResumableBody(first, imageId, next, options, signal));
}
