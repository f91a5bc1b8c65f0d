import { type Command, Option } from 'commander';
import type { CliContext } from '../context.js';
import { EXIT } from '../exit.js';
import { plural } from '../format.js';

/** What `clear` removes: Glance's `x-image-cache-clear-target`, with `both` spelled out (spec §4.4, §5.6). */
export const CLEAR_TARGETS = ['cache', 'queue', 'both'] as const;
export type ClearTarget = (typeof CLEAR_TARGETS)[number];

/** What a remote clear removed: `DELETE /v2/cache` answers 204 with no counts. */
const REMOVED: Record<ClearTarget, string> = {
  cache: 'every cached image',
  queue: 'every queue entry',
  both: 'every cached image and queue entry',
};

interface ClearOptions {
  target: ClearTarget;
}

/**
 * `imgcache clear [--target cache|queue|both]`: deletes every cached image, every queue entry, or both, and
 * prints how many went. Glance's API computes these counts and throws them away; we print them, except with
 * `--url`, where `DELETE /v2/cache` (no header for `both`) is all there is.
 */
export function registerClear(program: Command, ctx: CliContext): void {
  program
    .command('clear')
    .description('delete all cached images and/or all queue entries')
    .addOption(new Option('--target <target>', 'what to clear').choices(CLEAR_TARGETS).default('both'))
    .action(async (options: ClearOptions, command: Command) => {
      ctx.exitCode = await ctx.withTarget(command, {}, {
        local: async (cache) => {
          const parts: string[] = [];
          if (options.target !== 'queue') {
            parts.push(plural(await cache.deleteAllCachedImages(), 'cached image'));
          }
          if (options.target !== 'cache') {
            parts.push(plural(await cache.driver.deleteAllQueuedImages(), 'queued image'));
          }
          ctx.out(`removed ${parts.join(' and ')}`);
          return EXIT.ok;
        },
        remote: async (server) => {
          await server.clear(options.target);
          ctx.out(`removed ${REMOVED[options.target]} on ${server.host} (the API returns no counts)`);
          return EXIT.ok;
        },
      });
    });
}
