import type { Fill } from '../cache/fill.js';
import type { ImageCache } from '../cache/image-cache.js';
import type { CacheStatus } from '../cache/stats.js';
import type { Eviction } from '../cache/evictions.js';
import type { Cluster } from '../cluster/cluster.js';
import type { PrefetchError } from '../workers/prefetcher.js';

/** Seconds between two samples of the counters (the chart's resolution). */
export const SAMPLE_INTERVAL_MS = 5_000;
/** Samples kept: ten minutes at {@link SAMPLE_INTERVAL_MS}. */
export const SAMPLES_KEPT = 120;
/** How long the cluster's node listing is reused: it reads every row of the cluster, too much for every poll. */
export const NODES_TTL_MS = 5_000;
/** Cached images listed, most recently accessed first; the total is reported beside them. */
export const CACHED_LISTED = 100;

/** Counters at one moment, cumulative since start; the page charts the differences between samples. */
export interface Sample {
  /** Epoch milliseconds. */
  t: number;
  hits: number;
  /** Requests that were not hits: misses, coalesced misses, bypasses. */
  misses: number;
  /** Bytes sent to clients from the cache. */
  cache: number;
  /** Bytes fills read from the origin. */
  origin: number;
  /** Bytes fills read from peer nodes. */
  peer: number;
}

/** One fill in flight, as the page shows it. */
export interface FillState {
  imageId: string;
  received: number;
  /** Declared size, null when the origin did not say. */
  size: number | null;
  /** Bytes per second over the last observation window (0 until there are two observations). */
  rate: number;
  consumers: number;
  prefetch: boolean;
  status: 'MISS' | 'BYPASS';
  source: 'origin' | 'peer';
}

/** A node of the cluster (postgres driver) and what it holds. */
export interface NodeState {
  url: string;
  /** Epoch seconds of its last heartbeat. */
  lastSeen: number;
  images: number;
  bytes: number;
}

/** `GET /dashboard/state.json`. */
export interface DashboardState {
  /** Epoch milliseconds. */
  time: number;
  driver: string;
  origin: string;
  usage: { used: number; reserved: number; max: number };
  requests: Record<CacheStatus, number>;
  fills: FillState[];
  cached: {
    total: number;
    totalBytes: number;
    images: Array<{ imageId: string; size: number; hits: number; lastAccessed: number }>;
  };
  queued: string[];
  prefetchErrors: Record<string, PrefetchError>;
  /** Newest first. */
  evictions: Eviction[];
  /** Oldest first; the last one is now. */
  history: Sample[];
  /** Live nodes of the cluster, null for a standalone node. */
  nodes: NodeState[] | null;
  /** Image names the origin told us, by id (images the caller may not see, or without a name, are absent). */
  names: Record<string, string>;
}

/** What the state is read from. */
export interface DashboardSources {
  cache: ImageCache;
  prefetcher: { errors(): Record<string, PrefetchError> };
  cluster: Cluster | null;
  origin: { description: string };
}

/**
 * Everything the dashboard shows, read from the running node at request time; the only state of its own is the
 * ring of counter samples (the "last minutes" chart) and the last observation of each fill (its rate).
 */
export class DashboardStateSource {
  readonly #sources: DashboardSources;
  readonly #samples: Sample[] = [];
  readonly #observed = new WeakMap<Fill, { at: number; received: number; rate: number }>();
  #timer: NodeJS.Timeout | null = null;
  #nodes: { at: number; read: Promise<NodeState[]> } | null = null;

  constructor(sources: DashboardSources) {
    this.#sources = sources;
  }

  /** Starts sampling the counters; the timer never keeps the process alive. */
  start(): void {
    if (this.#timer) return;
    this.#samples.push(this.#sample());
    this.#timer = setInterval(() => {
      this.#samples.push(this.#sample());
      if (this.#samples.length > SAMPLES_KEPT) this.#samples.shift();
    }, SAMPLE_INTERVAL_MS);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  async read(): Promise<DashboardState> {
    const { cache, prefetcher, cluster, origin } = this.#sources;
    const [usage, cached, queued, nodes] = await Promise.all([
      cache.usage(),
      cache.driver.getCachedImages(),
      cache.driver.getQueuedImages(),
      cluster ? this.#readNodes(cluster) : Promise.resolve(null),
    ]);
    const recent = [...cached].sort((a, b) => b.lastAccessed - a.lastAccessed).slice(0, CACHED_LISTED);
    return {
      time: Date.now(),
      driver: cache.driver.name,
      origin: origin.description,
      usage,
      requests: { ...cache.stats.requests },
      fills: cache.runningFills().map((fill) => this.#fillState(fill)),
      cached: {
        total: cached.length,
        totalBytes: cached.reduce((sum, image) => sum + image.size, 0),
        images: recent.map(({ imageId, size, hits, lastAccessed }) => ({ imageId, size, hits, lastAccessed })),
      },
      queued,
      prefetchErrors: prefetcher.errors(),
      evictions: cache.stats.recentEvictions.recent().reverse(),
      history: [...this.#samples, this.#sample()],
      nodes,
      names: {},
    };
  }

  /** {@link readNodes}, shared by the polls of {@link NODES_TTL_MS}; a failed read is not kept. */
  #readNodes(cluster: Cluster): Promise<NodeState[]> {
    const now = Date.now();
    if (!this.#nodes || now - this.#nodes.at > NODES_TTL_MS) {
      const read = readNodes(cluster);
      this.#nodes = { at: now, read };
      read.catch(() => {
        if (this.#nodes?.read === read) this.#nodes = null;
      });
    }
    return this.#nodes.read;
  }

  #sample(): Sample {
    const stats = this.#sources.cache.stats;
    const { HIT, MISS, COALESCED, BYPASS } = stats.requests;
    return {
      t: Date.now(),
      hits: HIT,
      misses: MISS + COALESCED + BYPASS,
      cache: stats.bytesFromCache,
      origin: stats.bytesFromOrigin - stats.bytesFromPeer,
      peer: stats.bytesFromPeer,
    };
  }

  /** The rate is measured between observations at least a second apart, so frequent polls do not make it jump. */
  #fillState(fill: Fill): FillState {
    const now = Date.now();
    const last = this.#observed.get(fill);
    let rate = last?.rate ?? 0;
    if (!last) this.#observed.set(fill, { at: now, received: fill.received, rate: 0 });
    else if (now - last.at >= 1000) {
      rate = ((fill.received - last.received) * 1000) / (now - last.at);
      this.#observed.set(fill, { at: now, received: fill.received, rate });
    }
    return {
      imageId: fill.imageId,
      received: fill.received,
      size: fill.size,
      rate: Math.round(rate),
      consumers: fill.consumerCount,
      prefetch: fill.isPrefetch,
      status: fill.status,
      source: this.#sources.cluster?.fillsFromPeer(fill.imageId) ? 'peer' : 'origin',
    };
  }
}

/** Live nodes with the count and bytes of the images each holds (one query each, not one per node). */
async function readNodes(cluster: Cluster): Promise<NodeState[]> {
  const [live, entries] = await Promise.all([cluster.directory.liveNodes(), cluster.directory.clusterListing()]);
  const nodes = new Map<string, NodeState>(live.map((node) => [node.url, { ...node, images: 0, bytes: 0 }]));
  for (const entry of entries) {
    const node = nodes.get(entry.nodeUrl);
    if (!node) continue;
    node.images += 1;
    node.bytes += entry.size;
  }
  return [...nodes.values()];
}
