import { availableParallelism } from 'node:os';
import type { Logger } from 'pino';
import { ImageCache as CacheFront } from './cache/image-cache.js';
import type { CacheConfig } from './config.js';
import { createDriver } from './drivers/registry.js';

/**
 * The composition root: the one place that turns Glance's option names into a driver and a cache. `src/cache/`
 * takes a configured driver and plain options; it never sees a config or the driver registry. The CLI, the
 * server and the library's `ImageCache.open` all open a cache here.
 */

/**
 * `hash_threads = auto`: hash on worker threads when the machine has more than one core. The lead sets this by a
 * quiet-machine measurement (`bench/fill.ts`); it is the one line to change.
 */
export const HASH_THREADS_AUTO = (): boolean => availableParallelism() > 1;

/** How {@link openCache} opens the cache. */
export interface OpenCacheOptions {
  /** Logger for the driver and the cache. @default a silent logger */
  logger?: Logger;
  /**
   * Bring the directory and the metadata back in line after a crash ({@link CacheFront.reconcile}). Only the
   * process that owns the cache dir (the server, at start) may: it takes every `incomplete/` file it is not
   * writing itself for a leftover. @default false
   */
  reconcile?: boolean;
}

/**
 * Builds the driver `image_cache_driver` names (never another one), configures it and opens the cache over it
 * with `image_cache_max_size`, `image_cache_fill_idle_timeout`, `image_cache_verify_digests` and `hash_threads`.
 * @throws UnknownDriverError, BadDriverConfigurationError
 */
export async function openCache(config: CacheConfig, options: OpenCacheOptions = {}): Promise<ImageCache> {
  const driver = createDriver(config.image_cache_driver, {
    cacheDir: config.image_cache_dir,
    stallTime: config.image_cache_stall_time,
    sqliteDb: config.image_cache_sqlite_db,
    databaseUrl: config.connection,
    databaseSchema: config.database_schema,
    nodeUrl: config.worker_self_reference_url,
    livenessWindow: config.node_liveness_window,
    ...(options.logger ? { logger: options.logger } : {}),
  });
  await driver.configure();
  const cache = new ImageCache({
    driver,
    maxSize: config.image_cache_max_size,
    fillIdleTimeout: config.image_cache_fill_idle_timeout,
    verifyDigests: config.image_cache_verify_digests,
    hashThreads: config.hash_threads === 'auto' ? HASH_THREADS_AUTO() : config.hash_threads,
    ...(options.logger ? { logger: options.logger } : {}),
  });
  if (options.reconcile) await cache.reconcile();
  return cache;
}

/**
 * The library's `ImageCache`: the cache front of `src/cache/image-cache.ts` plus `ImageCache.open(config)`.
 * The static lives here, not in `src/cache/`, so the cache layer never learns the option names or the drivers;
 * instances are the same class everywhere (`instanceof` either name holds for a cache opened here).
 */
export class ImageCache extends CacheFront {
  /** {@link openCache} as a static: the README's library example. */
  static open(config: CacheConfig, options: OpenCacheOptions = {}): Promise<ImageCache> {
    return openCache(config, options);
  }
}
