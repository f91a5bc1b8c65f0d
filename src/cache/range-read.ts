import { type FileHandle, open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { cutRange } from '../streams/slice.js';
import type { Driver, ImageReader } from '../drivers/driver.js';
import { CHUNK_SIZE } from '../drivers/file-handles.js';
import { isErrno } from '../drivers/fs-util.js';
import type { Fill } from './fill.js';

/** An inclusive byte range. */
export interface Range {
  start: number;
  end: number;
}

/** Opens the origin for just a byte range (an HTTP `Range` request, a positioned file read). */
export type RangeOpener = (range: Range, signal: AbortSignal) => Promise<Readable>;

/**
 * The cached file, open, when the image is cached with the expected size and holds the range; null otherwise.
 * A range is not a complete read: the caller serves it without recording a hit (Glance never served ranges from
 * the cache at all, bug 1664709).
 */
export async function rangeFromCache(
  driver: Driver,
  imageId: string,
  range: Range,
  expectedSize: number | null,
): Promise<ImageReader | null> {
  let reader;
  try {
    reader = await driver.openForRead(imageId);
  } catch (error) {
    if ((error as { code?: string }).code === 'ERR_IMAGE_NOT_CACHED') return null;
    throw error;
  }
  if ((expectedSize !== null && reader.size !== expectedSize) || range.end >= reader.size) {
    await reader.close();
    return null;
  }
  return reader;
}

/**
 * The range from a running fill's `incomplete/` file once those bytes are on disk; null otherwise. The file is
 * opened by path, so the fill is not disturbed: it neither waits for this reader nor is kept alive by it.
 */
export async function rangeFromFill(driver: Driver, fill: Fill | undefined, range: Range): Promise<Readable | null> {
  if (!fill || fill.settled || fill.fileLimit <= range.end) return null;
  let file: FileHandle;
  try {
    file = await open(driver.getImageFilepath(fill.imageId, 'incomplete'), 'r');
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return null; // committed or rolled back meanwhile
    throw error;
  }
  const stream = file.createReadStream({ ...range, highWaterMark: CHUNK_SIZE });
  return stream;
}

/**
 * The range from the origin: a ranged request when the origin can do one, else the whole stream with the bytes
 * outside the range dropped (never cached: ranges do not start fills).
 */
export async function rangeFromOrigin(
  range: Range,
  signal: AbortSignal,
  openRange: RangeOpener | undefined,
  openWhole: (signal: AbortSignal) => Promise<Readable>,
): Promise<Readable> {
  if (openRange) return openRange(range, signal);
  return cutRange(await openWhole(signal), range);
}
