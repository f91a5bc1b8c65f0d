import type { Readable, Writable } from 'node:stream';
import type { Logger } from 'pino';
import type { Driver, ImageReader } from '../drivers/driver.js';
import { FillAbortedError, ImageNotCachedError, NotCachedError } from '../errors.js';
import type { Admission } from './admission.js';
import { checkHashAlgorithm, type DigestPolicy, type ExpectedImage } from './digest.js';
import { Fill, type OriginOpener } from './fill.js';
import { FillReader } from './fill-reader.js';
import type { HashPool } from './hash-pool.js';
import { CacheHit, hitTally } from './hit.js';
import type { InFlight } from './inflight.js';
import { type Range, type RangeOpener, rangeFromCache, rangeFromFill, rangeFromOrigin } from './range-read.js';
import type { CacheStats, CacheStatus } from './stats.js';

/** What `fetch` needs to know of an image. */
export interface FetchRequest {
  imageId: string;
  /** The origin's promises about the image; each one given is verified while the bytes stream. */
  expected?: ExpectedImage;
  /** Opens the image at the origin; called at most once per fill, never on a hit. */
  openOrigin: OriginOpener;
  /** Opens just a byte range at the origin (for {@link ReadThrough.fetchRange}); without it the whole image is read. */
  openOriginRange?: RangeOpener;
  /**
   * Called by {@link ReadThrough.fetchRange} once a range is being served from the origin while the image is
   * neither cached nor filling and its expected size fits in `image_cache_max_size`: the caller may warm the
   * cache (the server queues the image for the prefetcher). It must not throw; if it does, the range is served
   * all the same. @default undefined (ranges never warm anything)
   */
  onColdRange?: () => void;
}

export interface FetchResult {
  status: CacheStatus;
  /** Bytes the stream delivers, when known (for `Content-Length`). */
  size: number | null;
  /**
   * The image. Consume it or destroy it: it holds a file descriptor until then. For a hit, reading this property
   * opens the stream: use either `stream` or `body`, once.
   */
  stream: Readable;
  /**
   * The same bytes for a writer that can take them directly: `body.writeTo(response)` sends a hit or a fill's
   * file by sendfile(2) (or pooled writes), with no stream in between. Absent for bodies that are only a stream.
   */
  body?: DirectBody;
}

/** A body that writes itself to a response ({@link CacheHit}, {@link FillReader}); true when all of it went. */
export interface DirectBody {
  writeTo(out: Writable): Promise<boolean>;
}

/** A hit's result: its stream is only made when asked for, so `body.writeTo` can send it instead. */
export function hitResult(status: CacheStatus, hit: CacheHit): FetchResult {
  return {
    status,
    size: hit.size,
    body: hit,
    get stream() {
      return hit.stream();
    },
  };
}

/** What the read-through shares with the cache front that owns it. */
export interface ReadThroughOptions {
  driver: Driver;
  admission: Admission;
  inflight: InFlight;
  stats: CacheStats;
  logger: Logger;
  /** Abort a fill whose origin sends nothing for this long. */
  idleTimeoutMs: number;
  hashPool: HashPool | null;
  /** Which declared digests a fill verifies (`image_cache_verify_digests`). */
  digestPolicy: DigestPolicy;
  /** Resolves once admission knows the cache's size (read once, lazily, by the front). */
  sized: () => Promise<void>;
}

/**
 * The read-through half of `ImageCache`: for each request, the decision between a hit, joining the fill
 * in flight, a new fill and a bypass, under the id's lock (single-flight, `inflight.ts`), and the prefetch and
 * invalidation that share those locks. The front delegates `fetch`, `fetchRange`, `prefetch` and `invalidate`.
 */
export class ReadThrough {
  readonly #driver: Driver;
  readonly #admission: Admission;
  readonly #inflight: InFlight;
  readonly #stats: CacheStats;
  readonly #logger: Logger;
  readonly #idleTimeoutMs: number;
  readonly #hashPool: HashPool | null;
  readonly #digestPolicy: DigestPolicy;
  readonly #sized: () => Promise<void>;

