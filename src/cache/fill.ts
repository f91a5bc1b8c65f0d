import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Driver } from '../drivers/driver.js';
import { FillAbortedError, FillIdleTimeoutError, HashWorkerError, NotCachedError } from '../errors.js';
import { type DirectBody, directBodyOf } from '../streams/direct-body.js';
import type { Admission } from './admission.js';
import type { ComputedDigests, DigestPolicy, ExpectedImage } from './digest.js';
import { DigestSession } from './fill-digest.js';
import { FillFile } from './fill-file.js';
import { FillMemory } from './fill-memory.js';
import { FillState } from './fill-state.js';
import { Spool } from './fill-spool.js';
import type { HashPool, SlotTee } from './hash-pool.js';
import type { Reservation } from './reservation.js';
import { IdleTimer } from './idle-timer.js';
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
  /** Which declared digests are verified (`image_cache_verify_digests`). */
  digestPolicy: DigestPolicy;
}

/** What the fill needs to know of a consumer: how far it has read. */
export interface FillConsumer {
  readonly position: number;
}

/**
 * One origin fetch of one image, teed to any number of consumers and (unless bypassing) to `incomplete/<id>`.
 * Bytes below `fileLimit` are read from the file (a shared fd: a late joiner starts at byte 0, a slow consumer
 * never holds the origin back), the rest from `#memory` ({@link FillMemory}): a stream fill's chunks not written
 * yet, or without a file (bypass, a full disk, the size cap) every chunk until all consumers have read it. A
 * direct fill ({@link Fill.#pumpDirect}) keeps nothing in memory while its file takes every byte.
 *
 * Consumers read up to `released`, which trails `received` by the newest read until the origin has ended and
 * the digests were verified: a consumer never receives a complete body that failed verification.
 */
export class Fill extends FillState {
  readonly #options: FillOptions;
  readonly #memory = new FillMemory();
  readonly #consumers = new Set<FillConsumer>();
  readonly #abort = new AbortController();
  #spool: Spool | null = null;
  readonly #readFile = new FillFile();
  #origin: Readable | null = null;
  #digests: DigestSession | null = null;
  readonly #idle: IdleTimer;
  #prefetch: boolean;
  /** The cache will not get this image (bypass, or spooling stopped): only consumers give the fill a purpose. */
  #uncacheable = false;
  /** Reading the origin directly into the hash ring, which the file is written from ({@link #pumpDirect}). */
  #tee: SlotTee | null = null;
  /** Bytes of the newest origin read: held back from consumers until verified. */
  #newest = 0;

  constructor(options: FillOptions) {
    super(options.imageId, options.expected);
    this.#options = options;
    this.#prefetch = options.prefetch;
    const ms = options.idleTimeoutMs;
    this.#idle = new IdleTimer(ms, () => this.#fail(new FillIdleTimeoutError(this.imageId, ms / 1000), 'idle'));
  }

  /** Consumers attached now (clients reading this fill). */
  get consumerCount(): number {
    return this.#consumers.size;
  }

