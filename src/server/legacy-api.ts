import type { FastifyInstance, FastifyRequest } from 'fastify';
import { toGlanceCachedImage } from '../cache/glance-format.js';
import type { AppDeps } from './app.js';
import { methodNotAllowed } from './errors.js';

interface ImageParams {
  imageId: string;
}

/**
 * The legacy cache-management API (`cachemanage` middleware, Stein and later, spec §4.3) that
 * `glance-cache-manage` speaks: every action behind `manage_image_cache`, 200s with Glance's bodies. Unlike
 * Glance, ids are validated (a hostile id is a 400, never a path), and a queued id goes to the prefetcher at
 * once instead of waiting for a periodic job.
 */
export function registerLegacyApi(app: FastifyInstance, deps: AppDeps): void {
  const { cache, policy, prefetcher } = deps;
  const allow = (request: FastifyRequest) => policy.enforce('manage_image_cache', request.identity);

  app.get('/v2/cached_images', async (request) => {
    allow(request);
    return { cached_images: (await cache.driver.getCachedImages()).map(toGlanceCachedImage) };
  });
  app.delete('/v2/cached_images', async (request) => {
    allow(request);
    return { num_deleted: await cache.deleteAllCachedImages() };
  });
  methodNotAllowed(app, '/v2/cached_images', ['GET', 'DELETE']);

  app.delete<{ Params: ImageParams }>('/v2/cached_images/:imageId', async (request, reply) => {
    allow(request);
    await cache.deleteCachedImage(request.params.imageId);
    return reply.type('application/json').send('null');
  });
  methodNotAllowed(app, '/v2/cached_images/:imageId', ['DELETE']);

  app.get('/v2/queued_images', async (request) => {
    allow(request);
    return { queued_images: await cache.driver.getQueuedImages() };
  });
  app.delete('/v2/queued_images', async (request) => {
    allow(request);
    const count = await cache.driver.deleteAllQueuedImages();
    prefetcher.forgetAll();
    return { num_deleted: count };
  });
  methodNotAllowed(app, '/v2/queued_images', ['GET', 'DELETE']);

  app.put<{ Params: ImageParams }>('/v2/queued_images/:imageId', async (request, reply) => {
    allow(request);
    const { imageId } = request.params;
    if (await cache.driver.queueImage(imageId)) prefetcher.submit(imageId);
    return reply.type('application/json').send('null');
  });
  app.delete<{ Params: ImageParams }>('/v2/queued_images/:imageId', async (request, reply) => {
    allow(request);
    await cache.driver.deleteQueuedImage(request.params.imageId);
    prefetcher.forget(request.params.imageId);
    return reply.type('application/json').send('null');
  });
  methodNotAllowed(app, '/v2/queued_images/:imageId', ['PUT', 'DELETE']);
}