  constructor(options: ReadThroughOptions) {
    this.#driver = options.driver;
    this.#admission = options.admission;
    this.#inflight = options.inflight;
    this.#stats = options.stats;
    this.#logger = options.logger;
    this.#idleTimeoutMs = options.idleTimeoutMs;
    this.#hashPool = options.hashPool;
    this.#digestPolicy = options.digestPolicy;
    this.#sized = options.sized;
  }

  /**
   * The image, from the cache or from the origin through one shared fill (spec §3.3, done right):
   * - `HIT`: streams the cached file; the hit is recorded when the stream has been read to the end.
   * - `MISS`: fetches the origin once, tees it to the caller and to `incomplete/<id>`, verifies size, MD5 and
   *   multihash in the same pass and commits. The last chunk is held back until verification passed.
   * - `COALESCED`: another request is filling the image; this one reads the growing file from byte 0.
   * - `BYPASS`: the image cannot fit in `image_cache_max_size`; it is streamed from the origin, uncached.
   * Rejects with the origin's error when the origin cannot be opened.
   */
  async fetch(request: FetchRequest, attempt = 0): Promise<FetchResult> {
    this.#driver.getImageFilepath(request.imageId); // validates the id before anything else happens
    if (request.expected?.osHashAlgo) checkHashAlgorithm(request.expected.osHashAlgo);
    await this.#sized();
    const decision = await this.#inflight.exclusive(request.imageId, async () => {
      const running = await this.#running(request.imageId);
      if (running?.joinable) return { fill: running, leader: false };
      const hit = await this.#tryHit(request);
      if (hit) return hit;
      return { fill: this.#startFill(request, false), leader: true };
    });
    if (!('fill' in decision)) return decision;
    const { fill, leader } = decision;
    const reader = new FillReader(fill, leader ? null : () => this.#joinOrStart(request));
    try {
      await fill.ready;
    } catch (error) {
      reader.destroy();
      if (leader || attempt > 0) throw error;
      return this.fetch(request, attempt + 1); // a follower retries the origin once
    }
    reader.activate();
    if (!leader) this.#stats.requests.COALESCED += 1;
    return { status: leader ? fill.status : 'COALESCED', size: fill.size, stream: reader, body: reader };
  }

