import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { EXIT } from '../exit.js';

/**
 * `imgcache delete <id...>`: removes each image's cached file, its metadata and its queue entry, as Glance's
 * `DELETE /v2/cache/{id}` does (spec §4.4). Deleting an image that is neither cached nor queued is reported
 * and is not an error (both deletions are idempotent in Glance too).
 */
export function registerDelete(program: Command, ctx: CliContext): void {
  program
    .command('delete')
    .description('delete cached images and their queue entries')
    .argument('<id...>', 'image ids')
    .action(async (ids: string[], _options: unknown, command: Command) => {
      ctx.exitCode = await ctx.withCache(command, { ids }, async (cache) => {
        for (const id of ids) {
          const wasCached = await cache.isCached(id);
          const wasQueued = await cache.isQueued(id);
          await cache.deleteCachedImage(id);
          await cache.deleteQueuedImage(id);
          const what = [wasCached ? 'cached image' : null, wasQueued ? 'queue entry' : null].filter(Boolean);
          if (what.length === 0) ctx.out(`nothing to delete for ${id}: it is neither cached nor queued`);
          else ctx.out(`deleted ${id} (${what.join(' and ')})`);
        }
        return EXIT.ok;
      });
    });
}