  /** A new consumer can still get every byte from 0 (the memory part was never trimmed past the file). */
  get joinable(): boolean {
    if (this.settled || this.error) return false;
    const first = this.#memory.firstOffset;
    if (first === undefined) return this.fileLimit === this.received || this.#tee !== null;
    return first <= this.fileLimit;
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

  /**
   * Aborts the fill (shutdown, invalidation): consumers get `error`, the partial file goes to `invalid/`. A fill
   * already verified is only committing bytes its consumers have in full: it is left to finish (whoever aborts it
   * waits for `whenSettled()`; an invalidation deletes the copy after).
   */
  abort(error: Error): void {
    if (this.verified) return;
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
      // Once verified, the fill only commits: the last consumer leaving (it has read everything) stops nothing.
      const running = !this.settled && !this.verified;
      if (running && !this.#prefetch) this.#fail(new FillAbortedError(this.imageId), 'aborted');
      else if (running && this.#uncacheable) {
        // Already counted when spooling stopped (cache_fault, over_capacity) or at admission (bypass).
        this.#fail(new NotCachedError(this.imageId, 'the cache could not store it (see the log)'), 'aborted', false);
      } else if (!this.#spool) this.#trimMemory();
      this.#closeReadFileIfUnused().catch(() => {}); // never rejects: close errors are swallowed inside
    } else {
      this.#trimMemory();
    }
    // The pump may be waiting for this consumer in #waitForConsumers: let it re-check who is left.
    this.emit('consumed');
  }

  /** Runs the fill. Never rejects: failures land in `error`, `ready` and the consumers. */
  async start(): Promise<void> {
    const { admission, logger, stats } = this.#options;
    admission.acquire(this.imageId);
    const declared = this.expected.size ?? 0;
    const reservation = await Spool.reserve(admission, declared).catch((error: unknown) => {
      // Eviction failed (a file that cannot be renamed or a store error): a cache fault, never the download's.
      stats.fillFailures.cache_fault += 1;
      logger.error({ imageId: this.imageId, err: error }, 'eviction failed; serving this image uncached');
      return 'faulted' as const;
    });
    if (reservation !== null && reservation !== 'faulted') {
      stats.fills += 1;
      await this.#openSpool(reservation);
    } else {
      this.progress.status = 'BYPASS';
      this.#uncacheable = true;
      logger.info({ imageId: this.imageId, size: declared }, 'image does not fit in the cache; bypassing');
    }
    if (this.progress.status === 'BYPASS' && this.#prefetch && this.#consumers.size === 0) {
      // Nobody to serve and nowhere to keep it: do not fetch at all.
      const faulted = reservation === 'faulted';
      const reason = faulted ? 'the cache could not make room (see the log)' : 'it does not fit in image_cache_max_size';
      this.#fail(new NotCachedError(this.imageId, reason), 'over_capacity', !faulted);
      return;
    }
    stats.requests[this.progress.status] += 1;
    this.#idle.arm(); // an origin that never answers is as idle as one that stops sending
    try {
      this.#origin = await this.#options.openOrigin(this.#abort.signal);
    } catch (error) {
      this.#fail(this.progress.error ?? (error as Error), 'origin');
      return;
    }
    if (this.progress.settled) {
      this.#origin.destroy();
      return;
    }
    this.resolveReady();
    await this.#pump(this.#origin);
  }

  /**
   * The fd of the fill's file, open for reading while any consumer is attached (sendfile reads it); null when the
   * fill has no file (a bypass, or it failed to open one). Bytes below `fileLimit` are in it.
   */
  get readFd(): number | null {
    return this.#readFile.fd;
  }

  /** The fill still writes its file: `fileLimit` grows with `received`. */
  get spooling(): boolean {
    return this.#spool !== null;
  }

  /** Reads up to `length` bytes at `position` (below `released`) from memory if it is there, else from the file. */
  async readAt(position: number, length: number): Promise<Buffer> {
    const inMemory = this.#memory.readAt(position, length);
    if (inMemory) return inMemory;
    const onDisk = position < this.progress.fileLimit;
    const read = onDisk ? await this.#readFile.read(position, Math.min(length, this.progress.fileLimit - position)) : null;
    if (read) return read;
    throw new Error(`fill of ${this.imageId}: byte ${position} is neither on disk nor in memory`);
  }

  /** A consumer moved on: memory it no longer needs can go, and the origin may resume. */
  consumed(): void {
    if (!this.#spool) this.#trimMemory();
    this.emit('consumed');
  }

  async #openSpool(reservation: Reservation): Promise<void> {
    try {
      this.#spool = await Spool.open(this.imageId, reservation, this.#options.driver, {
        onWritten: (written) => this.#onWritten(written),
        onError: (error) => {
          this.#stopSpooling(error, 'cache_fault').catch((fault: unknown) => this.#fail(fault as Error, 'cache_fault'));
        },
      });
      await this.#readFile.open(this.#spool.path);
    } catch (error) {
      this.#options.logger.warn({ imageId: this.imageId, err: error }, 'cache cannot take this fill; serving from the origin');
      await this.#stopSpooling(error as Error, 'cache_fault');
    }
  }

