/** Why an image left the cache. */
export type EvictionReason =
  | 'lru-eviction' // admission made room for a fill (least recently accessed first)
  | 'prune' // a prune (API, CLI or the periodic pruner) shrank the cache to image_cache_max_size
  | 'delete'; // an operator's delete of one image (API, CLI, a cluster invalidation)

/** One image removed from the cache. */
export interface Eviction {
  imageId: string;
  /** Recorded size in bytes. */
  size: number;
  reason: EvictionReason;
  /** Epoch milliseconds. */
  at: number;
}

/** How many evictions {@link EvictionLog} keeps by default: enough for an operator's screen, bounded memory. */
export const EVICTION_LOG_SIZE = 100;

/**
 * The most recent evictions, newest last, in a fixed-size ring: the dashboard shows what left the cache and why,
 * which neither the counters nor the metadata (the row is gone) can say afterwards.
 */
export class EvictionLog {
  readonly #ring: Array<Eviction | undefined>;
  #next = 0;
  #count = 0;

  /** @param capacity entries kept; older ones are overwritten. @default EVICTION_LOG_SIZE */
  constructor(capacity = EVICTION_LOG_SIZE) {
    this.#ring = new Array<Eviction | undefined>(Math.max(1, capacity));
  }

  add(imageId: string, size: number, reason: EvictionReason, at = Date.now()): void {
    this.#ring[this.#next] = { imageId, size, reason, at };
    this.#next = (this.#next + 1) % this.#ring.length;
    this.#count = Math.min(this.#count + 1, this.#ring.length);
  }

  /** The kept evictions, oldest first. */
  recent(): Eviction[] {
    const out: Eviction[] = [];
    const start = (this.#next - this.#count + this.#ring.length) % this.#ring.length;
    for (let i = 0; i < this.#count; i++) {
      const entry = this.#ring[(start + i) % this.#ring.length];
      if (entry) out.push(entry);
    }
    return out;
  }
}
