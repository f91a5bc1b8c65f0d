import Table from 'cli-table3';
import type { Command } from 'commander';
import type { Logger } from 'pino';
import type { ClusterEntry, LiveNode } from '../../drivers/cluster-directory.js';
import type { ClusterFill } from '../../drivers/fill-directory.js';
import type { ClientTls } from '../../http-client.js';
import { withClusterStore } from '../cluster-store.js';
import type { CliContext, GlobalOptions } from '../context.js';
import { EXIT } from '../exit.js';
import { formatBytes, formatTimestamp, plural } from '../format.js';

interface JsonOption {
  json?: boolean;
}

/** Column headers of `imgcache cluster list`. */
export const CLUSTER_COLUMNS = [
  'Image',
  'Node',
  'Live',
  'Size',
  'Hits',
  'Last Accessed (UTC)',
  'Node Last Seen (UTC)',
] as const;

/** One node of `cluster list --json`: URL, last heartbeat (epoch seconds), within the liveness window. */
interface NodeJson {
  url: string;
  last_seen: number;
  live: boolean;
}

/** What `cluster prune` got from one node. */
type PruneOutcome =
  | { url: string; ok: true; filesPruned: number; bytesPruned: number }
  | { url: string; ok: false; error: string };

/**
 * `imgcache cluster list|prune`: the whole cluster of nodes sharing one central database (postgres driver),
 * which Glance shows only per image (`GET /v2/cache/nodes/{id}`). `list` reads the database; `prune` asks
 * every live node's v2 Cache API to prune to its own limit. Both open the database as the node `--self-url`
 * names, which refreshes that node's heartbeat (see {@link withClusterStore}).
 */
export function registerCluster(program: Command, ctx: CliContext): void {
  const cluster = program
    .command('cluster')
    .description('the nodes sharing a central database (postgres driver): list their images, prune them');

  cluster
    .command('list')
    .description(
      'list which node caches which image (sizes, hits, when each node was last seen), and the fills in flight: ' +
        'which node reads which image from the origin or from which peer',
    )
    .option(
      '--json',
      'print {"nodes": [{url, last_seen, live}], "images": [{image_id, node, size, hits, ...}], ' +
        '"fills": [{image_id, node, source, bytes, started_at}]}',
    )
    .action(async (options: JsonOption, command: Command) => {
      ctx.exitCode = await withClusterStore(ctx, command, async ({ directory }) => {
        const entries = await directory.clusterListing();
        const nodes = nodesOf(entries, await directory.liveNodes());
        const fills = await directory.fills.list();
        if (options.json) {
          const images = entries.map((e) => ({
            image_id: e.imageId,
            node: e.nodeUrl,
            size: e.size,
            hits: e.hits,
            last_accessed: e.lastAccessed,
          }));
          ctx.out(JSON.stringify({ nodes, images, fills: fills.map(fillJson) }));
        } else {
          ctx.out(renderClusterTable(entries, nodes));
          if (fills.length > 0) ctx.out(renderFillsTable(fills));
        }
        return EXIT.ok;
      });
    });

  cluster
    .command('prune')
    .description("ask every live node to prune its cache to its own image_cache_max_size (POST /v2/cache/prune)")
    .option('--json', 'print {"nodes": [{url, ok, total_files_pruned, total_bytes_pruned} or {url, ok, error}]}')
    .action(async (options: JsonOption, command: Command) => {
      ctx.exitCode = await withClusterStore(ctx, command, async ({ directory, token }) => {
        const globals = command.optsWithGlobals<GlobalOptions>();
        const logger = ctx.logger(globals);
        const tls = ctx.clientTls(globals);
        const live = await directory.liveNodes();
        // All at once: a node that does not answer must not hold up the others for the whole request timeout.
        const outcomes = await Promise.all(live.map((node) => pruneNode(node.url, token, logger, tls)));
        if (options.json) {
          ctx.out(JSON.stringify({ nodes: outcomes.map(pruneJson) }));
        } else {
          if (outcomes.length === 0) ctx.out('no live nodes: nothing to prune');
          for (const outcome of outcomes) {
            if (outcome.ok) {
              const { filesPruned, bytesPruned, url } = outcome;
              ctx.out(`pruned ${plural(filesPruned, 'image')}, ${formatBytes(bytesPruned)} on ${url}`);
            } else {
              ctx.warn(`prune failed on ${outcome.url}: ${outcome.error}`);
            }
          }
        }
        return outcomes.every((outcome) => outcome.ok) ? EXIT.ok : EXIT.failed;
      });
    });
}

