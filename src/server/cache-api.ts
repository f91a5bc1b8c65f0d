import type { FastifyInstance, FastifyRequest } from 'fastify';
import { toGlanceCacheListing } from '../cache/glance-format.js';
import { BadRequestError, CapabilityNotSupportedError, ImageNotFoundError, ImageStateError } from '../errors.js';
import type { AppDeps } from './app.js';
import { assertNoBody, methodNotAllowed } from './errors.js';
import { callerOf, imageTarget } from './images.js';

interface ImageParams {
  imageId: string;
}

/** `x-image-cache-clear-target` values (lower-cased); Glance refuses anything else, `both` included (§4.4). */
const CLEAR_TARGETS = new Set(['', 'cache', 'queue']);

/**
 * The v2 Cache API, byte for byte Glance's (spec §4.4, Images API 2.14-2.18): the policy is checked first,
 * then the request. One addition, on a path of its own: `GET /v2/cache/errors` returns `prefetch_errors`, the
 * last error of each queued image the prefetcher could not cache (Glance's worker dies silently instead). It is
 * not in `GET /v2/cache`: python-glanceclient reads every key there but `cached_images` as queued ids.
 */
export function registerCacheApi(app: FastifyInstance, deps: AppDeps): void {
  const { cache, origin, policy, prefetcher } = deps;
  /** Glance serialises clean and prune (external locks `glance-cache-clean`/`-prune`, scenario 92). */
  let maintenance: Promise<unknown> = Promise.resolve();
  const serialized = <T>(task: () => Promise<T>): Promise<T> => {
    const run = maintenance.then(task, task);
    maintenance = run.catch(() => {});
    return run;
  };

  app.get('/v2/cache', async (request) => {
    assertNoBody(request);
    policy.enforce('cache_list', request.identity);
    const [cached, queued] = await Promise.all([cache.driver.getCachedImages(), cache.driver.getQueuedImages()]);
    return toGlanceCacheListing(cached, queued);
  });

  // A literal route: it wins over `/v2/cache/:imageId` for GET only, so PUT and DELETE of an image with the id
  // "errors" still reach their routes (GET /v2/cache/{id} is a 405 in Glance anyway).
  app.get('/v2/cache/errors', async (request) => {
    assertNoBody(request);
    policy.enforce('cache_list', request.identity);
    return { prefetch_errors: prefetcher.errors() };
  });

  app.delete('/v2/cache', async (request, reply) => {
    policy.enforce('cache_delete', request.identity);
    const raw = request.headers['x-image-cache-clear-target'];
    const target = (Array.isArray(raw) ? raw[0] : raw)?.trim().toLowerCase() ?? '';
    if (!CLEAR_TARGETS.has(target)) {
      throw new BadRequestError("If provided 'x-image-cache-clear-target' must be 'cache', 'queue' or empty string.");
    }
    if (target !== 'queue') await cache.deleteAllCachedImages();
    if (target !== 'cache') {
      await cache.driver.deleteAllQueuedImages();
      prefetcher.forgetAll(); // errors of images no longer queued would be phantoms
    }
    return reply.code(204).send();
  });
  methodNotAllowed(app, '/v2/cache', ['GET', 'DELETE']);

  app.put<{ Params: ImageParams }>('/v2/cache/:imageId', async (request, reply) => {
    const { imageId } = request.params;
    cache.driver.getImageFilepath(imageId);
    const image = await origin.getImage(imageId, callerOf(request));
    policy.enforce('cache_image', request.identity, imageTarget(image));
    if (image.status !== 'active') throw new ImageStateError(imageId, image.status, 'queue it for caching');
    await cache.driver.queueImage(imageId);
    prefetcher.submit(imageId);
    return reply.code(202).send();
  });

  app.delete<{ Params: ImageParams }>('/v2/cache/:imageId', async (request, reply) => {
    const { imageId } = request.params;
    cache.driver.getImageFilepath(imageId);
    let target: Record<string, unknown> = {};
    try {
      target = imageTarget(await origin.getImage(imageId, callerOf(request)));
    } catch (error) {
      // An image deleted upstream can still be dropped from this cache (scenario 77).
      if (!(error instanceof ImageNotFoundError)) throw error;
      if (!(await cache.driver.isQueued(imageId)) && !(await cache.driver.isCached(imageId))) throw error;
    }
    policy.enforce('cache_delete', request.identity, target);
    const scope = (request.query as { scope?: string }).scope ?? 'node';
    if (scope !== 'node' && scope !== 'cluster') throw new BadRequestError('scope must be "node" or "cluster"');
    if (scope === 'cluster' && !deps.cluster) {
      throw new CapabilityNotSupportedError(cache.driver.name, 'scope=cluster (a centralized driver is needed)');
    }
    await cache.deleteCachedImage(imageId);
    await cache.driver.deleteQueuedImage(imageId);
    prefetcher.forget(imageId);
    // Every other node drops its copy and queue entry too (Glance leaves them until they are pruned).
    if (scope === 'cluster') await deps.cluster?.invalidate(imageId);
    return reply.code(204).send();
  });
  methodNotAllowed(app, '/v2/cache/:imageId', ['DELETE', 'PUT']);

  app.get<{ Params: ImageParams }>('/v2/cache/nodes/:imageId', async (request) => {
    assertNoBody(request);
    policy.enforce('list_cached_nodes', request.identity);
    const { imageId } = request.params;
    if (!cache.driver.capabilities.cachedNodes) {
      throw new CapabilityNotSupportedError(cache.driver.name, 'centralized caching (listing the nodes of an image)');
    }
    cache.driver.getImageFilepath(imageId);
    await origin.getImage(imageId, callerOf(request));
    return cache.driver.getCachedNodes(imageId);
  });
  methodNotAllowed(app, '/v2/cache/nodes/:imageId', ['GET']);

  app.post('/v2/cache/clean', async (request: FastifyRequest, reply) =>
    serialized(async () => {
      policy.enforce('cache_clean', request.identity);
      await cache.driver.clean();
      return reply.code(200).send();
    }),
  );
  methodNotAllowed(app, '/v2/cache/clean', ['POST']);

  app.post('/v2/cache/prune', async (request: FastifyRequest) =>
    serialized(async () => {
      policy.enforce('cache_prune', request.identity);
      const { filesPruned, bytesPruned } = await cache.prune();
      return { total_files_pruned: filesPruned, total_bytes_pruned: bytesPruned };
    }),
  );
  methodNotAllowed(app, '/v2/cache/prune', ['POST']);
}
