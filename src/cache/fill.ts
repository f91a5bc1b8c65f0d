import { EventEmitter } from 'node:events';
import { type FileHandle, open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Driver, ImageWriter } from '../drivers/driver.js';
import {
  ChecksumMismatchError,
  FillAbortedError,
  FillIdleTimeoutError,
  ImageCacheError,
  NotCachedError,
  SizeMismatchError,
} from '../errors.js';
import { drainedOrClosed } from '../streams/drained.js';
import type { Admission } from './admission.js';
import { DEFAULT_HASH_ALGO, type ExpectedImage, verifyDigests } from './digest.js';
import { type HashPool, inlineHasher, type StreamHasher } from './hash-pool.js';
import type { CacheStats, FillFailureReason } from './stats.js';

/** Opens the origin's stream of an image. Abort the signal to cancel the request. */
export type OriginOpener = (signal: AbortSignal) => Promise<Readable>;

export interface FillOptions {
  imageId: string;
  expected: ExpectedImage;
  openOrigin: OriginOpener;
  /** A prefetch runs to completion even with no consumer attached. */
  prefetch: boolean;
  driver: Driver;
  admission: Admission;
  stats: CacheStats;
  logger: Logger;
  /** Abort when the origin sends nothing for this long. */
  idleTimeoutMs: number;
  /** Hash threads; null hashes on the main thread. */
  hashPool: HashPool | null;
}

/** What the fill needs to know of a consumer: how far it has read. */
export interface FillConsumer {
  readonly position: number;
}

/** In-memory bytes a fill may hold for consumers when it cannot spool to disk, before it pauses the origin. */
const MEMORY_HIGH_WATER = 8 << 20;
/**
 * The newest bytes stay in memory even once they are on disk: consumers keeping up with the origin share these
 * buffers (no read, no copy); only late joiners and slow consumers read the file.
 */
const RECENT_WINDOW = 8 << 20;
/** Reservation step for images of unknown size (or that send more than they promised). */
const GROW_STEP = 8 << 20;

interface Chunk {
  offset: number;
  buf: Buffer;
}

/**
 * One origin fetch of one image, teed to any number of consumers and (unless bypassing) to `incomplete/<id>`.
 *
 * Bytes live in two places: `[0, fileLimit)` in the incomplete file (read through a shared fd with positional
 * reads, so a late joiner starts at byte 0 and a slow consumer never holds the origin back), and the rest in
 * `#memory`: chunks handed to the file but not written yet, or, when the cache cannot take the image (bypass,
 * a full disk, the size cap), the only copy, kept until every consumer has read it.
 *
 * Consumers may read up to `released`, which trails `received` by the newest chunk until the origin has ended
 * and the digests were verified: a consumer never receives a complete body that failed verification.
 */
export class Fill extends EventEmitter {
  readonly imageId: string;
  readonly expected: ExpectedImage;
  /** `BYPASS` when admission refused the image: it is served, never cached. */
  status: 'MISS' | 'BYPASS' = 'MISS';
  received = 0;
  fileLimit = 0;
  released = 0;
  /** The origin ended and verification passed; `released === received`. */
  done = false;
  /** The image was committed to the cache. */
  committed = false;
  error: Error | null = null;
  /** Settled: done or failed; no more bytes will come. */
  settled = false;
  readonly ready: Promise<void>;
  readonly #options: FillOptions;
  readonly #memory: Chunk[] = [];
  readonly #consumers = new Set<FillConsumer>();
  readonly #abort = new AbortController();
  readonly #settledPromise: Promise<void>;
  #resolveSettled!: () => void;
  #resolveReady!: () => void;
  #rejectReady!: (error: Error) => void;
  #writer: ImageWriter | null = null;
  #readFile: FileHandle | null = null;
  #reservedBytes = 0;
  #origin: Readable | null = null;
  #idleTimer: NodeJS.Timeout | null = null;
  #prefetch: boolean;
  /** The cache will not get this image (bypass, or spooling stopped): only consumers give the fill a purpose. */
  #uncacheable = false;
  /** Commit is ending the file: a write error now is commit's to report (and roll back), not the listener's. */
  #committing = false;

