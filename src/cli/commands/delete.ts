import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { EXIT, type ExitCode } from '../exit.js';
import type { RemoteCache } from '../remote.js';

/**
 * `imgcache delete <id...>`: removes each image's cached file, its metadata and its queue entry, as Glance's
 * `DELETE /v2/cache/{id}` does (spec §4.4), and with `--url` through that call. Deleting an image that is
 * neither cached nor queued is reported and is not an error (both deletions are idempotent in Glance too; the
 * API says so with a 404 when the image is unknown as well).
 */
export function registerDelete(program: Command, ctx: CliContext): void {
  program
    .command('delete')
    .description('delete cached images and their queue entries')
    .argument('<id...>', 'image ids')
    .action(async (ids: string[], _options: unknown, command: Command) => {
      ctx.exitCode = await ctx.withTarget(command, { ids }, {
        local: async (cache) => {
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
        },
        remote: (server) => deleteRemote(ctx, server, ids),
      });
    });
}

async function deleteRemote(ctx: CliContext, server: RemoteCache, ids: readonly string[]): Promise<ExitCode> {
  let failed = 0;
  for (const id of ids) {
    const outcome = await server.delete(id);
    if (outcome.ok) {
      // 204 either way: the API does not say whether there was a file or a queue entry.
      ctx.out(`deleted ${id} on ${server.host} (its cached file and queue entry, if any)`);
    } else if (outcome.status === 404) {
      // The server knows no such image and has neither a file nor a queue entry for it (scenario 76).
      ctx.out(`nothing to delete for ${id}: it is neither cached nor queued on ${server.host}`);
    } else {
      failed += 1;
      ctx.warn(`not deleted ${id}: ${outcome.reason} (HTTP ${outcome.status})`);
    }
  }
  return failed > 0 ? EXIT.failed : EXIT.ok;
}
