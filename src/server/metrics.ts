import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ImageCache } from '../cache/image-cache.js';

/** How old the entry count may be: counting entries lists the metadata, too costly for every scrape. */
const ENTRY_COUNT_TTL_MS = 10_000;

/** What else the metrics read at scrape time, besides the cache. */
export interface MetricSources {
  /** The prefetcher, for the number of queued images with a failure. @default none (the gauge reads 0) */
  prefetcher?: { readonly errorCount: number };
  /** What this node sends to its cluster peers. @default none (the gauges read 0) */
  peers?: { readonly active: number; readonly peak: number; readonly copies: number };
}

/**
 * Prometheus metrics (prom-client), in a registry of their own. Cache figures are read from `cache.stats` and
 * admission at scrape time, so the data path only bumps plain numbers.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly requestDuration: Histogram<'method' | 'route' | 'status'>;
  /** Image requests answered from the cache while the origin was unreachable (`stale_if_error`). */
  readonly staleServed: Counter;

  constructor(cache: ImageCache, sources: MetricSources = {}) {
    const registry = this.registry;
    const stats = cache.stats;
    /** A counter whose value lives elsewhere: set from the source on every scrape. */
    const mirror = <L extends string>(
      name: string,
      help: string,
      labelNames: readonly L[],
      read: () => Array<[Partial<Record<L, string>>, number]>,
    ) =>
      new Counter({
        name,
        help,
        labelNames,
        registers: [registry],
        collect() {
          this.reset();
          for (const [labels, value] of read()) this.inc(labels, value);
        },
      });

    mirror('imgcache_requests_total', 'Image requests by how the cache answered them', ['status'], () =>
      Object.entries(stats.requests).map(([status, n]) => [{ status }, n]),
    );
    mirror('imgcache_bytes_served_total', 'Image bytes sent, by where they came from', ['source'], () => [
      [{ source: 'cache' }, stats.bytesFromCache],
      [{ source: 'origin' }, stats.bytesFromOrigin],
    ]);
    mirror('imgcache_fill_bytes_total', 'Bytes fills read upstream, by source', ['source'], () => [
      [{ source: 'origin' }, stats.bytesFromOrigin - stats.bytesFromPeer],
      [{ source: 'peer' }, stats.bytesFromPeer],
    ]);
    mirror('imgcache_fill_failures_total', 'Fills that did not end in a cached image', ['reason'], () =>
      Object.entries(stats.fillFailures).map(([reason, n]) => [{ reason }, n]),
    );
    mirror('imgcache_fills_total', 'Fills started and committed', ['outcome'], () => [
      [{ outcome: 'started' }, stats.fills],
      [{ outcome: 'committed' }, stats.fillsCommitted],
    ]);
    mirror(
      'imgcache_fills_direct_total',
      'Fills that read the origin straight into the hash ring (no copy per socket read); the rest took the stream path',
      [],
      () => [[{}, stats.fillsDirect]],
    );
    mirror('imgcache_evictions_total', 'Images evicted by admission or prune', [], () => [[{}, stats.evictions]]);
    mirror(
      'imgcache_peer_lookup_failures_total',
      'Misses sent to the origin because the central DB could not list the peers holding the image',
      [],
      () => [[{}, stats.peerLookupFailures]],
    );
    mirror('imgcache_eviction_failures_total', 'Delete batches (eviction, prune, delete) that failed', [], () => [
      [{}, stats.evictionFailures],
    ]);

    let entries = { value: 0, at: 0 };
    new Gauge({
      name: 'imgcache_cache_bytes',
      help: 'Bytes of cached images, and bytes reserved by fills in flight',
      labelNames: ['kind'],
      registers: [registry],
      async collect() {
        const usage = await cache.usage();
        this.set({ kind: 'used' }, usage.used);
        this.set({ kind: 'reserved' }, usage.reserved);
        this.set({ kind: 'max' }, usage.max);
      },
    });
    new Gauge({
      name: 'imgcache_cache_entries',
      help: 'Cached images',
      registers: [registry],
      async collect() {
        if (Date.now() - entries.at > ENTRY_COUNT_TTL_MS) {
          // A metadata store that is down (a central DB outage) keeps the last count: the other metrics, the
          // outage's counters among them, must still be scraped.
          const images = await cache.driver.getCachedImages().catch(() => null);
          if (images) entries = { value: images.length, at: Date.now() };
        }
        this.set(entries.value);
      },
    });
    new Gauge({
      name: 'imgcache_queue_depth',
      help: 'Images queued for prefetch',
      registers: [registry],
      async collect() {
        this.set((await cache.driver.getQueuedImages()).length);
      },
    });
    const { prefetcher } = sources;
    new Gauge({
      name: 'imgcache_prefetch_errors',
      help: 'Queued images whose last prefetch failed (details: GET /v2/cache/errors)',
      registers: [registry],
      collect() {
        this.set(prefetcher?.errorCount ?? 0);
      },
    });
    const { peers } = sources;
    new Gauge({
      name: 'imgcache_peer_streams',
      help: 'Image streams this node sends to cluster peers now',
      registers: [registry],
      collect() {
        this.set(peers?.active ?? 0);
      },
    });
    new Gauge({
      name: 'imgcache_peer_streams_peak',
      help: 'The most streams of one image this node sent to peers at once (at most peer_max_readers)',
      registers: [registry],
      collect() {
        this.set(peers?.peak ?? 0);
      },
    });
    mirror('imgcache_peer_copies_total', 'Image streams this node started sending to cluster peers', [], () => [
      [{}, peers?.copies ?? 0],
    ]);
    this.staleServed = new Counter({
      name: 'imgcache_stale_served_total',
      help: 'Image requests served from the cache while the glance origin was unreachable (stale_if_error)',
      registers: [registry],
    });
    this.requestDuration = new Histogram({
      name: 'imgcache_http_request_duration_seconds',
      help: 'HTTP request latency, to the last byte',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600],
      registers: [registry],
    });
  }
}

export function registerMetrics(app: FastifyInstance, metrics: Metrics): void {
  app.addHook('onResponse', async (request, reply) => {
    metrics.requestDuration.observe(
      { method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });
  app.get('/metrics', async (_request, reply) =>
    reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()),
  );
}
