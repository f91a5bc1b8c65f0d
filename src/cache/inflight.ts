import type { Fill } from './fill.js';

/**
 * Single-flight map: at most one running fill per image id, so concurrent misses share one origin fetch
 * (Glance has no lock at all, spec §3.5). Decisions about an id (hit, join or start) run one at a time per id.
 */
export class InFlight {
  readonly #fills = new Map<string, Fill>();
  readonly #locks = new Map<string, Promise<unknown>>();

  /** The running fill of an image, if any. */
  get(imageId: string): Fill | undefined {
    return this.#fills.get(imageId);
  }

  /** Registers a fill; it leaves the map by itself once it has settled. */
  add(fill: Fill): void {
    this.#fills.set(fill.imageId, fill);
    // whenSettled() never rejects; the catch only keeps this promise from ever being an unhandled rejection.
    fill
      .whenSettled()
      .then(() => {
        if (this.#fills.get(fill.imageId) === fill) this.#fills.delete(fill.imageId);
      })
      .catch(() => {});
  }

  /** Every running fill (for shutdown and metrics). */
  all(): Fill[] {
    return [...this.#fills.values()];
  }

  /** Runs `task` after every earlier task for the same id has finished. */
  async exclusive<T>(imageId: string, task: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(imageId) ?? Promise.resolve();
    const run = previous.then(task, task);
    const tail = run.catch(() => {});
    this.#locks.set(imageId, tail);
    try {
      return await run;
    } finally {
      if (this.#locks.get(imageId) === tail) this.#locks.delete(imageId);
    }
  }
}
