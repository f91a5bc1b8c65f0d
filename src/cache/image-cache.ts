import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pino, type Logger } from 'pino';
import type { CacheConfig } from '../config.js';
import type { CachedImage, CleanResult, Driver, ImageReader, ImageWriter } from '../drivers/driver.js';
import { createDriver } from '../drivers/registry.js';
import { CacheIOError } from '../errors.js';
import { DEFAULT_HASH_ALGO, DigestStream, type ExpectedImage, verifyDigests } from './digest.js';

export interface ImageCacheOptions {
  /** A configured (or not yet configured) driver; `open()` configures it. */
  driver: Driver;
  /** `image_cache_max_size` in bytes. @default 10 GiB */
  maxSize?: number;
  logger?: Logger;
}

/** `prune()`'s result; the v2 Cache API reports it as `total_files_pruned` / `total_bytes_pruned`. */
export interface PruneResult {
  filesPruned: number;
  bytesPruned: number;
}

/** Progress of a long copy, for progress bars. */
export type ProgressListener = (bytesDone: number, bytesTotal: number | null) => void;

/** Prune asks the driver for victims in batches that double, so even a rescanning driver does O(n log n) work. */
const FIRST_PRUNE_BATCH = 256;
const MAX_PRUNE_BATCH = 65_536;

/**
 * The front of the cache (Glance's `ImageCache`, spec §3): pass-throughs to the driver plus prune, clean and
 * verified writes. The streaming read-through fill comes on top of this.
 */
export class ImageCache {
  readonly driver: Driver;
  readonly maxSize: number;
  readonly #logger: Logger;

  constructor(options: ImageCacheOptions) {
    this.driver = options.driver;
    this.maxSize = options.maxSize ?? 10 * 1024 ** 3;
    this.#logger = options.logger ?? pino({ level: 'silent' });
  }

  /** Builds the driver `image_cache_driver` names (no fallback to another driver) and configures it. */
  static async open(config: CacheConfig, options: { logger?: Logger } = {}): Promise<ImageCache> {
    const driver = createDriver(config.image_cache_driver, {
      cacheDir: config.image_cache_dir,
      stallTime: config.image_cache_stall_time,
      sqliteDb: config.image_cache_sqlite_db,
      ...(options.logger ? { logger: options.logger } : {}),
    });
    await driver.configure();
    return new ImageCache({ driver, maxSize: config.image_cache_max_size, ...options });
  }

  close(): Promise<void> {
    return this.driver.close();
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
  getCachedNodes(imageId: string): Promise<string[]> {
    return this.driver.getCachedNodes(imageId);
  }
  deleteAllCachedImages(): Promise<number> {
    return this.driver.deleteAllCachedImages();
  }
  deleteCachedImage(imageId: string): Promise<void> {
    return this.driver.deleteCachedImage(imageId);
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

  /** Removes `invalid/` files and `incomplete/` files older than `stallTime` seconds (0: all). */
  clean(stallTime?: number): Promise<CleanResult> {
    return this.driver.clean(stallTime);
  }

  /**
   * Deletes least recently accessed images until the cache is at most `image_cache_max_size` (spec §3.1).
   * Stops, instead of spinning, when the driver has no more candidates (Glance's centralized driver can loop
   * forever here) or offers one it already deleted.
   */
  async prune(): Promise<PruneResult> {
    let current = await this.driver.getCacheSize();
    const result: PruneResult = { filesPruned: 0, bytesPruned: 0 };
    const deleted = new Set<string>();
    let batchSize = FIRST_PRUNE_BATCH;
    while (current > this.maxSize) {
      const victims: string[] = [];
      for (const [imageId, size] of await this.driver.listLeastRecentlyAccessed(batchSize)) {
        if (current <= this.maxSize) break;
        if (deleted.has(imageId)) continue;
        victims.push(imageId);
        current -= size;
        result.bytesPruned += size;
        result.filesPruned += 1;
      }
      if (victims.length === 0) break;
      await this.driver.deleteCachedImages(victims);
      for (const id of victims) deleted.add(id);
      batchSize = Math.min(batchSize * 2, MAX_PRUNE_BATCH);
    }
    if (current > this.maxSize) {
      this.#logger.warn(
        { cacheSize: current, maxSize: this.maxSize },
        'cache is still over image_cache_max_size: the rest is in files without metadata',
      );
    }
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
   * Copies a file into the cache, verifying size, MD5 and multihash against `expected` in the same pass
   * (Glance's `cache_image_file`, which checks MD5 only). Returns false, reading nothing, when the image is
   * already cached or being cached. A mismatch leaves the copy in `invalid/` and throws
   * {@link ChecksumMismatchError} or {@link SizeMismatchError}.
   */
  async cacheImageFile(
    imageId: string,
    path: string,
    expected: ExpectedImage = {},
    onProgress?: ProgressListener,
  ): Promise<boolean> {
    if (!(await this.driver.isCacheable(imageId))) return false;
    let total: number;
    try {
      const info = await stat(path);
      if (!info.isFile()) throw new Error('not a regular file');
      total = info.size;
    } catch (error) {
      throw new CacheIOError(`cannot read ${path}: ${(error as Error).message}`, { cause: error });
    }
    return this.cacheImageStream(imageId, createReadStream(path, { highWaterMark: 1 << 20 }), expected, (done) =>
      onProgress?.(done, total),
    );
  }

  /** {@link cacheImageFile} for any stream (the source is consumed and destroyed either way). */
  async cacheImageStream(
    imageId: string,
    source: Readable,
    expected: ExpectedImage = {},
    onProgress?: ProgressListener,
  ): Promise<boolean> {
    if (!(await this.driver.isCacheable(imageId))) {
      source.destroy();
      return false;
    }
    let digest: DigestStream;
    try {
      digest = new DigestStream(expected.osHashAlgo ?? DEFAULT_HASH_ALGO);
    } catch (error) {
      source.destroy();
      throw error;
    }
    const writer = await this.driver.openForWrite(imageId);
    const stages: Array<NodeJS.ReadableStream | NodeJS.WritableStream> = [source, digest];
    if (onProgress) stages.push(progressTap(onProgress));
    try {
      await pipeline([...stages, writer.stream]);
      const found = digest.digests();
      verifyDigests(imageId, expected, found);
      await writer.commit(found);
    } catch (error) {
      source.destroy();
      await writer.rollback(error);
      throw error;
    }
    return true;
  }
}

function progressTap(onProgress: ProgressListener): Transform {
  let done = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      done += chunk.length;
      onProgress(done, null);
      callback(null, chunk);
    },
  });
}