  /**
   * The image for another node of the cluster, never starting a fill: the committed file (`HIT`, no hit recorded:
   * a peer's copy is not a client's read), or the running fill read from byte 0 as any follower reads it
   * (`COALESCED`; cluster-wide single flight: a node joins the fill of the node that claimed it). Null when this
   * node neither holds nor fills the image. Rejects with the fill's error when it fails before its first byte.
   */
  async forPeer(imageId: string): Promise<FetchResult | null> {
    this.#driver.getImageFilepath(imageId);
    await this.#sized();
    const found = await this.#inflight.exclusive(imageId, async (): Promise<Fill | CacheHit | null> => {
      const running = await this.#running(imageId);
      if (running?.joinable) return running;
      try {
        return new CacheHit(await this.#driver.openForRead(imageId), hitTally(this.#admission, this.#stats), this.#logger, {
          recordHit: false,
        });
      } catch (error) {
        if (error instanceof ImageNotCachedError) return null;
        throw error;
      }
    });
    if (found === null || found instanceof CacheHit) return found && hitResult('HIT', found);
    const reader = new FillReader(found, null);
    try {
      await found.ready;
    } catch (error) {
      reader.destroy();
      throw error;
    }
    reader.activate();
    return { status: 'COALESCED', size: found.size, stream: reader, body: reader };
  }

  /**
   * A byte range of the image, never starting a fill itself (RFC 9110 ranges; Glance bypasses the cache for
   * them, bug 1664709): from the cached file (`HIT`), from a running fill's file once those bytes are on disk
   * (`COALESCED`), else from the origin (`BYPASS`) without disturbing a running fill. A `BYPASS` of an image that
   * could be cached calls `request.onColdRange`: warming is the caller's (a background fill, never this range's).
   */
  async fetchRange(request: FetchRequest, range: Range): Promise<FetchResult> {
    const { imageId } = request;
    this.#driver.getImageFilepath(imageId);
    const size = range.end - range.start + 1;
    const expectedSize = request.expected?.size ?? null;
    const cached = await rangeFromCache(this.#driver, imageId, range, expectedSize);
    if (cached) {
      this.#stats.requests.HIT += 1;
      return hitResult('HIT', new CacheHit(cached, hitTally(this.#admission, this.#stats), this.#logger, { recordHit: false, range }));
    }
    const filling = await rangeFromFill(this.#driver, this.#inflight.get(imageId), range);
    if (filling) {
      this.#stats.requests.COALESCED += 1;
      this.#stats.bytesFromCache += size;
      return { status: 'COALESCED', size, stream: filling };
    }
    const controller = new AbortController();
    const stream = await rangeFromOrigin(range, controller.signal, request.openOriginRange, request.openOrigin);
    stream.once('close', () => controller.abort());
    this.#stats.requests.BYPASS += 1;
    this.#stats.bytesFromOrigin += size;
    this.#coldRange(request);
    return { status: 'BYPASS', size, stream };
  }

  /**
   * Tells the caller a range of an image nobody is filling went to the origin, so it can warm the cache. Not for
   * an image already filling (that fill caches it, or ends), nor for one admission would never take (a fill of
   * it could only bypass), nor for one of unknown size (which admission cannot judge before the bytes flow).
   */
  #coldRange(request: FetchRequest): void {
    const expectedSize = request.expected?.size ?? null;
    if (!request.onColdRange || expectedSize === null || expectedSize > this.#admission.maxSize) return;
    if (this.#inflight.get(request.imageId)) return;
    try {
      request.onColdRange();
    } catch (error) {
      // Warming is a bonus: the range is answered whatever happens to it.
      this.#logger.warn({ imageId: request.imageId, err: error }, 'cannot warm the cache after a range miss');
    }
  }

  /**
   * Caches an image without a consumer (Glance's prefetch / `PUT /v2/cache/{id}`): runs to completion even if
   * nobody reads it. Joins a fill already running. Resolves true when this call cached it, false when it was
   * cached already; rejects with the origin's or verification's error, or {@link NotCachedError}.
   */
  async prefetch(request: FetchRequest): Promise<boolean> {
    this.#driver.getImageFilepath(request.imageId);
    await this.#sized();
    let fill: Fill | null = null;
    // A running fill that cannot be cached (bypass, or it stopped spooling) is not pinned: pinning would keep
    // fetching bytes nobody wants. The prefetch waits for it, then decides again (bounded: a live request may
    // start another such fill meanwhile).
    for (let round = 0; fill === null; round += 1) {
      const decision = await this.#inflight.exclusive(request.imageId, async (): Promise<{ fill: Fill } | { wait: Fill } | null> => {
        const running = await this.#running(request.imageId);
        if (running?.cacheable) {
          running.pin();
          return { fill: running };
        }
        if (running) return { wait: running };
        if (await this.#driver.isCached(request.imageId)) return null;
        return { fill: this.#startFill(request, true) };
      });
      if (!decision) return false;
      if ('fill' in decision) fill = decision.fill;
      else if (round < 2) await decision.wait.whenSettled();
      else throw new NotCachedError(request.imageId, 'other requests keep fetching it uncached');
    }
    await fill.whenSettled();
    if (fill.error) throw fill.error;
    if (!fill.committed) {
      throw new NotCachedError(
        request.imageId,
        fill.status === 'BYPASS' ? 'it does not fit in image_cache_max_size' : 'the cache could not store it (see the log)',
      );
    }
    return true;
  }

  /**
   * Drops an image that changed upstream (a cluster-wide invalidation): a running fill of it is aborted (its
   * consumers get an error, its file goes to `invalid/`, it never commits the stale bytes), then the cached
   * copy is deleted. Runs under the id's lock, so no fill of the old bytes can start in between; one that was
   * already committing when aborted is deleted after it settled.
   */
  async invalidate(imageId: string): Promise<void> {
    this.#driver.getImageFilepath(imageId);
    await this.#inflight.exclusive(imageId, async () => {
      const fill = this.#inflight.get(imageId);
      if (fill) {
        fill.abort(new FillAbortedError(imageId, 'the image was invalidated'));
        await fill.whenSettled();
      }
      await this.#deleteCached(imageId);
    });
  }

  #startFill(request: FetchRequest, prefetch: boolean): Fill {
    const fill = new Fill({
      imageId: request.imageId,
      expected: request.expected ?? {},
      openOrigin: request.openOrigin,
      prefetch,
      driver: this.#driver,
      admission: this.#admission,
      stats: this.#stats,
      logger: this.#logger,
      idleTimeoutMs: this.#idleTimeoutMs,
      hashPool: this.#hashPool,
      digestPolicy: this.#digestPolicy,
    });
    this.#inflight.add(fill);
    fill.start().catch((error: unknown) => {
      // start() settles every failure itself; this is the last line of defence, never a crash.
      this.#logger.error({ imageId: request.imageId, err: error }, 'fill failed unexpectedly');
      fill.abort(error instanceof Error ? error : new Error(String(error)));
    });
    return fill;
  }

  /** For a follower whose fill failed before it got a byte: the fill running now, or a new one. */
  #joinOrStart(request: FetchRequest): Promise<Fill> {
    return this.#inflight.exclusive(request.imageId, async () => {
      const running = await this.#running(request.imageId);
      return running?.joinable ? running : this.#startFill(request, false);
    });
  }

  /**
   * The fill of an image still receiving bytes. One that settled (a failed one finishing its cleanup: its file, its
   * lock) or that is only committing is waited for, and then there is none.
   */
  async #running(imageId: string): Promise<Fill | undefined> {
    const fill = this.#inflight.get(imageId);
    if (!fill) return undefined;
    // A verified fill is only committing: wait for it, so the caller finds the committed file (and counts a hit).
    if (!fill.settled && !fill.verified) return fill;
    await fill.whenSettled();
    return undefined;
  }

  async #tryHit(request: FetchRequest): Promise<FetchResult | null> {
    const { imageId, expected } = request;
    let reader: ImageReader;
    try {
      reader = await this.#driver.openForRead(imageId);
    } catch (error) {
      if (error instanceof ImageNotCachedError) return null;
      throw error;
    }
    if (expected?.size !== undefined && expected.size !== null && expected.size !== reader.size) {
      // The origin says the image has another size: the copy is stale or torn. Never serve it.
      this.#logger.warn({ imageId, cached: reader.size, expected: expected.size }, 'cached copy has the wrong size');
      await reader.close();
      try {
        await this.#deleteCached(imageId);
      } catch (error) {
        // A cache fault: the origin still serves the image (the fill will not be able to replace the copy).
        this.#stats.fillFailures.cache_fault += 1;
        this.#logger.error({ imageId, err: error }, 'cannot delete the stale cached copy; serving from the origin');
      }
      return null;
    }
    this.#stats.requests.HIT += 1;
    return hitResult('HIT', new CacheHit(reader, hitTally(this.#admission, this.#stats), this.#logger));
  }

  /** Deletes the cached copy of an already validated id, through admission (it subtracts the size once). */
  async #deleteCached(imageId: string): Promise<void> {
    await this.#admission.deleteImages([imageId]);
  }
}
