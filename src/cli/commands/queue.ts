import type { Command } from 'commander';
import type { ImageCache } from '../../cache/image-cache.js';
import type { CliContext } from '../context.js';
import { EXIT, type ExitCode } from '../exit.js';
import type { RemoteCache } from '../remote.js';

/**
 * `imgcache queue <id...>`: queues images for prefetch. On a directory this is Glance's `PUT /v2/cache/{id}`
 * without the image lookup: an image that is already cached, being cached or queued is reported and skipped;
 * that is not an error, as Glance ignores `queue_image`'s result. With `--url` it is that PUT: the server looks
 * the image up and starts the prefetch; an unknown or inactive image is reported and makes the exit code 1.
 */
export function registerQueue(program: Command, ctx: CliContext): void {
  program
    .command('queue')
    .description('queue images for prefetching (already cached, being cached or queued images are skipped)')
    .argument('<id...>', 'image ids')
    .action(async (ids: string[], _options: unknown, command: Command) => {
      ctx.exitCode = await ctx.withTarget(command, { ids }, {
        local: async (cache) => {
          for (const id of ids) {
            if (await cache.driver.queueImage(id)) ctx.out(`queued ${id}`);
            else ctx.out(`not queued ${id}: ${await whyNotQueued(cache, id)}`);
          }
          return EXIT.ok;
        },
        remote: (server) => queueRemote(ctx, server, ids),
      });
    });
}

/** Why `queueImage` said no. Asked afterwards, so a concurrent change can make it "changed meanwhile". */
async function whyNotQueued(cache: ImageCache, id: string): Promise<string> {
  if (await cache.driver.isCached(id)) return 'already cached';
  if (await cache.driver.isBeingCached(id)) return 'already being cached';
  if (await cache.driver.isQueued(id)) return 'already queued';
  return 'its state changed while it was being queued (run list to see it)';
}

/** Every id is tried; one the server refuses (404 unknown, 400 not active) is reported and fails the run. */
async function queueRemote(ctx: CliContext, server: RemoteCache, ids: readonly string[]): Promise<ExitCode> {
  let failed = 0;
  for (const id of ids) {
    const outcome = await server.queue(id);
    if (outcome.ok) {
      // 202 says "accepted", not "newly queued": Glance does not tell an already cached image apart.
      ctx.out(`queued ${id} on ${server.host}`);
    } else {
      failed += 1;
      ctx.warn(`not queued ${id}: ${outcome.reason} (HTTP ${outcome.status})`);
    }
  }
  return failed > 0 ? EXIT.failed : EXIT.ok;
}
