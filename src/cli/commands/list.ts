import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { EXIT } from '../exit.js';
import { toGlanceCacheListing } from '../../cache/glance-format.js';
import { renderCacheTable } from '../format.js';

interface ListOptions {
  json?: boolean;
}

/**
 * `imgcache list [--json]`: what `glance cache-list` shows (spec §5.6), read straight from the cache directory.
 * The table has one row per cached image (by id) and one per queued image (in queue order). `--json` prints
 * the body of Glance's `GET /v2/cache` on one line, for scripts and `jq`.
 */
export function registerList(program: Command, ctx: CliContext): void {
  program
    .command('list')
    .description('list cached and queued images (like `glance cache-list`)')
    .option('--json', 'print {"cached_images": [...], "queued_images": [...]} as Glance\'s GET /v2/cache does')
    .action(async (options: ListOptions, command: Command) => {
      ctx.exitCode = await ctx.withCache(command, {}, async (cache) => {
        const cached = await cache.getCachedImages();
        const queued = await cache.getQueuedImages();
        if (options.json) {
          ctx.out(JSON.stringify(toGlanceCacheListing(cached, queued)));
        } else {
          ctx.out(renderCacheTable(cached, queued));
        }
        return EXIT.ok;
      });
    });
}
