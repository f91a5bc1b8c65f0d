import type { Admission } from './admission.js';

/** Reservation step for images of unknown size (or that send more than they promised). */
const GROW_STEP = 8 << 20;

/**
 * One fill's share of admission: the bytes reserved for its `incomplete/` file, taken up front for the declared
 * size, grown in steps while the origin sends more, and either committed (admission turns them into used space)
 * or given back.
 */
export class Reservation {
  readonly #admission: Admission;
  #bytes = 0;

  constructor(admission: Admission) {
    this.#admission = admission;
  }

  /**
   * Reserves `bytes` (the declared size), evicting to make room. False when they cannot fit.
   * Rejects when eviction fails (a cache fault).
   */
  async take(bytes: number): Promise<boolean> {
    const admitted = await this.#admission.reserve(bytes);
    if (admitted) this.#bytes = bytes;
    return admitted;
  }

  /**
   * Grows the reservation to cover `received` bytes. Grows in steps to keep admission off the per-chunk path;
   * near the cap, takes just what is needed. False when the image outgrew the cap; rejects when eviction fails.
   */
  async cover(received: number): Promise<boolean> {
    if (received <= this.#bytes) return true;
    const needed = received - this.#bytes;
    for (const step of [Math.max(GROW_STEP, needed), needed]) {
      if (await this.#admission.reserve(step)) {
        this.#bytes += step;
        break;
      }
    }
    return received <= this.#bytes;
  }

  /** Publishes the file through admission (see {@link Admission.commit}); on failure the bytes stay reserved. */
  async commit(publish: () => Promise<number>): Promise<void> {
    await this.#admission.commit(this.#bytes, publish);
    this.#bytes = 0;
  }

  /** Gives the reserved bytes back (a fill that failed or stopped spooling). */
  release(): void {
    this.#admission.unreserve(this.#bytes);
    this.#bytes = 0;
  }
}
