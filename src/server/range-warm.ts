import type { Logger } from 'pino';
import type { ImageCache } from '../cache/image-cache.js';
import type { Prefetcher } from '../workers/prefetcher.js';

/**
 * Range misses warm the cache (issue 13): qemu's curl driver, and Ironic-style deployers through it, read an
 * image only in byte ranges, and a range never starts a fill, so without this a thousand boots of one image
 * read the origin a thousand times and the cache never fills.
 *
 * A range served from the origin for an image that is neither cached nor filling (and fits: the read-through
 * checks that before calling {@link warm}) puts the image in `queue/`, as `PUT /v2/cache/{id}` does, and wakes
 * the prefetcher. So the background fill is the prefetcher's, under its rules and none of the range's:
 * - bounded: `prefetch_concurrency` fills at once, below live misses; a storm of ranges over many cold images
 *   queues them all (one `queue/` marker each) and they are cached in turn, never all at once;
 * - pinned: it has no consumer, so the range client leaving (or every client) does not abort it;
 * - one per image: the prefetch joins a fill already running (single-flight, `inflight.ts`);
 * - with the prefetcher's credentials (the origin's service token with a `glance:` origin), not the caller's,
 *   which may expire before a large image is read; the range itself was authorized as the caller;
 * - failures stay its own: retried with backoff and shown in `GET /v2/cache/errors`, never in a range response.
 */
export class RangeWarmer {
  readonly #cache: ImageCache;
  readonly #prefetcher: Prefetcher;
  readonly #logger: Logger;
  /** Ids being queued right now: qemu reads ahead in parallel, and one look at `queue/` answers them all. */
  readonly #queueing = new Set<string>();

  constructor(cache: ImageCache, prefetcher: Prefetcher, logger: Logger) {
    this.#cache = cache;
    this.#prefetcher = prefetcher;
    this.#logger = logger;
  }

  /** Queues `imageId` for the prefetcher unless it is queued already. Returns at once; never throws. */
  warm(imageId: string): void {
    if (this.#queueing.has(imageId)) return;
    this.#queueing.add(imageId);
    this.#queue(imageId)
      .catch((error: unknown) => {
        // A cache fault (queue/ unwritable): the range is answered all the same; the next one tries again.
        this.#logger.warn({ imageId, err: error }, 'cannot queue the image after a range miss');
      })
      .finally(() => this.#queueing.delete(imageId));
  }

  async #queue(imageId: string): Promise<void> {
    // Already queued: the prefetcher has it (or is backing off after a failure, which a range storm must not
    // cut short: submit() would clear the backoff). Checked first so every range does not log "already queued".
    if (await this.#cache.driver.isQueued(imageId)) return;
    if (!(await this.#cache.driver.queueImage(imageId))) return; // cached or being cached meanwhile
    this.#logger.info({ imageId }, 'range miss: image queued to warm the cache');
    this.#prefetcher.submit(imageId);
  }
}
