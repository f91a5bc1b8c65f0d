import { type Readable, Transform, type TransformCallback, type Writable } from 'node:stream';
import type { Logger } from 'pino';
import type { ImageReader } from '../drivers/driver.js';
import { BufferPool } from '../streams/buffer-pool.js';
import { sendFileRange } from '../streams/send-file.js';
import { plainSocketOf, sendFileBySendfile } from '../streams/sendfile.js';
import type { Admission } from './admission.js';
import type { Range } from './range-read.js';
import type { CacheStats } from './stats.js';

/**
 * Who is told about a hit: the image is in use from `acquire` until `release`, which also says how many bytes
 * were sent. In the process that owns the cache that is admission and the stats ({@link hitTally}); in a
 * `workers` process it is the owner, over IPC.
 */
export interface HitTally {
  acquire(imageId: string): void;
  release(imageId: string, bytesSent: number): void;
}

/** The owner's tally: admission keeps the image from eviction, the stats count the bytes served. */
export function hitTally(admission: Admission, stats: CacheStats): HitTally {
  return {
    acquire: (imageId) => admission.acquire(imageId),
    release: (imageId, bytesSent) => {
      stats.bytesFromCache += bytesSent;
      admission.release(imageId);
    },
  };
}

/** What a hit needs of an open cached file (the driver's reader, or a worker's file under the owner's lease). */
export type HitReader = Pick<ImageReader, 'imageId' | 'size' | 'fd' | 'read' | 'createReadStream' | 'complete' | 'close'>;

/**
 * How long the last chunk of a hit waits for the hit to be recorded. A metadata store that hangs (a central DB
 * that went away) must not hold downloads: past this the chunk goes out and the record finishes (or fails,
 * logged) behind it.
 */
const RECORD_WAIT_MS = 2000;

/**
 * The buffers every hit of the process reads into. 1 MiB reads keep a multi-GB image at a few thousand
 * syscalls; 32 idle buffers (32 MiB) cover 8-16 busy clients, each with one buffer being written and one being
 * read ahead. A burst beyond that allocates, and what it allocated is left to the GC afterwards.
 */
const HIT_BUFFERS = new BufferPool(1 << 20, 32);

export interface CacheHitOptions {
  /** Count a hit when the read reaches the end (Glance's rule); ranges count nothing. @default true */
  recordHit?: boolean;
  /** Only these bytes (inclusive); the whole file when absent. */
  range?: Range;
}

/**
 * A cached image being served, from `openForRead` to the close of its file. The image is in use (never evicted)
 * until it is closed. Send it once, either way: {@link writeTo} a socket (the fast path: pooled buffers written
 * straight to the response) or as a {@link stream} (anything that wants a Readable).
 *
 * The hit counts when the file was read to the end (Glance's rule: an aborted read counts nothing), and it is
 * recorded *before* the last chunk is handed on: so when a client has the whole body, `hits` and
 * `last_accessed` already say so. Recording after the end lost hits (issue 9): a client that drops the
 * connection as soon as it has every byte (curl does) left the server waiting on back-pressure for the read that
 * returns EOF; the response closed and the download counted as aborted. The price of holding back one chunk (at
 * most 1 MiB): a client that disconnects while receiving the very last chunk is counted.
 */
export class CacheHit {
  readonly imageId: string;
  /** Bytes this hit serves: the file's size, or the range's. */
  readonly size: number;
  readonly #reader: HitReader;
  readonly #tally: HitTally;
  readonly #logger: Logger;
  readonly #recordHit: boolean;
  readonly #range: Range;
  #sent = false;
  #bytesSent = 0;
  #done: Promise<void> | undefined;

  constructor(reader: HitReader, tally: HitTally, logger: Logger, options: CacheHitOptions = {}) {
    this.imageId = reader.imageId;
    this.#reader = reader;
    this.#tally = tally;
    this.#logger = logger;
    this.#recordHit = options.recordHit ?? true;
    this.#range = options.range ?? { start: 0, end: reader.size - 1 };
    this.size = this.#range.end - this.#range.start + 1;
    tally.acquire(this.imageId);
  }

  /**
   * Writes the bytes to `out` (an HTTP response whose head is written or pending; the caller ends it): by sendfile(2)
   * when `out` is a plain TCP response and the addon is built (streams/sendfile.ts), else from pooled buffers. Resolves `true`
   * when every byte went out, `false` when the client left first or the file failed (then `out` is destroyed,
   * so the client sees a short body, never a wrong one). Never rejects: a read error is logged here.
   */
  async writeTo(out: Writable): Promise<boolean> {
    this.#claim();
    let complete = false;
    const beforeLast = () => {
      this.#bytesSent = this.size;
      return this.#recordBeforeLast();
    };
    try {
      const socket = plainSocketOf(out);
      const outcome = socket
        ? await sendFileBySendfile(this.#reader.fd, this.#range, out, socket, beforeLast)
        : await sendFileRange(
            (buffer, length, position) => this.#reader.read(buffer, length, position),
            this.#range,
            out,
            HIT_BUFFERS,
            beforeLast,
          );
      complete = outcome.complete;
      this.#bytesSent = outcome.bytes;
    } catch (error) {
      this.#logger.error({ imageId: this.imageId, err: error }, 'reading a cached image failed mid-download');
      out.destroy(error as Error);
    }
    await this.#finish(complete);
    return complete;
  }

  /** The bytes as a Readable (a Transform one chunk behind the file, so the last chunk waits for the record). */
  stream(): Readable {
    this.#claim();
    const file = this.#reader.createReadStream(this.#range) as Readable & { bytesRead: number };
    let held: Buffer | null = null;
    const finish = (complete: boolean) => {
      this.#bytesSent = file.bytesRead;
      return this.#finish(complete);
    };
    const out = new Transform({
      readableHighWaterMark: 1 << 20,
      transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
        const previous = held;
        held = chunk;
        callback(null, previous ?? undefined);
      },
      flush: (callback: TransformCallback) => {
        const last = held;
        held = null;
        this.#bytesSent = file.bytesRead;
        this.#recordBeforeLast().then(() => callback(null, last ?? undefined), callback);
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

  /** Never sent after all (the request failed before its body): give the file and the pin back. */
  discard(): Promise<void> {
    return this.#finish(false);
  }

  #claim(): void {
    if (this.#sent) throw new Error(`cache hit of ${this.imageId} sent twice`);
    this.#sent = true;
  }

  /** Records the hit (or just closes the file), waiting at most RECORD_WAIT_MS; never rejects. */
  async #recordBeforeLast(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const bounded = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, RECORD_WAIT_MS);
      timer.unref();
    });
    await Promise.race([this.#finish(true), bounded]);
    clearTimeout(timer);
  }

  /** Closes the file once, recording the hit or not; never rejects (a hit that cannot be recorded is logged). */
  #finish(complete: boolean): Promise<void> {
    const reader = this.#reader;
    this.#done ??= (complete && this.#recordHit ? reader.complete() : reader.close())
      .catch((error: unknown) => this.#logger.warn({ imageId: this.imageId, err: error }, 'could not record the hit'))
      .finally(() => this.#tally.release(this.imageId, this.#bytesSent));
    return this.#done;
  }
}
