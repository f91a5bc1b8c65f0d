import type { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { canProxy } from '../origin/origin.js';
import type { AppDeps } from './app.js';
import { callerOf } from './images.js';

interface ImageParams {
  imageId: string;
}

/**
 * With an origin that can proxy (`glance:`, see {@link canProxy}), imgcache stands in for Glance: every request under `/v2/` that is not the cache's own
 * goes upstream unchanged (streamed both ways), so clients point at imgcache instead of Glance. An image deleted
 * through it is dropped from the cache and from the queue too (Glance leaves the queue entry, spec §9.2).
 */
export function registerProxy(app: FastifyInstance, deps: AppDeps): void {
  const { origin, cache, prefetcher } = deps;
  if (!canProxy(origin)) return;

  app.delete<{ Params: ImageParams }>('/v2/images/:imageId', async (request, reply) => {
    const { imageId } = request.params;
    cache.driver.getImageFilepath(imageId);
    deps.policy.enforce('delete_image', request.identity);
    await origin.deleteImage(imageId, callerOf(request));
    await cache.deleteCachedImage(imageId);
    await cache.driver.deleteQueuedImage(imageId);
    prefetcher.forget(imageId);
    await deps.cluster?.invalidate(imageId); // the image is gone: every node drops its copy
    return reply.code(204).send();
  });

  app.all('/v2/*', async (request, reply) => {
    const controller = new AbortController();
    reply.raw.once('close', () => controller.abort());
    const upstream = await origin.proxy({
      method: request.method,
      path: request.url,
      headers: request.headers,
      body: (request.body as Readable | undefined) ?? null,
      signal: controller.signal,
    });
    return reply.code(upstream.status).headers(upstream.headers).send(upstream.body);
  });
}
