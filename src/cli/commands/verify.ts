import type { Command } from 'commander';
import type { VerifyEntry } from '../../cache/verify.js';
import type { CliContext } from '../context.js';
import { EXIT } from '../exit.js';
import { progressBar } from '../progress.js';

interface VerifyOptions {
  repair?: boolean;
  json?: boolean;
}

/**
 * `imgcache verify [--repair] [--json] [id...]`: re-hashes cached files against the MD5 and multihash recorded
 * when they were cached (Glance never re-checks a cached file). Exit 1 when any image mismatches, repaired or
 * not; images with nothing recorded (adopted after a crash, or cached by Glance) are reported, not failed.
 */
export function registerVerify(program: Command, ctx: CliContext): void {
  program
    .command('verify')
    .description('re-hash cached images against their recorded checksums')
    .argument('[id...]', 'images to verify (default: all)')
    .option('--repair', 'move images that fail to invalid/ and forget them')
    .option('--json', 'print the report as JSON')
    .action(async (ids: string[], options: VerifyOptions, command: Command) => {
      ctx.exitCode = await ctx.withCache(command, { ids }, async (cache) => {
        const progress = progressBar(ctx.io, 'verifying');
        let report: VerifyEntry[];
        try {
          report = await cache.verify({
            repair: options.repair ?? false,
            ...(ids.length > 0 ? { only: ids } : {}),
            ...(progress ? { onProgress: progress.listener } : {}),
          });
        } finally {
          progress?.stop();
        }
        if (options.json) ctx.out(JSON.stringify({ images: report.map(toJson) }));
        else for (const entry of report) ctx.out(describe(entry));
        const failed = report.filter((entry) => entry.status === 'mismatch' || entry.status === 'error');
        if (!options.json) {
          ctx.out(`${report.length} checked, ${report.length - failed.length} without a problem, ${failed.length} failed`);
        }
        return failed.length > 0 ? EXIT.failed : EXIT.ok;
      });
    });
}

function describe(entry: VerifyEntry): string {
  const detail = entry.detail ? ` (${entry.detail})` : '';
  const repaired = entry.repaired ? '; moved to invalid/' : '';
  return `${entry.status.padEnd(12)} ${entry.imageId}${detail}${repaired}`;
}

function toJson(entry: VerifyEntry): Record<string, unknown> {
  return {
    image_id: entry.imageId,
    status: entry.status,
    ...(entry.detail ? { detail: entry.detail } : {}),
    repaired: entry.repaired ?? false,
  };
}
