import type { Logger } from 'pino';
import type { Driver } from '../drivers/driver.js';
import type { EvictionReason } from './evictions.js';
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
  /** Evictions, deletes and re-reads run one at a time, so no two of them account the same bytes twice. */
  #queue: Promise<unknown> = Promise.resolve();
  /** Commits publishing now; a re-read waits for them (their size is in the store before it is in `#used`). */
  readonly #commits = new Set<Promise<void>>();
  /** A re-read of the recorded size in progress; commits wait for it. */
  #rereading: Promise<void> | null = null;

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
   * recorded sizes, which the store adds up without a stat per file. Runs in the queue, so an eviction or a
   * delete never subtracts what the re-read already left out.
   */
  resync(): Promise<void> {
    return this.#serialized(() => this.#reread());
  }

  /**
   * Publishes a fill (`publish` resolves with the committed size) and turns its reservation into used space.
   * Never overlaps a re-read: a commit records its size in the store before admission counts it, and a re-read
   * in between would count it twice. On failure nothing changes (the caller gives the reservation back).
   */
  async commit(reservedBytes: number, publish: () => Promise<number>): Promise<void> {
    while (this.#rereading) await this.#rereading.catch(() => {});
    const run = publish().then((size) => {
      this.unreserve(reservedBytes);
      this.#used += size;
    });
    this.#commits.add(run);
    try {
      await run;
    } finally {
      this.#commits.delete(run);
    }
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
      if (overBy(this.#used)) await this.#evictWhile(overBy, 'lru-eviction');
      if (overBy(this.#used)) return false;
      this.#reserved += bytes;
      return true;
    });
  }

  /** Gives back a reservation (a fill that failed or stopped spooling). */
  unreserve(bytes: number): void {
    this.#reserved = Math.max(0, this.#reserved - bytes);
  }

  /**
   * Deletes cached images outside eviction (an operator's delete) and subtracts only the sizes of the files
   * this call removed: two concurrent deletes of one id subtract it once.
   */
  deleteImages(imageIds: readonly string[]): Promise<void> {
    return this.#serialized(async () => {
      const sizes = await Promise.all(imageIds.map((id) => this.#driver.getImageSize(id).catch(() => 0)));
      await this.#delete(imageIds.map((id, i) => [id, sizes[i] ?? 0]), 'delete');
    });
  }

  /** Runs `task` (e.g. delete-all) in the queue, then re-reads the recorded size. */
  exclusive<T>(task: () => Promise<T>): Promise<T> {
    return this.#serialized(async () => {
      try {
        return await task();
      } finally {
        await this.#reread();
      }
    });
  }

  /** Evicts until the recorded bytes are at most `target`; returns files evicted and bytes freed. Prune's path. */
  shrinkTo(target: number): Promise<{ files: number; bytes: number }> {
    return this.#serialized(() => this.#evictWhile((used) => used > target, 'prune'));
  }

  /** Evicts LRU images nobody uses while `needMore(usedBytes)` holds. */
  async #evictWhile(needMore: (used: number) => boolean, reason: EvictionReason): Promise<{ files: number; bytes: number }> {
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
        for (const [id] of victims) gone.add(id);
        const freed = await this.#delete(victims, reason);
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

  /**
   * Deletes `victims` (id, recorded size) and subtracts what the disk got back. A file deleted behind our back
   * frees nothing here; its row is gone, so the size is re-read. A failed batch (the driver drops the rows of
   * the files it did delete, then throws) is re-read too, and the error goes to the caller.
   */
  async #delete(victims: ReadonlyArray<readonly [string, number]>, reason: EvictionReason): Promise<number> {
    let present: Set<string>;
    try {
      present = new Set(await this.#driver.deleteCachedImages(victims.map(([id]) => id)));
    } catch (error) {
      this.#stats.evictionFailures += 1;
      this.#logger.error({ err: error, images: victims.length }, 'deleting cached images failed');
      await this.#reread().catch((reread: unknown) => this.#logger.error({ err: reread }, 'cannot re-read the cache size'));
      throw error;
    }
    const freed = victims.reduce((sum, [id, size]) => sum + (present.has(id) ? size : 0), 0);
    for (const [id, size] of victims) if (present.has(id)) this.#stats.recentEvictions.add(id, size, reason);
    if (present.size < victims.length) await this.#reread();
    else this.#used = Math.max(0, this.#used - freed);
    return freed;
  }

  /** Sets `#used` from the store, after the commits publishing now; call only from inside the queue. */
  async #reread(): Promise<void> {
    const run = (async () => {
      await Promise.allSettled([...this.#commits]);
      this.#used = await this.#driver.getRecordedCacheSize();
    })();
    this.#rereading = run;
    try {
      await run;
    } finally {
      if (this.#rereading === run) this.#rereading = null;
    }
  }

  #serialized<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => {});
    return run;
  }
}