  constructor(options: FillOptions) {
    super();
    this.setMaxListeners(0);
    this.imageId = options.imageId;
    this.expected = options.expected;
    this.#options = options;
    this.#prefetch = options.prefetch;
    this.ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.ready.catch(() => {}); // observed by whoever awaits it; never an unhandled rejection
    this.#settledPromise = new Promise<void>((resolve) => {
      this.#resolveSettled = resolve;
    });
  }

  /** Declared size (for `Content-Length`), when the origin's metadata gave one. */
  get size(): number | null {
    return this.expected.size ?? null;
  }

  /** Consumers attached now (clients reading this fill). */
  get consumerCount(): number {
    return this.#consumers.size;
  }

  /** A new consumer can still get every byte from 0 (the memory part was never trimmed past the file). */
  get joinable(): boolean {
    if (this.settled || this.error) return false;
    const first = this.#memory[0];
    return first === undefined ? this.fileLimit === this.received : first.offset <= this.fileLimit;
  }

  /** Resolves when the fill has settled, either way. */
  whenSettled(): Promise<void> {
    return this.#settledPromise;
  }

  /**
   * The fill may still end in a cached image: it is not a bypass and has not stopped spooling. Only such a
   * fill is worth pinning: pinning one that cannot be cached would fetch (and buffer) bytes nobody wants.
   */
  get cacheable(): boolean {
    return !this.settled && !this.#uncacheable;
  }

  /** Whether the fill runs to completion without consumers (a prefetch, or pinned by one). */
  get isPrefetch(): boolean {
    return this.#prefetch;
  }

  /** Aborts the fill (shutdown): consumers get `error`, the partial file goes to `invalid/`. */
  abort(error: Error): void {
    this.#fail(error, 'aborted');
  }

  /** Turns the fill into a prefetch: it will finish even if every consumer leaves. */
  pin(): void {
    this.#prefetch = true;
  }

  attach(consumer: FillConsumer): void {
    this.#consumers.add(consumer);
  }

  /**
   * A consumer left. The last one to leave aborts the fill, unless it is a prefetch that can still be cached
   * (a pinned fill that stopped spooling has nobody left to serve and nowhere to keep the bytes).
   */
  detach(consumer: FillConsumer): void {
    if (!this.#consumers.delete(consumer)) return;
    if (this.#consumers.size === 0) {
      if (!this.settled && !this.#prefetch) this.#fail(new FillAbortedError(this.imageId), 'aborted');
      else if (!this.settled && this.#uncacheable) {
        // Already counted when spooling stopped (cache_fault, over_capacity) or at admission (bypass).
        this.#fail(new NotCachedError(this.imageId, 'the cache could not store it (see the log)'), 'aborted', false);
      } else if (!this.#writer) this.#trimMemory();
      this.#closeReadFileIfUnused().catch(() => {}); // never rejects: close errors are swallowed inside
    } else {
      this.#trimMemory();
    }
    // The pump may be waiting for this consumer in #waitForConsumers: let it re-check who is left.
    this.emit('consumed');
  }

  /** Runs the fill. Never rejects: failures land in `error`, `ready` and the consumers. */
  async start(): Promise<void> {
    const { admission, driver, logger, stats } = this.#options;
    admission.acquire(this.imageId);
    const declared = this.expected.size ?? 0;
    let admitted = false;
    let faulted = false;
    try {
      admitted = await admission.reserve(declared);
    } catch (error) {
      faulted = true;
      // Eviction failed (a file that cannot be renamed or a store error): a cache fault, never the download's.
      stats.fillFailures.cache_fault += 1;
      logger.error({ imageId: this.imageId, err: error }, 'eviction failed; serving this image uncached');
    }
    if (admitted) {
      this.#reservedBytes = declared;
      stats.fills += 1;
      try {
        this.#writer = await driver.openForWrite(this.imageId);
        this.#readFile = await open(this.#writer.path, 'r');
        this.#writer.stream.on('progress', (written: number) => this.#onWritten(written));
        this.#writer.stream.on('error', (error: Error) => {
          if (this.#committing) return;
          this.#stopSpooling(error, 'cache_fault').catch((fault: unknown) => this.#fail(fault as Error, 'cache_fault'));
        });
      } catch (error) {
        logger.warn({ imageId: this.imageId, err: error }, 'cache cannot take this fill; serving from the origin');
        await this.#stopSpooling(error as Error, 'cache_fault');
      }
    } else {
      this.status = 'BYPASS';
      this.#uncacheable = true;
      logger.info({ imageId: this.imageId, size: declared }, 'image does not fit in the cache; bypassing');
    }
    if (this.status === 'BYPASS' && this.#prefetch && this.#consumers.size === 0) {
      // Nobody to serve and nowhere to keep it: do not fetch at all.
      const reason = faulted ? 'the cache could not make room (see the log)' : 'it does not fit in image_cache_max_size';
      this.#fail(new NotCachedError(this.imageId, reason), 'over_capacity', !faulted);
      return;
    }
    stats.requests[this.status] += 1;
    this.#armIdleTimer(); // an origin that never answers is as idle as one that stops sending
    try {
      this.#origin = await this.#options.openOrigin(this.#abort.signal);
    } catch (error) {
      this.#fail(this.error ?? (error as Error), 'origin');
      return;
    }
    if (this.settled) {
      this.#origin.destroy();
      return;
    }
    this.#resolveReady();
    await this.#pump(this.#origin);
  }

  /** Reads up to `length` bytes at `position` (below `released`) from memory if it is there, else from the file. */
  async readAt(position: number, length: number): Promise<Buffer> {
    const first = this.#memory[0];
    if (first && position >= first.offset) {
      for (const chunk of this.#memory) {
        const end = chunk.offset + chunk.buf.length;
        if (position < end) {
          const start = position - chunk.offset;
          return chunk.buf.subarray(start, Math.min(chunk.buf.length, start + length));
        }
      }
    }
    if (position < this.fileLimit && this.#readFile) {
      const size = Math.min(length, this.fileLimit - position);
      const buffer = Buffer.allocUnsafe(size);
      const { bytesRead } = await this.#readFile.read(buffer, 0, size, position);
      if (bytesRead > 0) return buffer.subarray(0, bytesRead);
    }
    throw new Error(`fill of ${this.imageId}: byte ${position} is neither on disk nor in memory`);
  }

  /** A consumer moved on: memory it no longer needs can go, and the origin may resume. */
  consumed(): void {
    if (!this.#writer) this.#trimMemory();
    this.emit('consumed');
  }

  async #pump(origin: Readable): Promise<void> {
    const { stats, hashPool } = this.#options;
    let hasher: StreamHasher;
    try {
      const algorithm = this.expected.osHashAlgo ?? DEFAULT_HASH_ALGO;
      hasher = hashPool ? hashPool.open(algorithm) : inlineHasher(algorithm);
    } catch (error) {
      this.#fail(error as Error, 'origin');
      return;
    }
    try {
      this.#armIdleTimer();
      for await (const data of origin) {
        const chunk = typeof data === 'string' ? Buffer.from(data) : (data as Buffer);
        if (this.settled) break;
        const hashing = hasher.update(chunk);
        // Awaited below, after the spool: a hash thread dying meanwhile must not be an unhandled rejection.
        if (hashing) hashing.catch(() => {});
        stats.bytesFromOrigin += chunk.length;
        this.#memory.push({ offset: this.received, buf: chunk });
        this.received += chunk.length;
        if (this.#writer) await this.#spool(chunk);
        this.#release(this.received - chunk.length);
        await this.#waitForConsumers();
        if (hashing) {
          this.#clearIdleTimer(); // waiting for our own hash threads is not the origin being idle
          await hashing;
        }
        this.#armIdleTimer();
      }
      this.#clearIdleTimer();
      if (this.settled) {
        hasher.discard();
        return;
      }
      await this.#finish(hasher);
    } catch (error) {
      this.#clearIdleTimer();
      hasher.discard();
      // Our own hash threads failing is a cache fault, not the origin's.
      const ours = error instanceof ImageCacheError && error.code === 'ERR_HASH_WORKER';
      this.#fail(this.error ?? (error as Error), ours ? 'cache_fault' : 'origin');
    }
  }

  async #spool(chunk: Buffer): Promise<void> {
    const writer = this.#writer;
    if (!writer) return;
    if (this.received > this.#reservedBytes) {
      const needed = this.received - this.#reservedBytes;
      const { admission } = this.#options;
      // Grow in steps to keep admission off the per-chunk path; near the cap, take just what is needed.
      try {
        for (const step of [Math.max(GROW_STEP, needed), needed]) {
          if (await admission.reserve(step)) {
            this.#reservedBytes += step;
            break;
          }
        }
      } catch (error) {
        // Eviction failed: stop caching, keep downloading (the origin did nothing wrong).
        return this.#stopSpooling(error as Error, 'cache_fault');
      }
      if (this.received > this.#reservedBytes) {
        const error = new NotCachedError(this.imageId, 'it outgrew image_cache_max_size');
        return this.#stopSpooling(error, 'over_capacity');
      }
    }
    if (writer.stream.write(chunk)) return;
    this.#clearIdleTimer();
    await drainedOrClosed(writer.stream);
  }

  /** Stop writing to the cache; the consumers keep getting the origin's bytes from memory. */
  async #stopSpooling(error: Error, reason: FillFailureReason): Promise<void> {
    const writer = this.#writer;
    this.#writer = null;
    this.#uncacheable = true;
    this.#options.admission.unreserve(this.#reservedBytes);
    this.#reservedBytes = 0;
    this.#options.stats.fillFailures[reason] += 1;
    if (!writer) return;
    this.fileLimit = Math.min(this.fileLimit, writer.bytesWritten);
    this.#options.logger.warn({ imageId: this.imageId, err: error, reason }, 'fill stops caching; download goes on');
    // The file is deleted, not kept in invalid/: the point is to give the space back. Open readers keep their fd.
    await writer.rollback(error, { keepFile: false }).catch(() => {});
    if (this.#consumers.size === 0 && !this.settled) this.#fail(error, reason, false);
  }

  async #finish(hasher: StreamHasher): Promise<void> {
    const found = await hasher.digests();
    try {
      verifyDigests(this.imageId, this.expected, found);
    } catch (error) {
      this.#fail(error as ChecksumMismatchError | SizeMismatchError, 'verification');
      return;
    }
    const writer = this.#writer;
    if (writer) {
      this.#committing = true;
      try {
        await this.#options.admission.commit(this.#reservedBytes, async () => {
          await writer.commit(found);
          return found.size;
        });
        this.#reservedBytes = 0;
        this.committed = true;
        this.#options.stats.fillsCommitted += 1;
      } catch (error) {
        this.#writer = null; // commit already rolled the file back
        await this.#stopSpooling(error as Error, 'cache_fault');
      } finally {
        this.#committing = false;
      }
    }
    this.done = true;
    this.#release(this.received);
    await this.#settle();
  }

  #fail(error: Error, reason: FillFailureReason, count = true): void {
    if (this.settled) return;
    this.error = error;
    if (count) this.#options.stats.fillFailures[reason] += 1;
    this.#options.logger.warn({ imageId: this.imageId, err: error, reason }, 'fill failed');
    this.#clearIdleTimer();
    this.#abort.abort(error);
    this.#origin?.destroy();
    const writer = this.#writer;
    this.#writer = null;
    this.#options.admission.unreserve(this.#reservedBytes);
    this.#reservedBytes = 0;
    this.#rejectReady(error);
    // Consumers learn of the failure at once; whenSettled() waits until the partial file is in invalid/.
    this.#settle(writer?.rollback(error).catch(() => {})).catch((fault: unknown) => {
      this.#options.logger.error({ imageId: this.imageId, err: fault }, 'fill cleanup failed');
    });
  }

  async #settle(cleanup?: Promise<void>): Promise<void> {
    this.settled = true;
    this.#options.admission.release(this.imageId);
    try {
      this.emit('progress');
      this.emit('consumed');
      await cleanup;
      this.emit('settled');
    } finally {
      // Whatever a listener did, whoever waits for the fill (inflight, prefetch, shutdown) must not hang.
      this.#resolveSettled();
      await this.#closeReadFileIfUnused();
    }
  }

  #onWritten(written: number): void {
    if (!this.#writer) return;
    this.fileLimit = written;
    this.#trimMemory();
    this.emit('progress');
  }

  #release(limit: number): void {
    if (limit > this.released) {
      this.released = limit;
      this.emit('progress');
    }
  }

  /**
   * Drops memory below what the file holds and the recent window (spooling), or below what every consumer has
   * read (not spooling).
   */
  #trimMemory(): void {
    let keepFrom = Math.min(this.fileLimit, this.received - RECENT_WINDOW);
    if (!this.#writer) {
      keepFrom = Infinity;
      for (const consumer of this.#consumers) {
        keepFrom = Math.min(keepFrom, consumer.position);
      }
      keepFrom = Math.max(keepFrom, this.fileLimit);
    }
    while (this.#memory.length > 0) {
      const first = this.#memory[0] as Chunk;
      if (first.offset + first.buf.length > keepFrom) break;
      this.#memory.shift();
    }
  }

  /** Without a file to spool to, the slowest consumer sets the pace (memory stays bounded). */
  async #waitForConsumers(): Promise<void> {
    const buffered = () => this.#memory.reduce((sum, c) => sum + c.buf.length, 0);
    if (this.#writer || buffered() <= MEMORY_HIGH_WATER) return;
    this.#clearIdleTimer();
    while (!this.settled && !this.#writer && this.#consumers.size > 0 && buffered() > MEMORY_HIGH_WATER) {
      await new Promise((resolve) => this.once('consumed', resolve));
    }
  }

  /** (Re)starts the idle clock: called for every origin chunk, and when a pause for back-pressure ends. */
  #armIdleTimer(): void {
    if (this.#idleTimer) {
      this.#idleTimer.refresh();
      return;
    }
    const ms = this.#options.idleTimeoutMs;
    this.#idleTimer = setTimeout(() => {
      const error = new FillIdleTimeoutError(this.imageId, ms / 1000);
      this.#fail(error, 'idle');
    }, ms);
  }

  /** Waiting on our own disk or consumers is not the origin being idle. */
  #clearIdleTimer(): void {
    if (this.#idleTimer) clearTimeout(this.#idleTimer);
    this.#idleTimer = null;
  }

  async #closeReadFileIfUnused(): Promise<void> {
    if (!this.settled || this.#consumers.size > 0 || !this.#readFile) return;
    const file = this.#readFile;
    this.#readFile = null;
    await file.close().catch(() => {});
  }
}
