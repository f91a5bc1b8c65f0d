import { type Readable, Transform, type TransformCallback } from 'node:stream';
import type { Logger } from 'pino';
import type { ImageReader } from '../drivers/driver.js';
import type { Admission } from './admission.js';
import type { CacheStats } from './stats.js';

/**
 * How long the last chunk of a hit waits for the hit to be recorded. A metadata store that hangs (a central DB
 * that went away) must not hold downloads: past this the chunk goes out and the record finishes (or fails,
 * logged) behind it.
 */
const RECORD_WAIT_MS = 2000;

/**
 * Who is told about a hit stream: the image is in use from `acquire` until `release`, which also says how many
 * bytes were read. In the process that owns the cache that is admission and the stats ({@link hitTally}); in a
 * `workers` process it is the owner, over IPC.
 */
export interface HitTally {
  acquire(imageId: string): void;
  release(imageId: string, bytesRead: number): void;
}

/** The owner's tally: admission keeps the image from eviction, the stats count the bytes served. */
export function hitTally(admission: Admission, stats: CacheStats): HitTally {
  return {
    acquire: (imageId) => admission.acquire(imageId),
    release: (imageId, bytesRead) => {
      stats.bytesFromCache += bytesRead;
      admission.release(imageId);
    },
  };
}

/**
 * The stream of a cache hit. The image is in use (never evicted) until the stream ends or is destroyed.
 *
 * The hit counts when the file was read to the end (Glance's rule: an aborted read counts nothing), and it is
 * recorded *before* the last chunk is handed on: so when a client has the whole body, `hits` and
 * `last_accessed` already say so. Waiting for the file stream's end and recording afterwards lost hits (issue
 * 9): when a client drops the connection as soon as it has every byte (curl does), the server can still be
 * waiting on back-pressure for the read that returns EOF; the response then closes, the file stream is
 * destroyed before its `end`, and the download counted as aborted. The price of holding back one chunk (at
 * most 1 MiB): a client that disconnects while receiving the very last chunk is counted.
 */
export function streamHit(
  reader: Pick<ImageReader, 'imageId' | 'createReadStream' | 'complete' | 'close'>,
  tally: HitTally,
  logger: Logger,
  options: { recordHit: boolean } = { recordHit: true },
): Readable {
  const { imageId } = reader;
  tally.acquire(imageId);
  const file = reader.createReadStream() as Readable & { bytesRead: number };
  let done: Promise<void> | undefined;
  /** Closes the file once, recording the hit or not; never rejects (a hit that cannot be recorded is logged). */
  const finish = (complete: boolean): Promise<void> =>
    (done ??= (complete && options.recordHit ? reader.complete() : reader.close())
      .catch((error: unknown) => logger.warn({ imageId, err: error }, 'could not record the hit'))
      .finally(() => tally.release(imageId, file.bytesRead)));

  let held: Buffer | null = null;
  const out = new Transform({
    readableHighWaterMark: 1 << 20,
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      // One chunk behind the file: the newest chunk may be the last one, which waits for the record.
      const previous = held;
      held = chunk;
      callback(null, previous ?? undefined);
    },
    flush(callback: TransformCallback) {
      const last = held;
      held = null;
      let timer: NodeJS.Timeout | undefined;
      const bounded = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, RECORD_WAIT_MS);
        timer.unref();
      });
      Promise.race([finish(true), bounded]).then(() => {
        clearTimeout(timer);
        callback(null, last ?? undefined);
      }, callback);
    },
    destroy(error: Error | null, callback: (error: Error | null) => void) {
      file.destroy();
      // Destroyed before the file reached its end: an aborted read, no hit. After flush began this is a no-op.
      finish(false).then(() => callback(error), callback);
    },
  });
  file.once('error', (error) => out.destroy(error));
  file.pipe(out);
  return out;
}
