import type { Command } from 'commander';
import type { ImageCache } from '../../cache/image-cache.js';
import { type CliContext, POSTGRES_DRIVERS } from '../context.js';
import { CliUsageError, EXIT, type ExitCode } from '../exit.js';
import type { RemoteCache } from '../remote.js';

interface DeleteOptions {
  cluster?: boolean;
}

/** Why `delete --cluster` refuses a cache that is not on the central database. */
const NEEDS_POSTGRES =
  'delete --cluster needs image_cache_driver = postgres and [database] connection (--driver postgres ' +
  '--database-url URL --self-url URL), or --url of a node whose server runs on it';

/**
 * `imgcache delete [--cluster] <id...>`: removes each image's cached file, its metadata and its queue entry, as
 * Glance's `DELETE /v2/cache/{id}` does (spec §4.4), and with `--url` through that call. Deleting an image that
 * is neither cached nor queued is reported and is not an error (both deletions are idempotent in Glance too; the
 * API says so with a 404 when the image is unknown as well). `--cluster` (imgcache's, Glance leaves other nodes'
 * copies until they are pruned) also records a cluster-wide invalidation in the central database, after which
 * every node drops its copy and queue entry; with `--url` it is `DELETE /v2/cache/{id}?scope=cluster`.
 */
export function registerDelete(program: Command, ctx: CliContext): void {
  program
    .command('delete')
    .description('delete cached images and their queue entries (--cluster: on every node)')
    .argument('<id...>', 'image ids')
    .option('--cluster', 'drop the images on every node of the cluster too (postgres driver, or --url)')
    .action(async (ids: string[], options: DeleteOptions, command: Command) => {
      const cluster = options.cluster ?? false;
      const check = (config: { image_cache_driver: string }) => {
        const driver = config.image_cache_driver.toLowerCase();
        if (!POSTGRES_DRIVERS.includes(driver)) throw new CliUsageError(NEEDS_POSTGRES);
      };
      ctx.exitCode = await ctx.withTarget(command, { ids, ...(cluster ? { check } : {}) }, {
        local: (cache) => deleteLocal(ctx, cache, ids, cluster),
        remote: (server) => deleteRemote(ctx, server, ids, cluster),
      });
    });
}

async function deleteLocal(ctx: CliContext, cache: ImageCache, ids: readonly string[], cluster: boolean) {
  const directory = cluster ? cache.driver.cluster : null;
  // `check` refused every other driver before the cache was opened; this only guards against a new factory.
  if (cluster && !directory) throw new CliUsageError(NEEDS_POSTGRES);
  for (const id of ids) {
    const wasCached = await cache.driver.isCached(id);
    const wasQueued = await cache.driver.isQueued(id);
    await cache.deleteCachedImage(id);
    await cache.driver.deleteQueuedImage(id);
    const what = [wasCached ? 'cached image' : null, wasQueued ? 'queue entry' : null].filter(Boolean);
    if (what.length === 0) ctx.out(`nothing to delete for ${id}: it is neither cached nor queued`);
    else ctx.out(`deleted ${id} (${what.join(' and ')})`);
    if (directory) {
      // Recorded even when this node had nothing: other nodes may hold a copy. Their listeners (and the catch-up
      // scan of a node that is down) drop it.
      await directory.recordInvalidation(id);
      ctx.out(`invalidated ${id} cluster-wide: every node drops its copy and queue entry`);
    }
  }
  return EXIT.ok;
}

async function deleteRemote(
  ctx: CliContext,
  server: RemoteCache,
  ids: readonly string[],
  cluster: boolean,
): Promise<ExitCode> {
  let failed = 0;
  for (const id of ids) {
    const outcome = await server.delete(id, { scope: cluster ? 'cluster' : 'node' });
    if (outcome.ok) {
      // 204 either way: the API does not say whether there was a file or a queue entry.
      ctx.out(
        cluster
          ? `deleted ${id} on ${server.host} and invalidated it cluster-wide (every node drops its copy)`
          : `deleted ${id} on ${server.host} (its cached file and queue entry, if any)`,
      );
    } else if (outcome.status === 404) {
      // The server knows no such image and has neither a file nor a queue entry for it (scenario 76).
      const more = cluster ? '; no invalidation was recorded' : '';
      ctx.out(`nothing to delete for ${id}: it is neither cached nor queued on ${server.host}${more}`);
    } else {
      failed += 1;
      ctx.warn(`not deleted ${id}: ${outcome.reason} (HTTP ${outcome.status})`);
    }
  }
  return failed > 0 ? EXIT.failed : EXIT.ok;
}