/**
 * Every node with a cached image, plus the live ones without any (the listing is a join on images), by URL.
 * A node that is neither live nor holds an image says nothing about the cluster and is left out.
 */
function nodesOf(entries: readonly ClusterEntry[], live: readonly LiveNode[]): NodeJson[] {
  const nodes = new Map<string, NodeJson>();
  for (const e of entries) nodes.set(e.nodeUrl, { url: e.nodeUrl, last_seen: e.lastSeen, live: e.live });
  for (const n of live) if (!nodes.has(n.url)) nodes.set(n.url, { url: n.url, last_seen: n.lastSeen, live: true });
  return [...nodes.values()].sort((a, b) => (a.url < b.url ? -1 : a.url > b.url ? 1 : 0));
}

/** One row per (image, node) copy, then one `-` row per live node caching nothing. No colours, as `list`. */
function renderClusterTable(entries: readonly ClusterEntry[], nodes: readonly NodeJson[]): string {
  const table = new Table({
    head: [...CLUSTER_COLUMNS],
    colAligns: ['left', 'left', 'left', 'right', 'right', 'left', 'left'],
    style: { head: [], border: [] },
  });
  for (const e of entries) {
    const [accessed, seen] = [formatTimestamp(e.lastAccessed), formatTimestamp(e.lastSeen)];
    table.push([e.imageId, e.nodeUrl, e.live ? 'yes' : 'no', e.size, e.hits, accessed, seen]);
  }
  const holding = new Set(entries.map((e) => e.nodeUrl));
  for (const node of nodes) {
    if (!holding.has(node.url)) table.push(['-', node.url, 'yes', 0, 0, 'N/A', formatTimestamp(node.last_seen)]);
  }
  return table.toString();
}

/** Column headers of the fills in flight under `imgcache cluster list`. */
export const FILL_COLUMNS = ['Filling Image', 'Node', 'Reads From', 'Received', 'Started (UTC)'] as const;

/** `origin` for the node that fetches the image itself, else the peer it reads from. */
const sourceName = (fill: ClusterFill): string => fill.sourceUrl ?? 'origin';

function fillJson(fill: ClusterFill) {
  return { image_id: fill.imageId, node: fill.nodeUrl, source: sourceName(fill), bytes: fill.bytes, started_at: fill.startedAt };
}

/** Who reads which image from whom: the cluster-wide single flight and its fan-out tree, live rows only. */
function renderFillsTable(fills: readonly ClusterFill[]): string {
  const table = new Table({
    head: [...FILL_COLUMNS],
    colAligns: ['left', 'left', 'left', 'right', 'left'],
    style: { head: [], border: [] },
  });
  for (const f of fills) table.push([f.imageId, f.nodeUrl, sourceName(f), formatBytes(f.bytes), formatTimestamp(f.startedAt)]);
  return table.toString();
}

/** `POST {url}/v2/cache/prune` with the same client, token handling and messages as `prune --url`. */
async function pruneNode(url: string, token: string | undefined, logger: Logger, tls: ClientTls): Promise<PruneOutcome> {
  try {
    const { parseServerUrl, RemoteCache } = await import('../remote.js'); // undici: not for every `serve` process
    const base = parseServerUrl(url, `node URL ${url}`);
    const server = new RemoteCache({ url: base, logger, tls, ...(token ? { token } : {}) });
    try {
      return { url, ok: true, ...(await server.prune()) };
    } finally {
      await server.close();
    }
  } catch (error) {
    // A CliFailure (unreachable, 401, no cache API) or a URL in node_reference that is not an http(s) base URL:
    // either way this node's failure, not the command line's.
    return { url, ok: false, error: error instanceof Error ? error.message : String(error) };
  }
}

function pruneJson(outcome: PruneOutcome) {
  return outcome.ok
    ? { url: outcome.url, ok: true, total_files_pruned: outcome.filesPruned, total_bytes_pruned: outcome.bytesPruned }
    : { url: outcome.url, ok: false, error: outcome.error };
}
