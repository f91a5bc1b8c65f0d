import type { Driver, ImageDigests, ImageWriter } from '../drivers/driver.js';
import { NotCachedError } from '../errors.js';
import { drainedOrClosed } from '../streams/drained.js';
import type { Admission } from './admission.js';
import type { SlotTee } from './hash-pool.js';
import { Reservation } from './reservation.js';
import type { FillFailureReason } from './stats.js';

/** Why a spool stopped writing: the error and how the fill's counters file it. */
export interface SpoolStop {
  error: Error;
  reason: FillFailureReason;
}

/** What the spool tells its fill. */
export interface SpoolHooks {
  /** Bytes `[0, written)` are in the file and can be read back. */
  onWritten(written: number): void;
  /** The file's stream failed outside a commit (a disk error): the fill should stop spooling. */
  onError(error: Error): void;
}

/** What {@link Spool.teeFrom} tells its fill. */
export interface TeeHooks {
  /** A slot's write must stop the spool (the reservation could not cover it); later slots are not written. */
  onStop(stop: SpoolStop): Promise<void>;
  /** Stopping failed. */
  onFault(error: Error): void;
}

/**
 * A fill's copy of the origin's bytes in `incomplete/<id>`: the reservation that covers it (taken for the declared
 * size, grown while the origin sends more), the writes with the file's back-pressure, and the end of it all,
 * committed (published through admission) or rolled back.
 */
export class Spool {
  readonly #writer: ImageWriter;
  readonly #reservation: Reservation;
  /** Commit is ending the file: a write error now is commit's to report (and roll back), not the hooks'. */
  #committing = false;
  /** Discarded: slots still queued by {@link teeFrom} are not written. */
  #discarded = false;

  private constructor(writer: ImageWriter, reservation: Reservation, hooks: SpoolHooks) {
    this.#writer = writer;
    this.#reservation = reservation;
    writer.stream.on('progress', (written: number) => hooks.onWritten(written));
    writer.stream.on('error', (error: Error) => {
      if (!this.#committing) hooks.onError(error);
    });
  }

  /**
   * Reserves the declared size through admission, evicting to make room. Resolves null when the image does not
   * fit (a bypass); rejects when eviction fails (a cache fault).
   */
  static async reserve(admission: Admission, declared: number): Promise<Reservation | null> {
    const reservation = new Reservation(admission);
    return (await reservation.take(declared)) ? reservation : null;
  }

  /** Opens `incomplete/<id>` under `reservation`; on failure the reservation is given back and the error thrown. */
  static async open(imageId: string, reservation: Reservation, driver: Driver, hooks: SpoolHooks): Promise<Spool> {
    try {
      return new Spool(await driver.openForWrite(imageId), reservation, hooks);
    } catch (error) {
      reservation.release();
      throw error;
    }
  }

  /** The `incomplete/` file, for readers of the fill. */
  get path(): string {
    return this.#writer.path;
  }

  get bytesWritten(): number {
    return this.#writer.bytesWritten;
  }

  /**
   * Writes the chunk that brings the image to `received` bytes, growing the reservation first. Resolves null when
   * written (after the file's back-pressure, `onWait` called before waiting), or why the spool must stop.
   */
  async write(imageId: string, chunk: Buffer, received: number, onWait: () => void): Promise<SpoolStop | null> {
    let covered: boolean;
    try {
      covered = await this.#reservation.cover(received);
    } catch (error) {
      // Eviction failed: stop caching, keep downloading (the origin did nothing wrong).
      return { error: error as Error, reason: 'cache_fault' };
    }
    if (!covered) {
      return { error: new NotCachedError(imageId, 'it outgrew image_cache_max_size'), reason: 'over_capacity' };
    }
    if (this.#writer.stream.write(chunk)) return null;
    onWait();
    await drainedOrClosed(this.#writer.stream);
    return null;
  }

  /**
   * Writes the ring's slots as they fill ({@link SlotTee}), in order, each covered by the reservation first; the
   * file's progress (`onWritten`) is what frees them. A write that must stop calls `onStop` (later slots are not
   * written); a failure of that is `onFault`'s.
   */
  teeFrom(tee: SlotTee, imageId: string, hooks: TeeHooks): void {
    let handed = 0;
    let writes = Promise.resolve();
    let stopped = false;
    tee.start((slot) => {
      handed += slot.length;
      const through = handed;
      writes = writes
        .then(() => (stopped || this.#discarded ? null : this.write(imageId, slot, through, () => {})))
        .then((stop) => {
          if (!stop) return undefined;
          stopped = true;
          return hooks.onStop(stop);
        })
        .catch((error: unknown) => hooks.onFault(error as Error));
    });
  }

  /**
   * Ends the file (fsync), publishes it with `digests` through admission. On failure the writer has already rolled
   * the file back and the reservation is given back; the error is re-thrown.
   */
  async commit(digests: ImageDigests & { size: number }): Promise<void> {
    this.#committing = true;
    try {
      await this.#reservation.commit(async () => {
        await this.#writer.commit(digests);
        return digests.size;
      });
    } catch (error) {
      this.#reservation.release();
      throw error;
    } finally {
      this.#committing = false;
    }
  }

  /**
   * Gives the reservation back and the file up: to `invalid/` (a failed fill, for debugging), or deleted when the
   * point is to give the space back (`keepFile: false`). Never rejects; readers keep their fd.
   */
  async discard(error: Error, options: { keepFile?: boolean } = {}): Promise<void> {
    this.#discarded = true;
    this.#reservation.release();
    await this.#writer.rollback(error, options).catch(() => {});
  }
}
