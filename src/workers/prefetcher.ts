import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { ImageCache } from '../cache/image-cache.js';
import { messageOf } from '../drivers/fs-util.js';
import { ImageStateError } from '../errors.js';
import type { Origin, OriginCaller } from '../origin/origin.js';

export interface PrefetcherOptions {
  cache: ImageCache;
  origin: Origin;
  logger: Logger;
  /** Prefetches at once, at most. @default 1 */
  concurrency?: number;
  /** First retry delay after a failure, doubled per failure. @default 30 s */
  retryBaseMs?: number;
  /** Longest retry delay. @default 1 h */
  retryMaxMs?: number;
  /** How the prefetcher appears to the origin (no caller: the origin's service credentials). */
  caller?: OriginCaller;
  now?: () => number;
}

/** The last failure of a queued image, as `GET /v2/cache/errors` shows it under `prefetch_errors`. */
export interface PrefetchError {
  error: string;
  attempts: number;
  /** Epoch seconds. */
  last_attempt: number;
  /** Epoch seconds; the prefetcher leaves the image alone until then (a PUT retries at once). */
  next_attempt: number;
}

export interface PrefetchRun {
  cached: string[];
  failed: string[];
}

/** How long a prefetch waits for live misses to finish before it starts, checking this often. */
const YIELD_POLL_MS = 100;

/**
 * Caches queued images (`PUT /v2/cache/{id}`, the legacy queue, `imgcache queue`). Unlike Glance's CacheWorker
 * it never dies on an error: a failed image stays queued with its last error visible, and is retried with
 * exponential backoff. It runs below live misses: bounded concurrency, and no new prefetch starts while a live
 * fill is running. Each of the `concurrency` slots takes the next due id as soon as it is free, ids queued
 * meanwhile included, so one long fill never holds the rest of the queue back.
 */
export class Prefetcher {
  readonly #options: Required<Omit<PrefetcherOptions, 'caller'>> & { caller: OriginCaller };
  readonly #errors = new Map<string, PrefetchError>();
  /** Ids a slot has taken (waiting for live misses, or being fetched): never taken twice at once. */
  readonly #active = new Set<string>();
  /** Due ids of the last queue scan, in queue order, not yet taken by a slot. */
  #pending: string[] = [];
  /** The slots running now, at most `concurrency`. */
  readonly #slots = new Set<Promise<void>>();
  /**
   * Bumped by every {@link forget}/{@link forgetAll}: a prefetch that started before its id was forgotten (the
   * id left the queue while it ran) records no failure when it ends.
   */
  #generation = 0;
  readonly #forgottenAt = new Map<string, number>();
  #allForgottenAt = 0;
  /** The busy period in progress: from a wake until no scan, no slot and no due id is left. */
  #run: { result: PrefetchRun; done: Promise<PrefetchRun>; end: (run: PrefetchRun) => void } | null = null;
  #scanning: Promise<void> | null = null;
  #rescan = false;
  #stopped = false;
  #timer: NodeJS.Timeout | null = null;

