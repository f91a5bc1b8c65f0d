import type { Readable } from 'node:stream';
import { pino, type Logger } from 'pino';
import type { CacheConfig } from '../config.js';
import type {
  CachedImage,
  CleanResult,
  Driver,
  ImageReader,
  ImageWriter,
  ReconcileResult,
} from '../drivers/driver.js';
import { createDriver } from '../drivers/registry.js';
import { FillAbortedError, ImageNotCachedError, NotCachedError } from '../errors.js';
import { Admission } from './admission.js';
import { checkHashAlgorithm, type ExpectedImage } from './digest.js';
import { Fill, type OriginOpener } from './fill.js';
import { FillReader } from './fill-reader.js';
import { HashPool } from './hash-pool.js';
import { streamHit } from './hit.js';
import { importFile, importStream } from './import.js';
import { InFlight } from './inflight.js';
import { type Range, type RangeOpener, rangeFromCache, rangeFromFill, rangeFromOrigin } from './range-read.js';
import { CacheStats, type CacheStatus } from './stats.js';
import { type VerifyEntry, type VerifyOptions, verifyCache } from './verify.js';

export interface ImageCacheOptions {
  /** A configured driver (`ImageCache.open` configures it for you). */
  driver: Driver;
  /** `image_cache_max_size`: a hard cap, enforced when a fill is admitted. @default 10 GiB */
  maxSize?: number;
  /** `image_cache_fill_idle_timeout`: abort a fill whose origin sends nothing for this long. @default 60 */
  fillIdleTimeout?: number;
  /**
   * Hash MD5 and the multihash on two worker threads instead of the main thread. Pays off only with idle
   * cores: see the README's performance section. @default false
   */
  hashThreads?: boolean;
  /** The hash threads to use instead of a new pool (implies `hashThreads`; tests inject faults through it). */
  hashPool?: HashPool;
  logger?: Logger;
}

/** `prune()`'s result; the v2 Cache API reports it as `total_files_pruned` / `total_bytes_pruned`. */
export interface PruneResult {
  filesPruned: number;
  bytesPruned: number;
}

/** What `fetch` needs to know of an image. */
export interface FetchRequest {
  imageId: string;
  /** The origin's promises about the image; each one given is verified while the bytes stream. */
  expected?: ExpectedImage;
  /** Opens the image at the origin; called at most once per fill, never on a hit. */
  openOrigin: OriginOpener;
  /** Opens just a byte range at the origin (for {@link ImageCache.fetchRange}); without it the whole image is read. */
  openOriginRange?: RangeOpener;
}

export interface FetchResult {
  status: CacheStatus;
  /** Bytes the stream delivers, when known (for `Content-Length`). */
  size: number | null;
  /** The image. Consume it or destroy it: it holds a file descriptor until then. */
  stream: Readable;
}

/** Progress of a long copy, for progress bars. */
export type ProgressListener = (bytesDone: number, bytesTotal: number | null) => void;

/**
 * The front of the cache (Glance's `ImageCache`, spec §3): a verified, coalesced, size-capped read-through
 * fill (`fetch`, `prefetch`), prune, clean, and pass-throughs to the driver.
 */
export class ImageCache {
  readonly driver: Driver;
  readonly maxSize: number;
  readonly stats = new CacheStats();
  readonly #logger: Logger;
  readonly #admission: Admission;
  readonly #inflight = new InFlight();
  readonly #idleTimeoutMs: number;
  readonly #hashPool: HashPool | null;
  #sized: Promise<void> | undefined;

  constructor(options: ImageCacheOptions) {
    this.driver = options.driver;
    this.maxSize = options.maxSize ?? 10 * 1024 ** 3;
    this.#logger = options.logger ?? pino({ level: 'silent' });
    this.#idleTimeoutMs = (options.fillIdleTimeout ?? 60) * 1000;
    this.#hashPool = options.hashPool ?? (options.hashThreads ? new HashPool() : null);
    this.#admission = new Admission(this.driver, this.maxSize, this.stats, this.#logger);
  }

