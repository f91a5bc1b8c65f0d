import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import type { Logger } from 'pino';
import type { Authenticator, Identity } from '../auth/identity.js';
import type { PolicyEnforcer } from '../auth/policy.js';
import type { ImageCache } from '../cache/image-cache.js';
import type { Origin } from '../origin/origin.js';
import type { Prefetcher } from '../workers/prefetcher.js';
import { registerCacheApi } from './cache-api.js';
import { installErrorHandler } from './errors.js';
import { registerImageRoutes } from './images.js';
import { registerLegacyApi } from './legacy-api.js';
import { type Metrics, registerMetrics } from './metrics.js';
import { registerProxy } from './proxy.js';
import { registerVersions } from './versions.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who is calling; set by the auth hook before any handler runs (public routes get none). */
    identity: Identity;
  }
}

/** What the app is built from; `serve` makes these from the config, tests make them directly. */
export interface AppDeps {
  cache: ImageCache;
  origin: Origin;
  auth: Authenticator;
  policy: PolicyEnforcer;
  prefetcher: Prefetcher;
  metrics: Metrics;
  logger: Logger;
}

/** Routes that answer without credentials: what clients and monitors probe before they authenticate. */
const PUBLIC_ROUTES = new Set(['/', '/versions', '/healthz', '/metrics']);

/** `/v2.14/cache` is `/v2/cache`: glanceclient sends versioned URLs once `/versions` advertised them. */
function rewriteVersionedUrl(url: string): string {
  return url.replace(/^\/v2\.(?:1[0-8]|[0-9])(?=\/|$|\?)/, '/v2');
}

/** Builds the fastify app; nothing else. Listening, signals and workers are `serve`'s. */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    // One line per request, written by our onResponse hook with the cache status, instead of fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    exposeHeadRoutes: false, // a HEAD of an image must not start a fill: HEAD routes are explicit
    return503OnClosing: true,
    rewriteUrl: (request) => rewriteVersionedUrl(request.url ?? '/'),
    // Image ids are up to 255 characters; longer path segments are hostile and get a 404 at once.
    routerOptions: { maxParamLength: 1024 },
  });
  // Bodies stay raw streams: the proxy forwards them untouched, and the cache API refuses them.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
  app.decorateRequest('identity', null as unknown as Identity);

  app.addHook('onRequest', async (request) => {
    const path = request.url.split('?')[0] ?? '/';
    if (PUBLIC_ROUTES.has(path)) return;
    request.identity = await deps.auth.authenticate(request.headers);
  });
  app.addHook('onResponse', async (request, reply) => {
    const cacheStatus = reply.getHeader('x-cache-status');
    request.log.info(
      {
        method: request.method,
        path: request.url.split('?')[0],
        status: reply.statusCode,
        ...(cacheStatus ? { cache: cacheStatus } : {}),
        ms: Math.round(reply.elapsedTime),
      },
      'request',
    );
  });

  installErrorHandler(app);
  registerMetrics(app, deps.metrics);
  registerVersions(app);
  app.get('/healthz', async () => ({
    status: 'ok',
    origin: deps.origin.description,
    driver: deps.cache.driver.name,
    cache: await deps.cache.usage(),
  }));
  registerImageRoutes(app, deps);
  registerCacheApi(app, deps);
  registerLegacyApi(app, deps);
  registerProxy(app, deps);
  return app;
}
