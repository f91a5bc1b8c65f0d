import { Readable, type Writable } from 'node:stream';
import { drainedOrClosed } from '../streams/drained.js';
import {
  cancelTransfer,
  extendTransfer,
  flushed,
  plainSocketOf,
  type SendfileSocket,
  startFollowing,
  stopTransfer,
} from '../streams/sendfile.js';
import { ChecksumMismatchError, SizeMismatchError } from '../errors.js';
import { CHUNK_SIZE } from '../drivers/file-handles.js';
import type { Fill, FillConsumer } from './fill.js';

/** Finds or starts another fill of the same image, for a follower whose fill failed before sending it a byte. */
export type RetryFill = () => Promise<Fill>;

/**
 * One consumer's view of a {@link Fill}: a Readable that starts at byte 0 whenever it joins, reads what the fill
 * has released (from the file or from memory), and waits for the fill's progress events, never for a timer.
 */
export class FillReader extends Readable implements FillConsumer {
  position = 0;
  #fill: Fill;
  #retry: RetryFill | null;
  #pumping = false;
  /** Until `activate()`, the fill's failures belong to whoever is waiting for `fill.ready`, not to this stream. */
  #active = false;
  /** The consumer asked for more (`_read`) and has not been refused since: back-pressure is honoured. */
  #wanted = false;
  readonly #wake = () => {
    if (this.#active && this.#wanted) this.#pumpSafely();
  };

  constructor(fill: Fill, retry: RetryFill | null) {
    super({ highWaterMark: CHUNK_SIZE });
    this.#fill = fill;
    this.#retry = retry;
    this.#join(fill);
  }

  get fill(): Fill {
    return this.#fill;
  }

  /** Starts delivering: call once the fill's origin is open. */
  activate(): void {
    this.#active = true;
    if (this.#wanted) this.#pumpSafely();
  }

  /**
   * Sends the image to `out` (an HTTP response) instead of being read as a stream: the bytes the fill has on disk
   * go by sendfile(2) from its file when `out` is a plain TCP socket, on one thread that follows the file as it
   * grows (no copy, no socket write and no JavaScript per chunk on the main thread: what lets one fill feed many
   * clients), the rest (a bypass, a fill that stopped spooling) is written from the fill's memory. Same rules as
   * the stream: only released bytes, a follower that got nothing retries once, a failure destroys `out` (the
   * client sees a short body, never a wrong one). Resolves true when every byte went out; the caller ends `out`.
   * Never rejects.
   */
  async writeTo(out: Writable & { flushHeaders?: () => void }): Promise<boolean> {
    this.#active = false; // the stream side stays idle: nothing reads it
    // Failures go to `out` here; the stream's own 'error' (from destroy(error) in #retryOrFail) has no reader.
    this.on('error', () => {});
    const target = plainSocketOf(out);
    let unflushed = true; // bytes written to `out` that sendfile must come after (at first, the response head)
    try {
      while (!out.destroyed && !this.destroyed) {
        const fill = this.#fill;
        const released = fill.released;
        if (this.position < released) {
          const fd = fill.readFd;
          if (target && fd !== null && fill.fileLimit > this.position) {
            if (unflushed && !(await flushed(out, target))) return false;
            unflushed = false;
            const connected = await this.#follow(fill, out, target, fd);
            fill.consumed();
            if (!connected) return false;
            continue;
          }
          const chunk = await fill.readAt(this.position, Math.min(CHUNK_SIZE, released - this.position));
          this.position += chunk.length;
          fill.consumed();
          unflushed = true;
          if (!out.write(chunk)) await drainedOrClosed(out);
          continue;
        }
        if (fill.done) return true;
        if (fill.error) {
          if (!(await this.#retryOrFail(fill.error))) {
            out.destroy(fill.error);
            return false;
          }
          continue;
        }
        await this.#progressOrClose(out);
      }
      return false;
    } catch (error) {
      out.destroy(error as Error);
      return false;
    } finally {
      this.destroy();
    }
  }

  /**
   * Sends the fill's file from the position by sendfile, up to what the fill has released and written, as it
   * grows, until the file will not grow any further for this consumer: the fill is done (every byte sent), it
   * stopped spooling (the rest is in memory) or it failed (the transfer stops where it is). False when the
   * client left first.
   */
  async #follow(fill: Fill, out: Writable, target: SendfileSocket, fd: number): Promise<boolean> {
    const transfer = startFollowing(target, fd, this.position);
    let end = this.position;
    const onProgress = () => {
      if (fill.error && !fill.done) return stopTransfer(transfer);
      const next = Math.min(fill.fileLimit, fill.released);
      const final = fill.done || !fill.spooling;
      if (next > end || final) extendTransfer(transfer, next, final);
      end = Math.max(end, next);
    };
    fill.on('progress', onProgress);
    try {
      onProgress();
      const outcome = await transfer.done;
      this.position += outcome.bytes;
      return !out.destroyed && !target.socket.destroyed;
    } finally {
      fill.off('progress', onProgress);
      await cancelTransfer(transfer);
    }
  }

  /** Waits for the fill's next progress, or for `out` to close. */
  #progressOrClose(out: Writable): Promise<void> {
    const fill = this.#fill;
    return new Promise((resolve) => {
      const done = () => {
        fill.off('progress', done);
        out.off('close', done);
        resolve();
      };
      fill.on('progress', done);
      out.on('close', done);
    });
  }

  override _read(): void {
    this.#wanted = true;
    if (this.#active) this.#pumpSafely();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#leave();
    callback(error);
  }

  /** #pump catches its own errors into destroy(); this catch is the guard that no rejection is ever unhandled. */
  #pumpSafely(): void {
    this.#pump().catch((error: unknown) => this.destroy(error as Error));
  }

  #join(fill: Fill): void {
    this.#fill = fill;
    fill.attach(this);
    fill.on('progress', this.#wake);
  }

  #leave(): void {
    this.#fill.off('progress', this.#wake);
    this.#fill.detach(this);
  }

  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (!this.destroyed) {
        const fill = this.#fill;
        if (this.position < fill.released) {
          const chunk = await fill.readAt(this.position, Math.min(CHUNK_SIZE, fill.released - this.position));
          if (this.destroyed) return;
          this.position += chunk.length;
          fill.consumed();
          if (!this.push(chunk)) {
            // A slow consumer waits for its next _read: progress events must not buffer the image into it.
            this.#wanted = false;
            return;
          }
          continue;
        }
        // Done first: a verified body is complete even if the fill fails afterwards (an abort during its commit).
        if (fill.done) {
          this.push(null);
          return;
        }
        if (fill.error) {
          if (!(await this.#retryOrFail(fill.error))) return;
          continue;
        }
        return; // the next 'progress' event pumps again
      }
    } catch (error) {
      this.destroy(error as Error);
    } finally {
      this.#pumping = false;
    }
  }

  /**
   * A follower that has received nothing yet retries the origin once through a new fill; anyone mid-stream, or
   * any consumer of an image that failed verification, gets the error.
   */
  async #retryOrFail(error: Error): Promise<boolean> {
    const verification = error instanceof ChecksumMismatchError || error instanceof SizeMismatchError;
    const retry = this.#retry;
    if (this.position > 0 || verification || !retry) {
      this.destroy(error);
      return false;
    }
    this.#retry = null;
    this.#leave();
    const next = await retry();
    if (this.destroyed) {
      next.detach(this);
      return false;
    }
    this.#join(next);
    return true;
  }
}
