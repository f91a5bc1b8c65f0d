import type { Command } from 'commander';
import type { ImageCache } from '../../cache/image-cache.js';
import type { CliContext } from '../context.js';
import { EXIT } from '../exit.js';

/**
 * `imgcache queue <id...>`: queues images for prefetch (Glance's `PUT /v2/cache/{id}` without the image
 * lookup: this works on the directory, not on a Glance catalogue). An image that is already cached, being
 * cached or queued is reported and skipped; that is not an error, as Glance ignores `queue_image`'s result.
 */
export function registerQueue(program: Command, ctx: CliContext): void {
  program
    .command('queue')
    .description('queue images for prefetching (already cached, being cached or queued images are skipped)')
    .argument('<id...>', 'image ids')
    .action(async (ids: string[], _options: unknown, command: Command) => {
      ctx.exitCode = await ctx.withCache(command, { ids }, async (cache) => {
        for (const id of ids) {
          if (await cache.queueImage(id)) ctx.out(`queued ${id}`);
          else ctx.out(`not queued ${id}: ${await whyNotQueued(cache, id)}`);
        }
        return EXIT.ok;
      });
    });
}

/** Why `queueImage` said no. Asked afterwards, so a concurrent change can make it "changed meanwhile". */
async function whyNotQueued(cache: ImageCache, id: string): Promise<string> {
  if (await cache.isCached(id)) return 'already cached';
  if (await cache.driver.isBeingCached(id)) return 'already being cached';
  if (await cache.isQueued(id)) return 'already queued';
  return 'its state changed while it was being queued (run list to see it)';
}
