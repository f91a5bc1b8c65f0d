/**
 * The rows of bench/cluster.ts Part 1, against real `imgcache serve` child processes (test/helpers/serve-
 * cluster.ts) in front of one rate-limited counting origin (test/helpers/storm-origin.ts). Each row uses images
 * of its own, cold everywhere, so the origin's per-image counters are the row's: nothing is reset between rows.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { seededRandom } from '../../test/helpers/random.js';
import { metricMax, type ServeNode } from '../../test/helpers/serve-cluster.js';
import type { BenchDownload, DownloadPool } from './download-pool.js';
import type { StormImage, StormOrigin } from '../../test/helpers/storm-origin.js';

export interface StormRow {
  /** Every download of the row, checked (length and SHA-256). */
  downloads: BenchDownload[];
  images: StormImage[];
  /** Origin body bytes for the row's images. */
  originBytes: number;
  originRequests: number;
  /** originBytes / sum of the images' sizes: 1 when each crossed the origin link once. */
  ratio: number;
  /** The last client's last byte, from the common start. */
  slowestMs: number;
  /** x-cache-status counts, e.g. "COALESCED 6, MISS 3". */
  statuses: string;
}

function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

function rowOf(origin: StormOrigin, images: StormImage[], downloads: BenchDownload[]): StormRow {
  const ids = images.map((image) => image.id);
  const counts = new Map<string, number>();
  for (const d of downloads) counts.set(d.status, (counts.get(d.status) ?? 0) + 1);
  return {
    downloads,
    images,
    originBytes: ids.reduce((n, id) => n + (origin.bytesById.get(id) ?? 0), 0),
    originRequests: ids.reduce((n, id) => n + (origin.requestsById.get(id) ?? 0), 0),
    ratio: origin.ratio(ids),
    slowestMs: Math.max(...downloads.map((d) => d.ms)),
    statuses: [...counts].sort().map(([status, n]) => `${status} ${n}`).join(', '),
  };
}

/** a) One client, one node, one fresh image: the reference time of a cold download. */
export async function loneRow(
  pool: DownloadPool,
  nodes: readonly ServeNode[],
  origin: StormOrigin,
  size: number,
  seed: number,

) {
  const image = origin.addImage(randomUUID(), size, seed);
  const startedAt = performance.now();
  const download = await pool.download(nodes[0] as ServeNode, image, startedAt);
  return rowOf(origin, [image], [download]);
}

/** b) One fresh image, `perNode` clients on every node, all started together. */
export async function stormRow(
  pool: DownloadPool,
  nodes: readonly ServeNode[],
  origin: StormOrigin,
  size: number,
  perNode: number,
  seed: number,

) {
  const image = origin.addImage(randomUUID(), size, seed);
  const startedAt = performance.now();
  const downloads = await Promise.all(
    nodes.flatMap((node) => Array.from({ length: perNode }, () => pool.download(node, image, startedAt))),
  );
  return rowOf(origin, [image], downloads);
}

/**
 * c) `count` fresh images; `clients` clients (client i on node i mod nodes) each fetch all of them one after the
 * other, in its own order drawn from `seed`.
 */
export async function imagesRow(
  pool: DownloadPool,
  nodes: readonly ServeNode[],
  origin: StormOrigin,
  count: number,
  size: number,
  clients: number,
  seed: number,

) {
  const images = Array.from({ length: count }, (_, i) => origin.addImage(randomUUID(), size, seed + i));
  const random = seededRandom(seed);
  const plans = Array.from({ length: clients }, () => shuffled(images, random));
  const startedAt = performance.now();
  const perClient = await Promise.all(
    plans.map(async (plan, client) => {
      const node = nodes[client % nodes.length] as ServeNode;
      const got: BenchDownload[] = [];
      for (const image of plan) got.push(await pool.download(node, image, startedAt));
      return got;
    }),
  );
  return rowOf(origin, images, perClient.flat());
}

/**
 * d) The most copies one node served to peers at once: the max over nodes of `imgcache_peer_streams_peak`;
 * undefined when no node exports it.
 */
export async function peakStreams(nodes: readonly ServeNode[]): Promise<number | undefined> {
  const peaks = (await Promise.all(nodes.map((node) => metricMax(node, 'imgcache_peer_streams_peak')))).filter(
    (peak): peak is number => peak !== undefined,
  );
  return peaks.length === 0 ? undefined : Math.max(...peaks);
}
