import type { ImageCache, PruneResult } from '../cache/image-cache.js';

/** One prune of the cache down to `image_cache_max_size` (Glance's `glance-cache-pruner`). */
export function runOnce(options: { cache: ImageCache }): Promise<PruneResult> {
  return options.cache.prune();
}
