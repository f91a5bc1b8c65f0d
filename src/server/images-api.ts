import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { CachedImage } from '../drivers/driver.js';
import { ForbiddenError, ImageNotFoundError } from '../errors.js';
import { canProxy, type ImageRecord } from '../origin/origin.js';
import type { AppDeps } from './app.js';
import { assertNoBody } from './errors.js';
import { imageView, isoTime, pageOf, parseListQuery } from './image-view.js';
import { callerOf, imageTarget, recordOf } from './images.js';
import { SCHEMAS } from './schemas.js';

interface ImageParams {
  imageId: string;
}

/** How many images an `http:` origin's list remembers having seen (shown or downloaded) since the start. */
const SEEN_MAX = 10_000;
/** Statuses Glance never shows: the image is gone. */
const GONE = new Set(['deleted', 'pending_delete']);

/**
 * The read-only Images API for origins that are not one (`directory:`, `http:`): what python-glanceclient needs
 * for `image-list`, `image-show` and `image-download` (the schemas it builds its model from, the list it pages
 * through, the image whose checksum it verifies). With a `glance:` origin none of this is registered: the proxy
 * forwards the whole API upstream.
 *
 * The list: a `directory:` origin's every image; an `http:` origin has no index, so the images imgcache knows:
 * cached, queued for caching, and shown or downloaded since the server started.
 *
 * Writes are refused as a read-only Glance refuses them: 403 "Read-only access" (glance/common/utils.py
 * `mutating`, the decorator on every write of glance/api/v2/images.py).
 */
export function registerImagesApi(app: FastifyInstance, deps: AppDeps): void {
  const { origin, cache, policy } = deps;
  if (canProxy(origin)) return;
  const startedAt = isoTime(Date.now());
  /** Ids an `http:` origin has shown or served, oldest first, with the record when it was shown. */
  const seen = new Map<string, ImageRecord | null>();
  const remember = (id: string, record: ImageRecord | null) => {
    const known = seen.get(id) ?? null;
    seen.delete(id);
    seen.set(id, record ?? known);
    if (seen.size > SEEN_MAX) seen.delete(seen.keys().next().value as string);
  };

  /** A cached image's record from what the cache recorded at commit. */
  const fromCache = (entry: CachedImage): ImageRecord => ({ ...recordOf(entry), created_at: isoTime(entry.lastModified * 1000) });

  /**
   * The image as the origin describes it. When the origin cannot say (down, broken) but the image is cached,
   * what the cache recorded: a download of it would be served from the cache too, and glanceclient asks for
   * the image before it downloads it. A "no such image" from the origin is the answer, cached or not.
   */
  async function describe(request: FastifyRequest, imageId: string): Promise<ImageRecord> {
    try {
      return await origin.getImage(imageId, callerOf(request));
    } catch (error) {
      if (error instanceof ImageNotFoundError) throw error;
      const entry = await cache.driver.getCachedImage(imageId);
      if (!entry) throw error;
      request.log.warn({ imageId, err: error }, 'origin cannot describe the image: showing what the cache recorded');
      return fromCache(entry);
    }
  }

  /** Every image the list shows, before filters and paging. */
  async function allImages(request: FastifyRequest): Promise<ImageRecord[]> {
    if (origin.listImages) return origin.listImages();
    const cached = new Map((await cache.driver.getCachedImages()).map((entry) => [entry.imageId, entry]));
    const ids = new Set([...cached.keys(), ...(await cache.driver.getQueuedImages()), ...seen.keys()]);
    const records: ImageRecord[] = [];
    for (const id of ids) {
      const entry = cached.get(id);
      const known = seen.get(id) ?? null;
      if (known) records.push(entry ? { ...known, created_at: known.created_at ?? fromCache(entry).created_at } : known);
      else if (entry) records.push(fromCache(entry));
      else {
        // Queued, or downloaded without being shown: ask the origin, and leave out what it no longer has.
        try {
          const record = await origin.getImage(id, callerOf(request));
          remember(id, record);
          records.push(record);
        } catch (error) {
          request.log.info({ imageId: id, err: error }, 'image list: the origin cannot describe a known image');
        }
      }
    }
    return records;
  }

  for (const [name, schema] of Object.entries(SCHEMAS)) {
    app.get(`/v2/schemas/${name}`, async () => schema);
  }

  app.get('/v2/images', async (request) => {
    assertNoBody(request);
    policy.enforce('get_images', request.identity);
    const params = new URL(request.url, 'http://imgcache').searchParams;
    const query = parseListQuery(params);
    const views = (await allImages(request)).map((record) => imageView(record, startedAt));
    const { images, nextMarker } = pageOf(views, query);
    // Glance's index serializer: `first` keeps the query without the marker, `next` sets the page's last id.
    params.delete('marker');
    const rest = params.toString();
    const body: Record<string, unknown> = {
      images,
      first: rest ? `/v2/images?${rest}` : '/v2/images',
      schema: '/v2/schemas/images',
    };
    if (nextMarker !== null) {
      params.set('marker', nextMarker);
      body.next = `/v2/images?${params.toString()}`;
    }
    return body;
  });

  app.get<{ Params: ImageParams }>('/v2/images/:imageId', async (request) => {
    assertNoBody(request);
    const { imageId } = request.params;
    cache.driver.getImageFilepath(imageId); // a hostile id stops here, before any lookup
    const record = await describe(request, imageId);
    if (GONE.has(record.status)) throw new ImageNotFoundError(imageId);
    policy.enforce('get_image', request.identity, imageTarget(record));
    if (!origin.listImages) remember(imageId, record);
    return imageView(record, startedAt);
  });

  // Downloads count as "seen" for an origin without an index, so `image-list` shows what was fetched.
  if (!origin.listImages) {
    app.addHook('onResponse', async (request, reply) => {
      const params = request.params as Partial<ImageParams> | undefined;
      if (request.routeOptions.url === '/v2/images/:imageId/file' && reply.statusCode < 300 && params?.imageId) {
        remember(params.imageId, null);
      }
    });
  }

  const refuse = async (): Promise<never> => {
    throw new ForbiddenError('Read-only access: imgcache serves the Images API of this origin read-only');
  };
  app.route({ method: ['POST', 'PUT', 'PATCH', 'DELETE'], url: '/v2/images', handler: refuse });
  app.route({ method: ['POST', 'PUT', 'PATCH', 'DELETE'], url: '/v2/images/*', handler: refuse });
}