  constructor(options: PrefetcherOptions) {
    this.#options = {
      concurrency: 1,
      retryBaseMs: 30_000,
      retryMaxMs: 3_600_000,
      now: Date.now,
      caller: { service: true },
      ...options,
    };
  }

  /** Asks for `imageId` to be cached soon; an explicit request clears its backoff. */
  submit(imageId: string): void {
    const failure = this.#errors.get(imageId);
    if (failure) failure.next_attempt = 0;
    this.wake();
  }

  /** The image left the queue (deleted, cleared): forget its error, and the one of a prefetch still running. */
  forget(imageId: string): void {
    this.#errors.delete(imageId);
    this.#pending = this.#pending.filter((id) => id !== imageId);
    this.#generation += 1;
    // Only running prefetches can still report: no need to remember the others (the map stays bounded).
    if (this.#active.has(imageId)) this.#forgottenAt.set(imageId, this.#generation);
  }

  /** The whole queue was cleared. */
  forgetAll(): void {
    this.#errors.clear();
    this.#pending = [];
    this.#generation += 1;
    this.#allForgottenAt = this.#generation;
  }

  /** How many queued images have a recorded failure. */
  get errorCount(): number {
    return this.#errors.size;
  }

  /** Last errors of queued images, by id. */
  errors(): Record<string, PrefetchError> {
    return Object.fromEntries(this.#errors);
  }

  /**
   * Scans `queue/` now (or right after the scan in progress) and hands the due ids to free slots. Slots do not
   * wait for each other: an id queued while a long prefetch runs starts in the next free slot (issue 13's
   * boot storm, a PUT behind a large image), not when the others are done.
   */
  wake(): void {
    if (this.#stopped) return;
    this.#run ??= newRun();
    if (this.#scanning) {
      this.#rescan = true;
      return;
    }
    this.#scanning = this.#scanUntilCurrent();
  }

  /** Scans `queue/` every `seconds` too, for ids queued by other processes. */
  start(seconds: number): void {
    this.#timer = setInterval(() => this.wake(), seconds * 1000);
    this.#timer.unref();
    this.wake();
  }

  /** Starts no more prefetches (the ones running go on). */
  halt(): void {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#endRunIfIdle();
  }

  /** Resolves once no run is in progress (no scan, no prefetch running, nothing due left). */
  async settled(): Promise<void> {
    while (this.#run) await this.#run.done;
  }

  /** {@link halt}, then waits for the prefetches running (on shutdown the server aborts its fills first). */
  async stop(): Promise<void> {
    this.halt();
    await this.settled();
  }

  /**
   * Caches every queued image that is due, `concurrency` at a time, and resolves with what the run did once
   * nothing is left: ids queued while it runs are part of it. Joins the run in progress. Never rejects.
   */
  runOnce(): Promise<PrefetchRun> {
    this.wake();
    return this.#run?.done ?? Promise.resolve({ cached: [], failed: [] });
  }

  /** Scans until no wake came in during the last scan. Never rejects. */
  async #scanUntilCurrent(): Promise<void> {
    do {
      this.#rescan = false;
      await this.#scan();
      this.#fillSlots();
    } while (this.#rescan && !this.#stopped);
    this.#scanning = null;
    this.#endRunIfIdle();
  }

  /** Lists the queue: the due ids become the pending ones (ids dequeued meanwhile drop out). */
  async #scan(): Promise<void> {
    const { cache, logger, now } = this.#options;
    let queue: string[];
    try {
      queue = await cache.driver.getQueuedImages();
    } catch (error) {
      logger.error({ err: error }, 'prefetcher cannot list the queue');
      return;
    }
    // Ids dequeued behind this server's back (`imgcache clear`, another process) take their errors with them.
    const queued = new Set(queue);
    for (const id of this.#errors.keys()) if (!queued.has(id) && !this.#active.has(id)) this.#errors.delete(id);
    this.#pending = queue.filter(
      (id) => !this.#active.has(id) && (this.#errors.get(id)?.next_attempt ?? 0) * 1000 <= now(),
    );
  }

  /** Starts a slot per pending id while fewer than `concurrency` run. */
  #fillSlots(): void {
    const run = this.#run;
    if (!run) return;
    while (!this.#stopped && this.#slots.size < this.#options.concurrency) {
      const id = this.#pending.shift();
      if (id === undefined) break;
      if (this.#active.has(id)) continue;
      this.#active.add(id); // taken now, so neither another slot nor the next scan takes it
      const slot = this.#slot(id, run.result).finally(() => {
        this.#slots.delete(slot);
        this.#fillSlots();
        this.#endRunIfIdle();
      });
      this.#slots.add(slot);
    }
  }

  /** One prefetch in a slot, unless the id left the queue before its turn came. Never rejects. */
  async #slot(imageId: string, run: PrefetchRun): Promise<void> {
    const taken = this.#generation;
    try {
      await this.#yieldToLiveMisses();
      if (this.#stopped || this.#forgottenSince(imageId, taken) || !(await this.#stillQueued(imageId))) return;
      if (await this.#prefetch(imageId)) run.cached.push(imageId);
      else run.failed.push(imageId);
    } catch (error) {
      // #prefetch records its own failures; this is a fault of the prefetcher itself, kept off the slot chain.
      this.#options.logger.error({ imageId, err: error }, 'prefetch slot failed');
    } finally {
      this.#active.delete(imageId);
      this.#forgottenAt.delete(imageId);
    }
  }

  /** Whether `imageId` is still queued (DELETE, `imgcache clear` or another node may have dequeued it). */
  async #stillQueued(imageId: string): Promise<boolean> {
    try {
      return await this.#options.cache.driver.isQueued(imageId);
    } catch (error) {
      this.#options.logger.warn({ imageId, err: error }, 'prefetcher cannot tell whether the image is still queued');
      return true; // the prefetch reports the fault if it persists
    }
  }

  #endRunIfIdle(): void {
    const run = this.#run;
    if (!run || this.#scanning || this.#slots.size > 0 || (this.#pending.length > 0 && !this.#stopped)) return;
    this.#run = null;
    this.#pending = [];
    if (run.result.cached.length + run.result.failed.length > 0) this.#options.logger.info(run.result, 'prefetch run done');
    run.end(run.result);
  }

  async #prefetch(imageId: string): Promise<boolean> {
    const { cache, origin, logger, caller } = this.#options;
    const started = this.#generation;
    try {
      const image = await origin.getImage(imageId, caller);
      if (image.status !== 'active') throw new ImageStateError(imageId, image.status, 'prefetch it');
      const cached = await cache.prefetch({
        imageId,
        expected: {
          size: image.size ? image.size : null,
          checksum: image.checksum,
          osHashAlgo: image.os_hash_algo,
          osHashValue: image.os_hash_value,
        },
        openOrigin: (signal) => origin.openImage(imageId, caller, signal),
      });
      if (!cached) await cache.driver.deleteQueuedImage(imageId); // cached meanwhile: nothing left to do
      this.#errors.delete(imageId);
      logger.info({ imageId }, 'prefetched image');
      return true;
    } catch (error) {
      await this.#recordFailure(imageId, error, started);
      return false;
    }
  }

  /** Whether `imageId` was forgotten (dequeued) since generation `since`. */
  #forgottenSince(imageId: string, since: number): boolean {
    return this.#allForgottenAt > since || (this.#forgottenAt.get(imageId) ?? 0) > since;
  }

  /**
   * Records the failure of a prefetch that started at generation `started`, unless the image left the queue
   * meanwhile: through this server ({@link forget}) or behind its back (`imgcache clear`, another node).
   */
  async #recordFailure(imageId: string, error: unknown, started: number): Promise<void> {
    const { cache, retryBaseMs, retryMaxMs, now, logger } = this.#options;
    let queued = true;
    try {
      queued = await cache.driver.isQueued(imageId);
    } catch (lookupError) {
      logger.warn({ imageId, err: lookupError }, 'prefetcher cannot tell whether the image is still queued');
    }
    if (!queued || this.#forgottenSince(imageId, started)) {
      logger.info({ imageId, err: error }, 'prefetch failed after the image left the queue; nothing recorded');
      return;
    }
    const attempts = (this.#errors.get(imageId)?.attempts ?? 0) + 1;
    const delay = Math.min(retryMaxMs, retryBaseMs * 2 ** (attempts - 1));
    const at = now();
    this.#errors.set(imageId, {
      error: messageOf(error),
      attempts,
      last_attempt: at / 1000,
      next_attempt: (at + delay) / 1000,
    });
    logger.warn({ imageId, err: error, attempts, retryInMs: delay }, 'prefetch failed; the image stays queued');
  }

  /** Live misses first: a prefetch waits while any request is filling. */
  async #yieldToLiveMisses(): Promise<void> {
    while (!this.#stopped && this.#options.cache.activeFills().live > 0) await sleep(YIELD_POLL_MS);
  }
}

function newRun(): { result: PrefetchRun; done: Promise<PrefetchRun>; end: (run: PrefetchRun) => void } {
  let end!: (run: PrefetchRun) => void;
  const done = new Promise<PrefetchRun>((resolve) => (end = resolve));
  return { result: { cached: [], failed: [] }, done, end };
}
