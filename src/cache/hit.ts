import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { ImageReader } from '../drivers/driver.js';
import type { Admission } from './admission.js';
import type { CacheStats } from './stats.js';

/**
 * The stream of a cache hit. The image is in use (never evicted) until the stream ends or is destroyed; the hit
 * is recorded only when the stream was read to the end (as Glance's sqlite and xattr drivers count hits).
 */
export function streamHit(
  reader: ImageReader,
  admission: Admission,
  stats: CacheStats,
  logger: Logger,
  options: { recordHit: boolean } = { recordHit: true },
): Readable {
  const { imageId } = reader;
  admission.acquire(imageId);
  const stream = reader.createReadStream() as Readable & { bytesRead: number };
  finished(stream, { writable: false })
    .then(
      () => (options.recordHit ? reader.complete() : reader.close()),
      () => reader.close(),
    )
    .catch((error: unknown) => logger.warn({ imageId, err: error }, 'could not record the hit'))
    .finally(() => {
      stats.bytesFromCache += stream.bytesRead;
      admission.release(imageId);
    });
  return stream;
}
