import { EventEmitter } from 'node:events';
import { type FileHandle, open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Driver, ImageWriter } from '../drivers/driver.js';
import {
  ChecksumMismatchError,
  FillAbortedError,
  FillIdleTimeoutError,
  HashWorkerError,
  NotCachedError,
  SizeMismatchError,
} from '../errors.js';
import { drainedOrClosed } from '../streams/drained.js';
import type { Admission } from './admission.js';
import { DEFAULT_HASH_ALGO, type ExpectedImage, verifyDigests } from './digest.js';
import { FillMemory } from './fill-memory.js';
import { type HashPool, inlineHasher, type StreamHasher } from './hash-pool.js';
import { IdleTimer } from './idle-timer.js';
import { Reservation } from './reservation.js';
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

/**
 * One origin fetch of one image, teed to any number of consumers and (unless bypassing) to `incomplete/<id>`.
 *
 * Bytes live in two places: `[0, fileLimit)` in the incomplete file (read through a shared fd with positional
 * reads, so a late joiner starts at byte 0 and a slow consumer never holds the origin back), and the rest in
 * `#memory` ({@link FillMemory}): chunks handed to the file but not written yet, or, when the cache cannot take
 * the image (bypass, a full disk, the size cap), the only copy, kept until every consumer has read it.
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
  /**
   * Every byte arrived and the digests matched: nothing more comes from the origin, and the fill only commits
   * and settles. A newcomer then waits for it and reads the committed file (a HIT, counted) instead of joining.
   */
  verified = false;
  error: Error | null = null;
  /** Settled: done or failed; no more bytes will come. */
  settled = false;
  readonly ready: Promise<void>;
  readonly #options: FillOptions;
  readonly #memory = new FillMemory();
  readonly #consumers = new Set<FillConsumer>();
  readonly #abort = new AbortController();
  readonly #settledPromise: Promise<void>;
  #resolveSettled!: () => void;
  #resolveReady!: () => void;
  #rejectReady!: (error: Error) => void;
  #writer: ImageWriter | null = null;
  #readFile: FileHandle | null = null;
  readonly #reservation: Reservation;
  #origin: Readable | null = null;
  readonly #idle: IdleTimer;
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
    this.#reservation = new Reservation(options.admission);
    const ms = options.idleTimeoutMs;
    this.#idle = new IdleTimer(ms, () => this.#fail(new FillIdleTimeoutError(this.imageId, ms / 1000), 'idle'));
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
    const first = this.#memory.firstOffset;
    return first === undefined ? this.fileLimit === this.received : first <= this.fileLimit;
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
      admitted = await this.#reservation.take(declared);
    } catch (error) {
      faulted = true;
      // Eviction failed (a file that cannot be renamed or a store error): a cache fault, never the download's.
      stats.fillFailures.cache_fault += 1;
      logger.error({ imageId: this.imageId, err: error }, 'eviction failed; serving this image uncached');
    }
    if (admitted) {
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
    this.#idle.arm(); // an origin that never answers is as idle as one that stops sending
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
    const inMemory = this.#memory.readAt(position, length);
    if (inMemory) return inMemory;
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
      this.#idle.arm();
      for await (const data of origin) {
        const chunk = typeof data === 'string' ? Buffer.from(data) : (data as Buffer);
        if (this.settled) break;
        const hashing = hasher.update(chunk);
        // Awaited below, after the spool: a hash thread dying meanwhile must not be an unhandled rejection.
        if (hashing) hashing.catch(() => {});
        stats.bytesFromOrigin += chunk.length;
        this.#memory.push(this.received, chunk);
        this.received += chunk.length;
        if (this.#writer) await this.#spool(chunk);
        this.#release(this.received - chunk.length);
        await this.#waitForConsumers();
        if (hashing) {
          this.#idle.clear(); // waiting for our own hash threads is not the origin being idle
          await hashing;
        }
        this.#idle.arm();
      }
      this.#idle.clear();
      if (this.settled) {
        hasher.discard();
        return;
      }
      await this.#finish(hasher);
    } catch (error) {
      this.#idle.clear();
      hasher.discard();
      // Our own hash threads failing is a cache fault, not the origin's.
      const ours = error instanceof HashWorkerError;
      this.#fail(this.error ?? (error as Error), ours ? 'cache_fault' : 'origin');
    }
  }

  async #spool(chunk: Buffer): Promise<void> {
    const writer = this.#writer;
    if (!writer) return;
    let covered: boolean;
    try {
      covered = await this.#reservation.cover(this.received);
    } catch (error) {
      // Eviction failed: stop caching, keep downloading (the origin did nothing wrong).
      return this.#stopSpooling(error as Error, 'cache_fault');
    }
    if (!covered) {
      return this.#stopSpooling(new NotCachedError(this.imageId, 'it outgrew image_cache_max_size'), 'over_capacity');
    }
    if (writer.stream.write(chunk)) return;
    this.#idle.clear();
    await drainedOrClosed(writer.stream);
  }

  /** Stop writing to the cache; the consumers keep getting the origin's bytes from memory. */
  async #stopSpooling(error: Error, reason: FillFailureReason): Promise<void> {
    const writer = this.#writer;
    this.#writer = null;
    this.#uncacheable = true;
    this.#reservation.release();
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
    this.verified = true;
    const writer = this.#writer;
    if (writer) {
      this.#committing = true;
      try {
        await this.#reservation.commit(async () => {
          await writer.commit(found);
          return found.size;
        });
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
    this.#idle.clear();
    this.#abort.abort(error);
    this.#origin?.destroy();
    const writer = this.#writer;
    this.#writer = null;
    this.#reservation.release();
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

  /** Drops the memory nobody needs any more (see {@link FillMemory.trim}). */
  #trimMemory(): void {
    this.#memory.trim(this.fileLimit, this.received, this.#writer ? null : positions(this.#consumers));
  }

  /** Without a file to spool to, the slowest consumer sets the pace (memory stays bounded). */
  async #waitForConsumers(): Promise<void> {
    if (this.#writer || !this.#memory.overHighWater) return;
    this.#idle.clear();
    while (!this.settled && !this.#writer && this.#consumers.size > 0 && this.#memory.overHighWater) {
      await new Promise((resolve) => this.once('consumed', resolve));
    }
  }

  async #closeReadFileIfUnused(): Promise<void> {
    if (!this.settled || this.#consumers.size > 0 || !this.#readFile) return;
    const file = this.#readFile;
    this.#readFile = null;
    await file.close().catch(() => {});
  }
}

function* positions(consumers: Iterable<FillConsumer>): Iterable<number> {
  for (const consumer of consumers) yield consumer.position;
}
