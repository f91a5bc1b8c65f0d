import { Readable } from 'node:stream';
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
