import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { EXIT } from '../exit.js';
import { plural } from '../format.js';

interface CleanOptions {
  stallTime?: string;
}

/**
 * `imgcache clean [--stall-time S]`: removes everything in `invalid/` and the `incomplete/` files older than the
 * stall time (`image_cache_stall_time`; 0 removes them all), like `glance-cache-cleaner` (spec §5.5). Unlike
 * Glance, a file that cannot be removed makes the exit code 1, so cron notices. With `--url` it is the server's
 * `POST /v2/cache/clean`, which always uses the server's stall time: `--stall-time` is refused there.
 */
export function registerClean(program: Command, ctx: CliContext): void {
  program
    .command('clean')
    .description('remove invalid/ files and incomplete/ files older than the stall time')
    .option(
      '--stall-time <seconds>',
      'age in seconds after which an incomplete file is stalled (0: all); default 86400 (image_cache_stall_time)',
    )
    .action(async (options: CleanOptions, command: Command) => {
      const extra = { image_cache_stall_time: options.stallTime };
      ctx.exitCode = await ctx.withTarget(command, { extra }, {
        local: async (cache, config) => {
          const result = await cache.driver.clean(config.image_cache_stall_time);
          ctx.out(
            `removed ${plural(result.invalidRemoved, 'invalid file')} and ` +
              `${plural(result.incompleteRemoved, 'stalled incomplete file')}`,
          );
          for (const failure of result.failures) ctx.warn(`could not remove ${failure.path}: ${failure.error}`);
          if (result.failures.length > 0) {
            ctx.warn(`clean left ${plural(result.failures.length, 'file')} behind: fix their permissions and rerun`);
            return EXIT.failed;
          }
          return EXIT.ok;
        },
        remote: async (server) => {
          await server.clean();
          ctx.out(`cleaned ${server.host} with its own image_cache_stall_time (the API returns no counts)`);
          return EXIT.ok;
        },
      });
    });
}