  async #pump(origin: Readable): Promise<void> {
    const { stats, hashPool, digestPolicy } = this.#options;
    let digests: DigestSession;
    try {
      digests = new DigestSession(this.imageId, this.expected, digestPolicy, hashPool);
      this.#digests = digests;
    } catch (error) {
      this.#fail(error as Error, 'origin');
      return;
    }
    const tee = digests.tee;
    const direct = this.#spool && tee ? directBodyOf(origin) : null;
    try {
      this.#idle.arm();
      if (direct && tee) await this.#pumpDirect(direct, digests, tee);
      else for await (const data of origin) {
        const chunk = typeof data === 'string' ? Buffer.from(data) : (data as Buffer);
        if (this.progress.settled) break;
        digests.update(chunk); // awaited below, after the spool
        stats.bytesFromOrigin += chunk.length;
        this.#memory.push(this.progress.received, chunk);
        this.progress.received += chunk.length;
        const spool = this.#spool;
        const stop = spool && (await spool.write(this.imageId, chunk, this.progress.received, () => this.#idle.clear()));
        if (stop) await this.#stopSpooling(stop.error, stop.reason);
        this.#release(this.progress.received - chunk.length);
        await this.#waitForConsumers();
        if (digests.busy) this.#idle.clear(); // waiting for our own hash threads is not the origin being idle
        await digests.settle();
        this.#idle.arm();
      }
      this.#idle.clear();
      if (this.progress.settled) {
        digests.discard();
        return;
      }
      await this.#finish(digests);
    } catch (error) {
      this.#idle.clear();
      digests.discard();
      // Our own hash threads failing is a cache fault, not the origin's.
      const ours = error instanceof HashWorkerError;
      this.#fail(this.progress.error ?? (error as Error), ours ? 'cache_fault' : 'origin');
    }
  }

  /**
   * The origin's bytes read straight into the hash ring (or, when it has no room, into the connection's buffer
   * and copied in once), whose slots are written to the file ({@link SlotTee}); consumers read the file. If the
   * file stops (a disk fault), memory takes what it lacks from the ring and the fill goes on as a stream fill
   * without a file does.
   */
  async #pumpDirect(body: DirectBody, digests: DigestSession, tee: SlotTee): Promise<void> {
    const { stats } = this.#options;
    stats.fillsDirect += 1;
    this.#tee = tee;
    this.#spool!.teeFrom(tee, this.imageId, {
      onStop: (stop) => (this.#spool ? this.#stopSpooling(stop.error, stop.reason) : Promise.resolve()),
      onFault: (error) => this.#fail(error, 'cache_fault'),
    });
    /** Without a file (it stopped), memory keeps the part of `view` it lacks. */
    const keep = (view: Buffer, offset: number) => {
      const from = this.#memory.end ?? this.progress.fileLimit;
      if (this.#spool || from >= offset + view.length) return;
      this.#memory.push(from, Buffer.from(view.subarray(from - offset)));
      this.#release(offset);
    };
    const waits = async (view: Buffer, offset: number): Promise<void> => {
      this.#idle.clear(); // our own hash threads, disk or consumers are not the origin being idle
      await digests.settle();
      keep(view, offset); // the file may have stopped while this view waited for room in the ring
      await this.#waitForConsumers();
      this.#idle.arm();
    };
    await body.pipeTo((view) => {
      if (this.progress.settled) throw this.progress.error ?? new FillAbortedError(this.imageId);
      this.#idle.arm();
      stats.bytesFromOrigin += view.length;
      const offset = this.progress.received;
      this.progress.received += view.length;
      this.#newest = view.length;
      digests.update(view);
      if (digests.busy || this.#memory.overHighWater) return waits(view, offset);
      keep(view, offset);
      return undefined;
    }, () => tee.freeTail());
  }

  /** Stop writing to the cache; the consumers keep getting the origin's bytes from memory. */
  async #stopSpooling(error: Error, reason: FillFailureReason, alreadyRolledBack = false): Promise<void> {
    const spool = this.#spool;
    this.#spool = null;
    this.#uncacheable = true;
    this.#options.stats.fillFailures[reason] += 1;
    if (!spool || alreadyRolledBack) return;
    this.progress.fileLimit = Math.min(this.progress.fileLimit, spool.bytesWritten);
    const tee = this.#tee;
    if (tee && !this.progress.done) {
      // What the file lacks is still in the ring (its slots wait for the file): memory holds it now. A read still
      // waiting for room in the ring adds its rest when it is in (see #pumpDirect).
      const end = this.#memory.takeFromRing(tee, this.progress.fileLimit);
      this.#release(Math.min(end, this.progress.received - this.#newest));
    }
    this.emit('progress'); // consumers following the file (sendfile) learn that it stops growing
    this.#options.logger.warn({ imageId: this.imageId, err: error, reason }, 'fill stops caching; download goes on');
    // The file is deleted, not kept in invalid/: the point is to give the space back. Open readers keep their fd.
    await spool.discard(error, { keepFile: false });
    if (this.#consumers.size === 0 && !this.progress.settled) this.#fail(error, reason, false);
  }

  async #finish(digests: DigestSession): Promise<void> {
    let recorded: ComputedDigests;
    try {
      recorded = await digests.verify();
    } catch (error) {
      if (error instanceof HashWorkerError) throw error;
      this.#fail(error as Error, 'verification');
      return;
    }
    // Nothing unverified is published: the stronger declared digest was checked; these are recorded as declared.
    const unchecked = digests.unchecked;
    if (unchecked.length > 0) this.#options.logger.debug({ imageId: this.imageId, unchecked }, 'declared digests recorded without a check');
    // Verified: the consumers get the last chunk now, not after fsync and rename. Nothing unverified is released
    // (this is the only place `done` is set), and the commit that follows publishes these same bytes.
    this.progress.verified = true;
    this.progress.done = true;
    this.#release(this.progress.received);
    const spool = this.#spool;
    if (spool) {
      try {
        await spool.commit(recorded);
        this.progress.committed = true;
        this.#options.stats.fillsCommitted += 1;
      } catch (error) {
        // The clients have their bytes; only the cache loses the image.
        this.#options.logger.error({ imageId: this.imageId, err: error }, 'commit failed; the image is not cached');
        await this.#stopSpooling(error as Error, 'cache_fault', true); // commit already rolled the file back
      }
    }
    await this.#settle();
  }