  /**
   * Builds the driver `image_cache_driver` names (never another one) and configures it. With `reconcile`, also
   * brings the directory and the metadata back in line after a crash ({@link Driver.reconcile}): only the
   * process that owns the cache dir (the server, at start) may do that, because it takes every `incomplete/`
   * file it is not writing itself for a leftover.
   */
  static async open(
    config: CacheConfig,
    options: { logger?: Logger; reconcile?: boolean } = {},
  ): Promise<ImageCache> {
    const driver = createDriver(config.image_cache_driver, {
      cacheDir: config.image_cache_dir,
      stallTime: config.image_cache_stall_time,
      sqliteDb: config.image_cache_sqlite_db,
      databaseUrl: config.connection,
      databaseSchema: config.database_schema,
      nodeUrl: config.worker_self_reference_url,
      livenessWindow: config.node_liveness_window,
      ...(options.logger ? { logger: options.logger } : {}),
    });
    await driver.configure();
    const cache = new ImageCache({
      driver,
      maxSize: config.image_cache_max_size,
      fillIdleTimeout: config.image_cache_fill_idle_timeout,
      ...(options.logger ? { logger: options.logger } : {}),
    });
    if (options.reconcile) await cache.reconcile();
    return cache;
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

  /** Waits for running fills to settle (at most `timeoutMs`), then closes the driver. */
  async close(timeoutMs = 0): Promise<void> {
    if (timeoutMs > 0) {
      const fills = Promise.all(this.#inflight.all().map((fill) => fill.whenSettled()));
      await Promise.race([fills, new Promise((resolve) => setTimeout(resolve, timeoutMs).unref())]);
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

  /**
   * A cached image as a stream, for another node of the cluster: in use (never evicted) while it streams, the fd
   * closed when it ends or is destroyed, and no hit recorded (a peer's copy is not a client's read).
   * @throws ImageNotCachedError
   */
  async streamForPeer(imageId: string): Promise<{ stream: Readable; size: number }> {
    const reader = await this.driver.openForRead(imageId);
    const stream = streamHit(reader, this.#admission, this.stats, this.#logger, { recordHit: false });
    return { stream, size: reader.size };
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
   * Rejects with the origin's error when the origin cannot be opened.
   */
  async fetch(request: FetchRequest, attempt = 0): Promise<FetchResult> {
    this.driver.getImageFilepath(request.imageId); // validates the id before anything else happens
    if (request.expected?.osHashAlgo) checkHashAlgorithm(request.expected.osHashAlgo);
    await this.#ensureSized();
    const decision = await this.#inflight.exclusive(request.imageId, async () => {
      const running = await this.#running(request.imageId);
      if (running?.joinable) return { fill: running, leader: false };
      const hit = await this.#tryHit(request);
      if (hit) return hit;
      return { fill: this.#startFill(request, false), leader: true };
    });
    if (!('fill' in decision)) return decision;
    const { fill, leader } = decision;
    const reader = new FillReader(fill, leader ? null : () => this.#joinOrStart(request));
    try {
      await fill.ready;
    } catch (error) {
      reader.destroy();
      if (leader || attempt > 0) throw error;
      return this.fetch(request, attempt + 1); // a follower retries the origin once
    }
    reader.activate();
    if (!leader) this.stats.requests.COALESCED += 1;
    return { status: leader ? fill.status : 'COALESCED', size: fill.size, stream: reader };
  }

  /**
   * A byte range of the image, never starting a fill (RFC 9110 ranges; Glance bypasses the cache for them, bug
   * 1664709): from the cached file (`HIT`), from a running fill's file once those bytes are on disk
   * (`COALESCED`), else from the origin (`BYPASS`) without disturbing a running fill.
   */
  async fetchRange(request: FetchRequest, range: Range): Promise<FetchResult> {
    const { imageId } = request;
    this.driver.getImageFilepath(imageId);
    const size = range.end - range.start + 1;
    const expectedSize = request.expected?.size ?? null;
    const cached = await rangeFromCache(this.driver, imageId, range, expectedSize);
    if (cached) {
      this.stats.requests.HIT += 1;
      this.stats.bytesFromCache += size;
      return { status: 'HIT', size, stream: cached };
    }
    const filling = await rangeFromFill(this.driver, this.#inflight.get(imageId), range);
    if (filling) {
      this.stats.requests.COALESCED += 1;
      this.stats.bytesFromCache += size;
      return { status: 'COALESCED', size, stream: filling };
    }
    const controller = new AbortController();
    const stream = await rangeFromOrigin(range, controller.signal, request.openOriginRange, request.openOrigin);
    stream.once('close', () => controller.abort());
    this.stats.requests.BYPASS += 1;
    this.stats.bytesFromOrigin += size;
    return { status: 'BYPASS', size, stream };
  }

  /**
   * Caches an image without a consumer (Glance's prefetch / `PUT /v2/cache/{id}`): runs to completion even if
   * nobody reads it. Joins a fill already running. Resolves true when this call cached it, false when it was
   * cached already; rejects with the origin's or verification's error, or {@link NotCachedError}.
   */
  async prefetch(request: FetchRequest): Promise<boolean> {
    this.driver.getImageFilepath(request.imageId);
    await this.#ensureSized();
    let fill: Fill | null = null;
    // A running fill that cannot be cached (bypass, or it stopped spooling) is not pinned: pinning would keep
    // fetching bytes nobody wants. The prefetch waits for it, then decides again (bounded: a live request may
    // start another such fill meanwhile).
    for (let round = 0; fill === null; round += 1) {
      const decision = await this.#inflight.exclusive(request.imageId, async (): Promise<{ fill: Fill } | { wait: Fill } | null> => {
        const running = await this.#running(request.imageId);
        if (running?.cacheable) {
          running.pin();
          return { fill: running };
        }
        if (running) return { wait: running };
        if (await this.driver.isCached(request.imageId)) return null;
        return { fill: this.#startFill(request, true) };
      });
      if (!decision) return false;
      if ('fill' in decision) fill = decision.fill;
      else if (round < 2) await decision.wait.whenSettled();
      else throw new NotCachedError(request.imageId, 'other requests keep fetching it uncached');
    }
    await fill.whenSettled();
    if (fill.error) throw fill.error;
    if (!fill.committed) {
      throw new NotCachedError(
        request.imageId,
        fill.status === 'BYPASS' ? 'it does not fit in image_cache_max_size' : 'the cache could not store it (see the log)',
      );
    }
    return true;
  }

  isCached(imageId: string): Promise<boolean> {
    return this.driver.isCached(imageId);
  }
  isQueued(imageId: string): Promise<boolean> {
    return this.driver.isQueued(imageId);
  }
  getCacheSize(): Promise<number> {
    return this.driver.getCacheSize();
  }
  getHitCount(imageId: string): Promise<number> {
    return this.driver.getHitCount(imageId);
  }
  getCachedImages(): Promise<CachedImage[]> {
    return this.driver.getCachedImages();
  }
  getCachedImage(imageId: string): Promise<CachedImage | null> {
    return this.driver.getCachedImage(imageId);
  }
  getCachedNodes(imageId: string): Promise<string[]> {
    return this.driver.getCachedNodes(imageId);
  }
  deleteAllQueuedImages(): Promise<number> {
    return this.driver.deleteAllQueuedImages();
  }
  deleteQueuedImage(imageId: string): Promise<void> {
    return this.driver.deleteQueuedImage(imageId);
  }
  queueImage(imageId: string): Promise<boolean> {
    return this.driver.queueImage(imageId);
  }
  getQueuedImages(): Promise<string[]> {
    return this.driver.getQueuedImages();
  }
  openForRead(imageId: string): Promise<ImageReader> {
    return this.driver.openForRead(imageId);
  }
  getImageSize(imageId: string): Promise<number> {
    return this.driver.getImageSize(imageId);
  }

  /** Deletes one cached image; admission subtracts its size only if this call deleted the file. */
  async deleteCachedImage(imageId: string): Promise<void> {
    this.driver.getImageFilepath(imageId); // validates the id (a rejection, like every failure here)
    await this.#admission.deleteImages([imageId]);
  }

  /** Deletes every cached image, then re-reads the size (serialised with eviction and other deletes). */
  async deleteAllCachedImages(): Promise<number> {
    return this.#admission.exclusive(() => this.driver.deleteAllCachedImages());
  }

  /** Removes `invalid/` files and `incomplete/` files older than `stallTime` seconds (0: all but live fills). */
  clean(stallTime?: number): Promise<CleanResult> {
    return this.driver.clean(stallTime);
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

  #startFill(request: FetchRequest, prefetch: boolean): Fill {
    const fill = new Fill({
      imageId: request.imageId,
      expected: request.expected ?? {},
      openOrigin: request.openOrigin,
      prefetch,
      driver: this.driver,
      admission: this.#admission,
      stats: this.stats,
      logger: this.#logger,
      idleTimeoutMs: this.#idleTimeoutMs,
      hashPool: this.#hashPool,
    });
    this.#inflight.add(fill);
    fill.start().catch((error: unknown) => {
      // start() settles every failure itself; this is the last line of defence, never a crash.
      this.#logger.error({ imageId: request.imageId, err: error }, 'fill failed unexpectedly');
      fill.abort(error instanceof Error ? error : new Error(String(error)));
    });
    return fill;
  }

  /** For a follower whose fill failed before it got a byte: the fill running now, or a new one. */
  #joinOrStart(request: FetchRequest): Promise<Fill> {
    return this.#inflight.exclusive(request.imageId, async () => {
      const running = await this.#running(request.imageId);
      return running?.joinable ? running : this.#startFill(request, false);
    });
  }

  /** The fill of an image still running, after letting a failed one finish its cleanup (its file, its lock). */
  async #running(imageId: string): Promise<Fill | undefined> {
    const fill = this.#inflight.get(imageId);
    if (!fill?.settled) return fill;
    await fill.whenSettled();
    return undefined;
  }

  async #tryHit(request: FetchRequest): Promise<FetchResult | null> {
    const { imageId, expected } = request;
    let reader: ImageReader;
    try {
      reader = await this.driver.openForRead(imageId);
    } catch (error) {
      if (error instanceof ImageNotCachedError) return null;
      throw error;
    }
    if (expected?.size !== undefined && expected.size !== null && expected.size !== reader.size) {
      // The origin says the image has another size: the copy is stale or torn. Never serve it.
      this.#logger.warn({ imageId, cached: reader.size, expected: expected.size }, 'cached copy has the wrong size');
      await reader.close();
      try {
        await this.deleteCachedImage(imageId);
      } catch (error) {
        // A cache fault: the origin still serves the image (the fill will not be able to replace the copy).
        this.stats.fillFailures.cache_fault += 1;
        this.#logger.error({ imageId, err: error }, 'cannot delete the stale cached copy; serving from the origin');
      }
      return null;
    }
    this.stats.requests.HIT += 1;
    return { status: 'HIT', size: reader.size, stream: streamHit(reader, this.#admission, this.stats, this.#logger) };
  }

  /**
   * Drops an image that changed upstream (a cluster-wide invalidation): a running fill of it is aborted (its
   * consumers get an error, its file goes to `invalid/`, it never commits the stale bytes), then the cached
   * copy is deleted. Runs under the id's lock, so no fill of the old bytes can start in between; one that was
   * already committing when aborted is deleted after it settled.
   */
  async invalidate(imageId: string): Promise<void> {
    this.driver.getImageFilepath(imageId);
    await this.#inflight.exclusive(imageId, async () => {
      const fill = this.#inflight.get(imageId);
      if (fill) {
        fill.abort(new FillAbortedError(imageId, 'the image was invalidated'));
        await fill.whenSettled();
      }
      await this.deleteCachedImage(imageId);
    });
  }
}
