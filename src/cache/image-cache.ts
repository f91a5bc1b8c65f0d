import type { Readable } from 'node:stream';
import { pino, type Logger } from 'pino';
import type { Driver, ImageWriter, ReconcileResult } from '../drivers/driver.js';
import { Admission } from './admission.js';
import type { DigestPolicy, ExpectedImage } from './digest.js';
import type { Fill } from './fill.js';
import { HashPool } from './hash-pool.js';
import { type HitLease, leaseHit } from './hit-lease.js';
import { importFile, importStream } from './import.js';
import { InFlight } from './inflight.js';
import type { Range } from './range-read.js';
import { type FetchRequest, type FetchResult, ReadThrough } from './read-through.js';
import { CacheStats } from './stats.js';
import { type VerifyEntry, type VerifyOptions, verifyCache } from './verify.js';

export interface ImageCacheOptions {
  /** A configured driver (`openCache(config)` in `src/open-cache.ts` builds and configures it for you). */
  driver: Driver;
  /** `image_cache_max_size`: a hard cap, enforced when a fill is admitted. @default 10 GiB */
  maxSize?: number;
  /** `image_cache_fill_idle_timeout`: abort a fill whose origin sends nothing for this long. @default 60 */
  fillIdleTimeout?: number;
  /**
   * Hash on worker threads (one per digest a fill computes) instead of the main thread. Pays off only with idle
   * cores: see the README's performance section. `openCache` decides it from `hash_threads`. @default false
   */
  hashThreads?: boolean;
  /**
   * `image_cache_verify_digests`: `strongest` verifies the multihash when the origin declares one, MD5 only when it
   * is all there is (python-glanceclient's rule); `all` verifies both. @default 'strongest'
   */
  verifyDigests?: DigestPolicy;
  /** The hash threads to use instead of a new pool (implies `hashThreads`; tests inject faults through it). */
  hashPool?: HashPool;
  logger?: Logger;
}

/** `prune()`'s result; the v2 Cache API reports it as `total_files_pruned` / `total_bytes_pruned`. */
export interface PruneResult {
  filesPruned: number;
  bytesPruned: number;
}

export type { FetchRequest, FetchResult } from './read-through.js';

/** Progress of a long copy, for progress bars. */
export type ProgressListener = (bytesDone: number, bytesTotal: number | null) => void;

/**
 * The front of the cache (Glance's `ImageCache`, spec §3): a verified, coalesced, size-capped read-through
 * fill (`fetch`, `prefetch`), prune, clean. Everything else is the driver's: `cache.driver.isCached(id)` and so on.
 */
export class ImageCache {
  readonly driver: Driver;
  readonly maxSize: number;
  readonly stats = new CacheStats();
  readonly #logger: Logger;
  readonly #admission: Admission;
  readonly #inflight = new InFlight();
  readonly #hashPool: HashPool | null;
  readonly #readThrough: ReadThrough;
  #sized: Promise<void> | undefined;