  #fail(error: Error, reason: FillFailureReason, count = true): void {
    if (this.progress.settled) return;
    this.progress.error = error;
    if (count) this.#options.stats.fillFailures[reason] += 1;
    this.#options.logger.warn({ imageId: this.imageId, err: error, reason }, 'fill failed');
    this.#idle.clear();
    this.#abort.abort(error);
    this.#origin?.destroy();
    const spool = this.#spool;
    this.#spool = null;
    // Now, not when the pump notices: the pump may be waiting for room at the hash threads, and they for it.
    this.#digests?.discard();
    this.rejectReady(error);
    // Consumers learn of the failure at once; whenSettled() waits until the partial file is in invalid/.
    this.#settle(spool?.discard(error)).catch((fault: unknown) => {
      this.#options.logger.error({ imageId: this.imageId, err: fault }, 'fill cleanup failed');
    });
  }

  async #settle(cleanup?: Promise<void>): Promise<void> {
    this.progress.settled = true;
    this.#options.admission.release(this.imageId);
    try {
      this.emit('progress');
      this.emit('consumed');
      await cleanup;
      this.emit('settled');
    } finally {
      // Whatever a listener did, whoever waits for the fill (inflight, prefetch, shutdown) must not hang.
      this.resolveSettled();
      await this.#closeReadFileIfUnused();
    }
  }

  #onWritten(written: number): void {
    if (!this.#spool) return;
    this.progress.fileLimit = written;
    this.#trimMemory();
    if (this.#tee) {
      this.#tee.fileReached(written);
      // Consumers read the file; the newest read waits for verification.
      if (!this.progress.done) this.#release(Math.min(written, this.progress.received - this.#newest));
    }
    this.emit('progress');
  }

  #release(limit: number): void {
    if (limit > this.progress.released) {
      this.progress.released = limit;
      this.emit('progress');
    }
  }

  /** Drops the memory nobody needs any more (see {@link FillMemory.trim}). */
  #trimMemory(): void {
    this.#memory.trim(this.progress.fileLimit, this.progress.received, this.#spool ? null : positions(this.#consumers));
  }

  /** Without a file to spool to, the slowest consumer sets the pace (memory stays bounded). */
  async #waitForConsumers(): Promise<void> {
    if (this.#spool || !this.#memory.overHighWater) return;
    this.#idle.clear();
    while (!this.progress.settled && !this.#spool && this.#consumers.size > 0 && this.#memory.overHighWater) {
      await new Promise<void>((resolve) => this.once('consumed', resolve));
    }
  }

  async #closeReadFileIfUnused(): Promise<void> {
    if (this.progress.settled && this.#consumers.size === 0) await this.#readFile.close();
  }
}

function* positions(consumers: Iterable<FillConsumer>): Iterable<number> {
  for (const consumer of consumers) yield consumer.position;
}
