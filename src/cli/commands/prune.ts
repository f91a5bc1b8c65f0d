import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { EXIT } from '../exit.js';
import { formatBytes, plural } from '../format.js';

/**
 * `imgcache prune`: deletes least recently accessed images until the cache fits `image_cache_max_size`
 * (`--max-size`), like `glance-cache-pruner` and `POST /v2/cache/prune` (spec §3.1, §5.5). Prints what was
 * pruned and what is left, so a cron job's log says whether the limit is right. With `--url` it is the server's
 * `POST /v2/cache/prune`, to the server's own limit (`--max-size` is refused there), which reports only the
 * pruned counts.
 */
export function registerPrune(program: Command, ctx: CliContext): void {
  program
    .command('prune')
    .description('delete least recently accessed images until the cache fits --max-size')
    .action(async (_options: unknown, command: Command) => {
      ctx.exitCode = await ctx.withTarget(command, {}, {
        local: async (cache) => {
          const result = await cache.prune();
          const remaining = await cache.driver.getCacheSize();
          ctx.out(
            `pruned ${plural(result.filesPruned, 'image')}, ${formatBytes(result.bytesPruned)}; ` +
              `cache size is now ${formatBytes(remaining)} of at most ${formatBytes(cache.maxSize)}`,
          );
          return EXIT.ok;
        },
        remote: async (server) => {
          const { filesPruned, bytesPruned } = await server.prune();
          ctx.out(`pruned ${plural(filesPruned, 'image')}, ${formatBytes(bytesPruned)} on ${server.host}`);
          return EXIT.ok;
        },
      });
    });
}
