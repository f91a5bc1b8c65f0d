import { EvictionLog } from './evictions.js';

/** How a request was answered; the server sends it as `X-Cache-Status`. */
export type CacheStatus = 'HIT' | 'MISS' | 'COALESCED' | 'BYPASS';

/** Why a fill did not end in a cached image. */
export type FillFailureReason =
  | 'origin' // the origin failed (open, reset mid-stream)
  | 'verification' // size, MD5 or multihash mismatch
  | 'aborted' // every consumer left
  | 'idle' // no origin progress for image_cache_fill_idle_timeout
  | 'cache_fault' // the cache could not write, rename or record (the download went on)
  | 'over_capacity'; // an image of unknown size outgrew image_cache_max_size (the download went on)

/**
 * Counters of the cache's life since start: plain numbers, read by the server's /metrics and by tests. Updated
 * in one place each, never reset.
 */
export class CacheStats {
  readonly requests: Record<CacheStatus, number> = { HIT: 0, MISS: 0, COALESCED: 0, BYPASS: 0 };
  readonly fillFailures: Record<FillFailureReason, number> = {
    origin: 0,
    verification: 0,
    aborted: 0,
    idle: 0,
    cache_fault: 0,
    over_capacity: 0,
  };
  /** Fills started (origin fetches made for the cache, bypasses excluded). */
  fills = 0;
  /** Fills that ended in a committed image. */
  fillsCommitted = 0;
  /** Fills that read the origin's socket straight into the hash ring, the ring's slots being the file's writes. */
  fillsDirect = 0;
  /** Images evicted to make room at admission or by prune. */
  evictions = 0;
  /** Batches of deletes (eviction, prune, an operator's delete) that failed part-way or entirely. */
  evictionFailures = 0;
  bytesFromCache = 0;
  /** Bytes fills read upstream: from the origin, or from a peer node (counted in both). */
  bytesFromOrigin = 0;
  /** The part of {@link bytesFromOrigin} that came from a peer node instead of the origin. */
  bytesFromPeer = 0;
  /** Misses that went to the origin because the central DB could not say which peers hold the image. */
  peerLookupFailures = 0;
  /** The last evictions with their reason (bounded), for the dashboard. */
  readonly recentEvictions = new EvictionLog();
}