  constructor(options: ImageCacheOptions) {
    this.driver = options.driver;
    this.maxSize = options.maxSize ?? 10 * 1024 ** 3;
    this.#logger = options.logger ?? pino({ level: 'silent' });
    this.#hashPool = options.hashPool ?? (options.hashThreads ? new HashPool() : null);
    this.#admission = new Admission(this.driver, this.maxSize, this.stats, this.#logger);
    this.#readThrough = new ReadThrough({
      driver: this.driver,
      admission: this.#admission,
      inflight: this.#inflight,
      stats: this.stats,
      logger: this.#logger,
      idleTimeoutMs: (options.fillIdleTimeout ?? 60) * 1000,
      hashPool: this.#hashPool,
      digestPolicy: options.verifyDigests ?? 'strongest',
      sized: () => this.#ensureSized(),
    });
  }

  /** Bytes of committed images and of reservations in flight, as admission sees them. */
  async usage(): Promise<{ used: number; reserved: number; max: number }> {
    await this.#ensureSized();
    return { used: this.#admission.used, reserved: this.#admission.reserved, max: this.maxSize };
  }

  /** Fills in flight: `live` ones serve requests, `prefetch` ones only fill the cache. */
  activeFills(): { live: number; prefetch: number } {
    const fills = this.#inflight.all().filter((fill) => !fill.settled);
    const prefetch = fills.filter((fill) => fill.isPrefetch).length;
    return { live: fills.length - prefetch, prefetch };
  }

  /** The fills running now (not settled), for the dashboard's progress view. */
  runningFills(): Fill[] {
    return this.#inflight.all().filter((fill) => !fill.settled);
  }

  /** Aborts every running fill: their consumers get `error`, their files go to `invalid/` (shutdown). */
  async abortFills(error: Error): Promise<void> {
    const fills = this.#inflight.all();
    for (const fill of fills) fill.abort(error);
    await Promise.all(fills.map((fill) => fill.whenSettled()));
  }

  /**
   * Resolves once every fill running now has settled (committed or given up). A client has the whole body as soon
   * as it was verified, before its commit: call this before expecting the image in the cache.
   */
  async fillsSettled(): Promise<void> {
    await Promise.all(this.#inflight.all().map((fill) => fill.whenSettled()));
  }

  /**
   * Waits for running fills to settle (at most `timeoutMs`), then closes the driver. Fills that were verified and
   * only commit are always waited for: their clients have every byte, and the cache should keep them.
   */
  async close(timeoutMs = 0): Promise<void> {
    const fills = this.#inflight.all();
    await this.#commits();
    if (timeoutMs > 0) {
      const settled = Promise.all(fills.map((fill) => fill.whenSettled()));
      await Promise.race([settled, new Promise((resolve) => setTimeout(resolve, timeoutMs).unref())]);
    }
    await this.#hashPool?.close();
    await this.driver.close();
  }

  /** See {@link Driver.reconcile}. Also re-reads the cache size. */
  async reconcile(): Promise<ReconcileResult> {
    const result = await this.driver.reconcile();
    await this.#admission.resync();
    this.#sized = Promise.resolve();
    return result;
  }

  /** The image for another node of the cluster: its copy or its running fill. See {@link ReadThrough.forPeer}. */
  forPeer(imageId: string): Promise<FetchResult | null> {
    return this.#readThrough.forPeer(imageId);
  }

  /** A hit streamed by another process (a `workers` process): see {@link leaseHit}. Null when not cached. */
  leaseHit(imageId: string): Promise<HitLease | null> {
    return leaseHit(this.driver, this.#admission, this.stats, this.#logger, imageId);
  }

  /** Re-hashes every cached image against its recorded digests; see {@link verifyCache}. */
  async verify(options: VerifyOptions = {}): Promise<VerifyEntry[]> {
    const results = await verifyCache(this.driver, options);
    if (results.some((entry) => entry.repaired)) await this.#admission.resync();
    return results;
  }

  /**
   * The image, from the cache or from the origin through one shared fill (spec §3.3, done right):
   * - `HIT`: streams the cached file; the hit is recorded when the stream has been read to the end.
   * - `MISS`: fetches the origin once, tees it to the caller and to `incomplete/<id>`, verifies size, MD5 and
   *   multihash in the same pass and commits. The last chunk is held back until verification passed.
   * - `COALESCED`: another request is filling the image; this one reads the growing file from byte 0.
   * - `BYPASS`: the image cannot fit in `image_cache_max_size`; it is streamed from the origin, uncached.
   * Rejects with the origin's error when the origin cannot be opened. See {@link ReadThrough.fetch}.
   */
  fetch(request: FetchRequest, attempt = 0): Promise<FetchResult> {
    return this.#readThrough.fetch(request, attempt);
  }

  /**
   * A byte range of the image, never starting a fill itself (RFC 9110 ranges; Glance bypasses the cache for them,
   * bug 1664709): `HIT`, `COALESCED` or `BYPASS`; a `BYPASS` of an image that could be cached calls
   * `request.onColdRange` (the server queues it for the prefetcher). See {@link ReadThrough.fetchRange}.
   */
  fetchRange(request: FetchRequest, range: Range): Promise<FetchResult> {
    return this.#readThrough.fetchRange(request, range);
  }

  /**
   * Caches an image without a consumer (Glance's prefetch / `PUT /v2/cache/{id}`): resolves true when this call
   * cached it, false when it was cached already. See {@link ReadThrough.prefetch}.
   */
  prefetch(request: FetchRequest): Promise<boolean> {
    return this.#readThrough.prefetch(request);
  }

  /** Drops an image that changed upstream (a cluster-wide invalidation); see {@link ReadThrough.invalidate}. */
  invalidate(imageId: string): Promise<void> {
    return this.#readThrough.invalidate(imageId);
  }

  /**
   * Deletes one cached image; admission subtracts its size only if this call deleted the file. A fill of it that
   * was verified (its client has the whole body) is let to commit first, so the delete is not undone by it.
   */
  async deleteCachedImage(imageId: string): Promise<void> {
    this.driver.getImageFilepath(imageId); // validates the id (a rejection, like every failure here)
    await this.#commits([imageId]);
    await this.#admission.deleteImages([imageId]);
  }

  /** Deletes every cached image (after the commits of verified fills), then re-reads the size. */
  async deleteAllCachedImages(): Promise<number> {
    await this.#commits();
    return this.#admission.exclusive(() => this.driver.deleteAllCachedImages());
  }

  /** Waits for the fills (of `imageIds`, or all) that were verified and only commit. */
  async #commits(imageIds?: readonly string[]): Promise<void> {
    const fills = imageIds ? imageIds.map((id) => this.#inflight.get(id)) : this.#inflight.all();
    await Promise.all(fills.map((fill) => (fill?.verified ? fill.whenSettled() : undefined)));
  }

  /**
   * Deletes least recently accessed images, never one being read or filled, until the cache is at most
   * `image_cache_max_size` (spec §3.1). Always terminates: it stops when the driver has no more candidates
   * (Glance's centralized driver can spin here) or offers one it already deleted.
   */
  async prune(): Promise<PruneResult> {
    await this.#admission.resync(); // another process may have changed the cache since we last looked
    this.#sized = Promise.resolve();
    const { files, bytes } = await this.#admission.shrinkTo(this.maxSize);
    if (this.#admission.used > this.maxSize) {
      this.#logger.warn(
        { cacheSize: this.#admission.used, maxSize: this.maxSize },
        'cache is still over image_cache_max_size: the rest is in use or in files without metadata',
      );
    }
    const result = { filesPruned: files, bytesPruned: bytes };
    this.#logger.info(result, 'pruned cache');
    return result;
  }

  /**
   * Runs `body` with a write handle for `imageId`: commits when it resolves, rolls back to `invalid/` when it
   * throws (and re-throws). The callback form of `openForWrite` (Glance's context manager, spec §2.1).
   */
  async writeImage<T>(imageId: string, body: (writer: ImageWriter) => Promise<T>): Promise<T> {
    const writer = await this.driver.openForWrite(imageId);
    let value: T;
    try {
      value = await body(writer);
    } catch (error) {
      await writer.rollback(error);
      throw error;
    }
    await writer.commit();
    return value;
  }

  /**
   * Copies a file into the cache through the fill engine, verifying size, MD5 and multihash against `expected`
   * in the same pass (Glance's `cache_image_file` checks MD5 only). Returns false, reading nothing, when the
   * image is already cached or being cached. A mismatch leaves the copy in `invalid/` and throws
   * {@link ChecksumMismatchError} or {@link SizeMismatchError}.
   */
  cacheImageFile(imageId: string, path: string, expected?: ExpectedImage, onProgress?: ProgressListener): Promise<boolean> {
    return importFile(this, imageId, path, expected, onProgress);
  }

  /** {@link cacheImageFile} for any stream (the source is consumed and destroyed either way). */
  cacheImageStream(imageId: string, source: Readable, expected?: ExpectedImage, onProgress?: ProgressListener): Promise<boolean> {
    return importStream(this, imageId, source, expected, onProgress);
  }

  async #ensureSized(): Promise<void> {
    this.#sized ??= this.#admission.resync();
    await this.#sized;
  }
}
