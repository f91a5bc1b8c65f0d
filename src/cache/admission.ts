import type { Logger } from 'pino';
import type { Driver } from '../drivers/driver.js';
import type { CacheStats } from './stats.js';

/** Eviction asks the driver for LRU candidates in batches that double, so a rescanning driver stays O(n log n). */
const FIRST_BATCH = 64;
const MAX_BATCH = 65_536;

/**
 * The cache's size, kept in memory and updated per operation (no directory rescans on the hot path), plus the
 * bytes reserved by fills in flight and the images in use. Glance checks the size only when a cron prune runs
 * (spec §9.1 item 2); we check it before a fill starts, so `image_cache_max_size` is a hard cap.
 */
export class Admission {
  readonly maxSize: number;
  readonly #driver: Driver;
  readonly #stats: CacheStats;
  readonly #logger: Logger;
  /** Bytes of committed image files. */
  #used = 0;
  /** Bytes promised to fills in flight. */
  #reserved = 0;
  /** Readers and fills per image id: these are never evicted. */
  readonly #inUse = new Map<string, number>();
  /** Evictions run one at a time, so two fills never free the same space twice. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(driver: Driver, maxSize: number, stats: CacheStats, logger: Logger) {
    this.#driver = driver;
    this.maxSize = maxSize;
    this.#stats = stats;
    this.#logger = logger;
  }

  get used(): number {
    return this.#used;
  }

  get reserved(): number {
    return this.#reserved;
  }

  /**
   * Re-reads the size (at start, and after another process may have changed the cache). Admission accounts in
   * recorded sizes, which the store adds up without a stat per file.
   */
  async resync(): Promise<void> {
    this.#used = await this.#driver.getRecordedCacheSize();
  }

  acquire(imageId: string): void {
    this.#inUse.set(imageId, (this.#inUse.get(imageId) ?? 0) + 1);
  }

  release(imageId: string): void {
    const count = (this.#inUse.get(imageId) ?? 0) - 1;
    if (count > 0) this.#inUse.set(imageId, count);
    else this.#inUse.delete(imageId);
  }

  isInUse(imageId: string): boolean {
    return this.#inUse.has(imageId);
  }

  /**
   * Reserves `bytes` for a fill, evicting least recently accessed images that nobody is using until they fit.
   * Returns false (and reserves nothing) when they cannot fit: the caller serves from the origin uncached.
   */
  reserve(bytes: number): Promise<boolean> {
    return this.#serialized(async () => {
      if (bytes > this.maxSize) return false;
      const overBy = (used: number) => used + this.#reserved + bytes > this.maxSize;
      if (overBy(this.#used)) await this.#evictWhile(overBy);
      if (overBy(this.#used)) return false;
      this.#reserved += bytes;
      return true;
    });
  }

  /** Gives back a reservation (a fill that failed, or before {@link committed}). */
  unreserve(bytes: number): void {
    this.#reserved = Math.max(0, this.#reserved - bytes);
  }

  /** A fill committed: its reservation becomes used space of the real size. */
  committed(reservedBytes: number, size: number): void {
    this.unreserve(reservedBytes);
    this.#used += size;
  }

  /** Files were deleted outside eviction (delete, clear). */
  removed(bytes: number): void {
    this.#used = Math.max(0, this.#used - bytes);
  }

  /** Evicts until the recorded bytes are at most `target`; returns files evicted and bytes freed. Prune's path. */
  shrinkTo(target: number): Promise<{ files: number; bytes: number }> {
    return this.#serialized(() => this.#evictWhile((used) => used > target));
  }

  /** Evicts LRU images nobody uses while `needMore(usedBytes)` holds. */
  async #evictWhile(needMore: (used: number) => boolean): Promise<{ files: number; bytes: number }> {
    const evicted = { files: 0, bytes: 0 };
    const gone = new Set<string>();
    let batchSize = FIRST_BATCH;
    while (needMore(this.#used)) {
      const candidates = await this.#driver.listLeastRecentlyAccessed(batchSize);
      const victims: Array<[string, number]> = [];
      let planned = 0;
      for (const [imageId, size] of candidates) {
        if (gone.has(imageId) || this.isInUse(imageId)) continue;
        victims.push([imageId, size]);
        planned += size;
        if (!needMore(this.#used - planned)) break;
      }
      if (victims.length > 0) {
        const present = new Set(await this.#driver.deleteCachedImages(victims.map(([id]) => id)));
        // What the disk got back, by the sizes recorded at commit; a file deleted behind our back frees nothing.
        const freed = victims.reduce((sum, [id, size]) => sum + (present.has(id) ? size : 0), 0);
        for (const [id] of victims) gone.add(id);
        this.#used = Math.max(0, this.#used - planned);
        evicted.files += victims.length;
        evicted.bytes += freed;
        this.#stats.evictions += victims.length;
      } else if (candidates.length < batchSize || batchSize === MAX_BATCH) {
        break; // everything the driver has is in use (or already gone): never spin
      }
      batchSize = Math.min(batchSize * 2, MAX_BATCH);
    }
    if (evicted.files > 0) this.#logger.info(evicted, 'evicted least recently accessed images');
    return evicted;
  }

  #serialized<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => {});
    return run;
  }
}
