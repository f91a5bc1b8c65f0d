import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CacheIOError } from '../errors.js';
import { checkHashAlgorithm, DEFAULT_HASH_ALGO, type ExpectedImage } from './digest.js';
import type { ImageCache, ProgressListener } from './image-cache.js';

/** `ImageCache.cacheImageFile`: a local file through the fill engine (verified, size-capped). */
export async function importFile(
  cache: ImageCache,
  imageId: string,
  path: string,
  expected: ExpectedImage = {},
  onProgress?: ProgressListener,
): Promise<boolean> {
  if (!(await cache.driver.isCacheable(imageId))) return false;
  let total: number;
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new Error('not a regular file');
    total = info.size;
  } catch (error) {
    throw new CacheIOError(`cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
  const source = createReadStream(path, { highWaterMark: 1 << 20 });
  return importStream(cache, imageId, source, expected, (done) => onProgress?.(done, total));
}

/** `ImageCache.cacheImageStream`: any stream, as a prefetch whose origin is the stream. */
export async function importStream(
  cache: ImageCache,
  imageId: string,
  source: Readable,
  expected: ExpectedImage = {},
  onProgress?: ProgressListener,
): Promise<boolean> {
  try {
    checkHashAlgorithm(expected.osHashAlgo ?? DEFAULT_HASH_ALGO);
    if (!(await cache.driver.isCacheable(imageId))) return false;
    let stream: Readable = source;
    if (onProgress) {
      const tap = progressTap(onProgress);
      pipeline(source, tap).catch(() => {}); // errors reach the fill through the tap
      stream = tap;
    }
    return await cache.prefetch({ imageId, expected, openOrigin: async () => stream });
  } finally {
    source.destroy();
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
