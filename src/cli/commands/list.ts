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
 * queued image (in queue order); with `--url`, a queued image the server's prefetcher failed on shows its last
 * error (imgcache's `GET /v2/cache/errors`; only a running server knows them). `--json` prints the body of
 * Glance's `GET /v2/cache` on one line, for scripts and `jq`; with `--url` it is the server's body as sent (the
 * centralized driver's extra fields are kept).
 */
export function registerList(program: Command, ctx: CliContext): void {
  program
    .command('list')
    .description('list cached and queued images (like `glance cache-list`)')
    .option('--json', 'print {"cached_images": [...], "queued_images": [...]} as Glance\'s GET /v2/cache does')
    .action(async (options: ListOptions, command: Command) => {
      ctx.exitCode = await ctx.withTarget(command, {}, {
        local: async (cache) => {
          const cached = await cache.driver.getCachedImages();
          const queued = await cache.driver.getQueuedImages();
          if (options.json) ctx.out(JSON.stringify(toGlanceCacheListing(cached, queued)));
          else ctx.out(renderCacheTable(cached, queued));
          return EXIT.ok;
        },
        remote: async (server) => {
          const { listing, body } = await server.list();
          ctx.out(options.json ? JSON.stringify(body) : renderRemoteTable(listing, await server.prefetchErrors()));
          return EXIT.ok;
        },
      });
    });
}

function renderRemoteTable(listing: RemoteListing, errors: Record<string, string>): string {
  const cached = listing.cached_images.map((image) => ({
    imageId: image.image_id,
    hits: image.hits,
    lastAccessed: image.last_accessed,
    lastModified: image.last_modified,
    size: image.size,
  }));
  return renderCacheTable(cached, listing.queued_images, errors);
}
