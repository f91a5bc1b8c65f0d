import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { EXIT } from '../exit.js';
import { toGlanceCacheListing } from '../../cache/glance-format.js';
import { renderCacheTable } from '../format.js';
import type { RemoteListing } from '../remote.js';

interface ListOptions {
  json?: boolean;
}

/**
 * `imgcache list [--json]`: what `glance cache-list` shows (spec §5.6), read straight from the cache directory,
 * or from a server's `GET /v2/cache` with `--url`. The table has one row per cached image (by id) and one per
 * queued image (in queue order). `--json` prints the body of Glance's `GET /v2/cache` on one line, for scripts
 * and `jq`; with `--url` it is the server's body as sent, so imgcache's `prefetch_errors` (and the centralized
 * driver's extra fields) are kept.
 */
export function registerList(program: Command, ctx: CliContext): void {
  program
    .command('list')
    .description('list cached and queued images (like `glance cache-list`)')
    .option('--json', 'print {"cached_images": [...], "queued_images": [...]} as Glance\'s GET /v2/cache does')
    .action(async (options: ListOptions, command: Command) => {
      ctx.exitCode = await ctx.withTarget(command, {}, {
        local: async (cache) => {
          const cached = await cache.getCachedImages();
          const queued = await cache.getQueuedImages();
          if (options.json) ctx.out(JSON.stringify(toGlanceCacheListing(cached, queued)));
          else ctx.out(renderCacheTable(cached, queued));
          return EXIT.ok;
        },
        remote: async (server) => {
          const { listing, body } = await server.list();
          ctx.out(options.json ? JSON.stringify(body) : renderRemoteTable(listing));
          return EXIT.ok;
        },
      });
    });
}

function renderRemoteTable(listing: RemoteListing): string {
  const cached = listing.cached_images.map((image) => ({
    imageId: image.image_id,
    hits: image.hits,
    lastAccessed: image.last_accessed,
    lastModified: image.last_modified,
    size: image.size,
  }));
  const errors = Object.fromEntries(
    Object.entries(listing.prefetch_errors ?? {}).map(([id, failure]) => [id, failure.error]),
  );
  return renderCacheTable(cached, listing.queued_images, errors);
}
