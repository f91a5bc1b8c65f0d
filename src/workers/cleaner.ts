import type { ImageCache } from '../cache/image-cache.js';
import type { CleanResult } from '../drivers/driver.js';

/** One clean of `invalid/` and stalled `incomplete/` files (Glance's `glance-cache-cleaner`). */
export function runOnce(options: { cache: ImageCache; stallTime?: number }): Promise<CleanResult> {
  return options.cache.driver.clean(options.stallTime);
}
