import { createHash } from 'node:crypto';
import type { Command } from 'commander';
import type { ImageCache } from '../../cache/image-cache.js';
import { checkHashAlgorithm, DEFAULT_HASH_ALGO, type ExpectedImage } from '../../cache/digest.js';
import { ChecksumMismatchError, SizeMismatchError } from '../../errors.js';
import type { CliContext } from '../context.js';
import { CliFailure, CliUsageError, EXIT } from '../exit.js';
import { formatBytes } from '../format.js';
import { progressBar } from '../progress.js';

interface ImportOptions {
  checksum?: string;
  osHashAlgo?: string;
  osHashValue?: string;
  size?: string;
}

/**
 * `imgcache import <id> <file>`: copies a local file into the cache as image `id`, verifying size, MD5
 * (Glance's `checksum`) and the multihash (`os_hash_algo`/`os_hash_value`) in the same pass, like Glance's
 * `cache_image_file` (which checks MD5 only). A mismatch caches nothing and leaves the copy in `invalid/`.
 */
export function registerImport(program: Command, ctx: CliContext): void {
  program
    .command('import')
    .description('copy a local file into the cache as an image, verifying it first')
    .argument('<id>', 'image id')
    .argument('<file>', 'file holding the image bytes')
    .option('--checksum <md5>', "expected MD5 hex digest (Glance's checksum)")
    .option('--os-hash-algo <algo>', `multihash algorithm of --os-hash-value (default ${DEFAULT_HASH_ALGO})`)
    .option('--os-hash-value <hex>', "expected multihash hex digest (Glance's os_hash_value)")
    .option('--size <bytes>', 'expected size in bytes')
    .action(async (id: string, file: string, options: ImportOptions, command: Command) => {
      const expected = parseExpected(options);
      ctx.exitCode = await ctx.withCache(command, { ids: [id] }, async (cache) => {
        const progress = progressBar(ctx.io, `importing ${id}`);
        let cached: boolean;
        try {
          cached = await cache.cacheImageFile(id, file, expected, progress?.listener);
        } catch (error) {
          if (error instanceof ChecksumMismatchError || error instanceof SizeMismatchError) {
            throw new CliFailure(
              `${error.message}; nothing was cached (the copy is in ${cache.driver.getImageFilepath(id, 'invalid')} ` +
                'until `imgcache clean`)',
              { cause: error },
            );
          }
          throw error;
        } finally {
          progress?.stop();
        }
        if (!cached) throw new CliFailure(await whyNotImported(cache, id));
        ctx.out(`cached ${id}: ${formatBytes(await cache.driver.getImageSize(id))}`);
        return EXIT.ok;
      });
    });
}

/** Checks every expectation before anything is opened, so a typo never leaves a half-made copy behind. */
export function parseExpected(options: ImportOptions): ExpectedImage {
  const expected: ExpectedImage = {};
  if (options.checksum !== undefined) {
    if (!/^[0-9a-f]{32}$/i.test(options.checksum)) {
      const got = JSON.stringify(options.checksum);
      throw new CliUsageError(`--checksum must be an MD5 digest of 32 hex digits; got ${got}`);
    }
    expected.checksum = options.checksum.toLowerCase();
  }
  if (options.osHashAlgo !== undefined) {
    try {
      expected.osHashAlgo = checkHashAlgorithm(options.osHashAlgo);
    } catch {
      throw new CliUsageError(
        `--os-hash-algo ${JSON.stringify(options.osHashAlgo)} is not a hash this Node.js provides (try sha512)`,
      );
    }
  }
  if (options.osHashValue !== undefined) {
    const algorithm = expected.osHashAlgo ?? DEFAULT_HASH_ALGO;
    const digits = createHash(algorithm).digest().length * 2;
    if (!new RegExp(`^[0-9a-f]{${digits}}$`, 'i').test(options.osHashValue)) {
      throw new CliUsageError(
        `--os-hash-value must be a ${algorithm} digest of ${digits} hex digits; ` +
          `got ${JSON.stringify(options.osHashValue)}` +
          (options.osHashAlgo === undefined ? ' (use --os-hash-algo for another algorithm)' : ''),
      );
    }
    expected.osHashValue = options.osHashValue.toLowerCase();
  }
  if (options.size !== undefined) {
    const size = /^\d+$/.test(options.size) ? Number(options.size) : Number.NaN;
    if (!Number.isSafeInteger(size)) {
      throw new CliUsageError(`--size must be a whole number of bytes; got ${JSON.stringify(options.size)}`);
    }
    expected.size = size;
  }
  return expected;
}

/** `cacheImageFile` returned false: it read nothing because the image is cached or being cached. */
async function whyNotImported(cache: ImageCache, id: string): Promise<string> {
  if (await cache.driver.isCached(id)) {
    return `image ${id} is already cached; nothing was imported (run \`imgcache delete ${id}\` first to replace it)`;
  }
  return (
    `image ${id} is already being cached (${cache.driver.getImageFilepath(id, 'incomplete')} exists); nothing ` +
    'was imported. Wait for that copy to finish, or remove a stalled one with `imgcache clean`'
  );
}
