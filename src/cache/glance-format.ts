import type { CachedImage } from '../drivers/driver.js';

/**
 * One cached image as Glance's `GET /v2/cache` lists it (spec §4.4): snake_case names, epoch-second times.
 * The server's cache API returns the same objects.
 */
export interface GlanceCachedImage {
  image_id: string;
  hits: number;
  last_accessed: number;
  last_modified: number;
  size: number;
}

/** The body of Glance's `GET /v2/cache`: cached images, and queued ids in processing order. */
export interface GlanceCacheListing {
  cached_images: GlanceCachedImage[];
  queued_images: string[];
}

/** A driver's {@link CachedImage} in Glance's wire shape (drops our digests, which Glance does not list). */
export function toGlanceCachedImage(image: CachedImage): GlanceCachedImage {
  return {
    image_id: image.imageId,
    hits: image.hits,
    last_accessed: image.lastAccessed,
    last_modified: image.lastModified,
    size: image.size,
  };
}

/** The whole listing, as `GET /v2/cache` and `imgcache list --json` print it. */
export function toGlanceCacheListing(cached: readonly CachedImage[], queued: readonly string[]): GlanceCacheListing {
  return { cached_images: cached.map(toGlanceCachedImage), queued_images: [...queued] };
}
