import type { Logger } from 'pino';
import type { CachedImage, Driver, ImageReader } from '../drivers/driver.js';
import { ImageNotCachedError } from '../errors.js';
import type { Admission } from './admission.js';
import type { CacheStats } from './stats.js';

/**
 * A hit that another process streams (a `workers` process reads the committed file itself): the owner of the
 * cache holds the image open and in use for it, records the hit when told the file was read to the end, and
 * counts it and its bytes, so `hits`, `last_accessed`, eviction and the stats are the same as for a hit the owner
 * streams itself (`hit.ts`).
 */
export interface HitLease {
  readonly imageId: string;
  /** The committed file (the streamer opens it by this path; its `size` must match). */
  readonly path: string;
  readonly size: number;
  /** What the cache recorded at commit (size and digests): the image's record for the caller's checks. */
  readonly entry: CachedImage;
  /** The request was let through (auth, policy): counts it as a `HIT`. Once. */
  serve(): void;
  /** The file was read to the end: records the hit (`hits + 1`, `last_accessed`); never rejects (logged). */
  record(): Promise<void>;
  /** The streamer is done with the file (read `bytesRead` bytes): the image may be evicted again. Once. */
  end(bytesRead: number): Promise<void>;
}

/**
 * Opens a lease on a cached image, or null when it is not cached (no file, or no record). The image is in use
 * (never evicted) from here until {@link HitLease.end}, so the file cannot be evicted between this lookup and
 * the streamer's open.
 */
export async function leaseHit(
  driver: Driver,
  admission: Admission,
  stats: CacheStats,
  logger: Logger,
  imageId: string,
): Promise<HitLease | null> {
  let reader: ImageReader;
  try {
    reader = await driver.openForRead(imageId);
  } catch (error) {
    if (error instanceof ImageNotCachedError) return null;
    throw error;
  }
  let entry: CachedImage | null;
  try {
    entry = await driver.getCachedImage(imageId);
  } catch (error) {
    await reader.close();
    throw error;
  }
  if (!entry || entry.size !== reader.size) {
    // No record (a file being reconciled) or a record of another copy: the owner's own path decides instead.
    await reader.close();
    return null;
  }
  admission.acquire(imageId);
  let [served, ended] = [false, false];
  return {
    imageId,
    path: reader.path,
    size: reader.size,
    entry,
    serve() {
      if (served) return;
      served = true;
      stats.requests.HIT += 1;
    },
    record: () => reader.complete().catch((error: unknown) => logger.warn({ imageId, err: error }, 'could not record the hit')),
    async end(bytesRead: number) {
      if (ended) return;
      ended = true;
      await reader.close().catch((error: unknown) => logger.warn({ imageId, err: error }, 'could not close a cached image'));
      if (served) stats.bytesFromCache += bytesRead;
      admission.release(imageId);
    },
  };
}
