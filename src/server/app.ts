import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyServerFactory,
  LogController,
} from 'fastify';
import type { Logger } from 'pino';
import type { Authenticator, Identity } from '../auth/identity.js';
import type { PolicyEnforcer } from '../auth/policy.js';
import type { ImageCache } from '../cache/image-cache.js';
import type { Origin } from '../origin/origin.js';
import type { Prefetcher } from '../workers/prefetcher.js';
import type { Cluster } from '../cluster/cluster.js';
import { PEER_IMAGE_PATH } from '../cluster/peer.js';
import { registerCacheApi } from './cache-api.js';
import { registerClusterApi } from './cluster-api.js';
import { DASHBOARD_PUBLIC_PATHS, registerDashboard } from './dashboard.js';
import { BadRequestError, ImageNotFoundError } from '../errors.js';
import { errorBody, installErrorHandler } from './errors.js';
import { registerImageRoutes } from './images.js';
import { registerImagesApi } from './images-api.js';
import { registerLegacyApi } from './legacy-api.js';
import { type Metrics, registerMetrics } from './metrics.js';
import type { ConfirmedRecords } from './stale.js';
import { registerProxy } from './proxy.js';
import { AdvertisedVersions, refuseUnadvertised, registerVersions, rewriteVersionedUrl } from './versions.js';

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
  /** The cluster this node belongs to (postgres driver), or null for a standalone node. */
  cluster: Cluster | null;
  /**
   * `stale_if_error`'s memory of recent confirmations (glance origins only); null or absent: a cached image is
   * never served while the origin is unreachable. @default null
   */
  staleRecords?: ConfirmedRecords | null;
  /** What `/versions` advertises. @default the origin's versions, refreshed every 5 minutes */
  versions?: AdvertisedVersions;
  /** Makes the listening server (serve's https, `tls.ts`). @default fastify's plain http server */
  serverFactory?: FastifyServerFactory;
  /**
   * Trust `X-Forwarded-For`/`-Proto` from callers on a Unix socket (the owner process of `workers`: those are its
   * workers). Never from a TCP peer: the owner also serves some client connections itself (workers/route.ts).
   * @default false
   */
  trustProxy?: boolean;
}

/** Routes that answer without credentials: what clients and monitors probe before they authenticate. */
const PUBLIC_ROUTES = new Set(['/', '/versions', '/healthz', '/metrics', ...DASHBOARD_PUBLIC_PATHS]);

/** Longest path segment routed at all: image ids are at most 255 characters, so anything longer is hostile. */
const MAX_SEGMENT = 1024;

/**
 * Refuses paths a router could read one way and an upstream another: `.`/`..` segments (raw or `%2e`-encoded),
 * a raw `#`, undecodable escapes, and segments too long to be routed (which would otherwise fall through to the
 * proxy). Nothing ambiguous reaches a route, the cache or the upstream Glance.
 */
function assertCleanPath(path: string): void {
  if (path.includes('#')) throw new BadRequestError('a request path cannot contain "#"');
  for (const raw of path.split('/')) {
    if (raw.length > MAX_SEGMENT) throw new ImageNotFoundError(`${raw.slice(0, 40)}…`);
    let segment: string;
    try {
      segment = decodeURIComponent(raw);
    } catch {
      throw new BadRequestError('the request path has a malformed %-escape');
    }
    if (segment === '.' || segment === '..') throw new BadRequestError('the request path cannot contain "." or ".." segments');
  }
}


/** Builds the fastify app; nothing else. Listening, signals and workers are `serve`'s. */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    // One line per request, written by our onResponse hook with the cache status, instead of fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    exposeHeadRoutes: false, // a HEAD of an image must not start a fill: HEAD routes are explicit
    return503OnClosing: true,
    // `/v2.14/cache` is `/v2/cache`: glanceclient sends versioned URLs once `/versions` advertised them. Which
    // versions are accepted is checked in onRequest (it may have to ask the origin; rewriteUrl is synchronous).
    rewriteUrl: (request) => rewriteVersionedUrl(request.url ?? '/'),
    routerOptions: { maxParamLength: MAX_SEGMENT },
    ...(deps.serverFactory ? { serverFactory: deps.serverFactory } : {}),
    // A Unix-socket peer has no address; every TCP peer has one.
    ...(deps.trustProxy ? { trustProxy: (address: string | undefined) => !address } : {}),
    // Malformed URLs and bodies get the same JSON error shape as everything else.
    frameworkErrors: (error, _request, reply) => {
      const status = error.statusCode ?? 400;
      const raw = reply as unknown as FastifyReply; // the framework hook's reply is typed per route generic
      void raw.code(status).type('application/json').send(errorBody(status, error.code ?? 'ERR_BAD_REQUEST', error.message));
    },
  });
  // Bodies stay raw streams: the proxy forwards them untouched, and the cache API refuses them.
  const versions = deps.versions ?? new AdvertisedVersions(deps.origin, deps.logger);
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
  app.decorateRequest('identity', null as unknown as Identity);

  app.addHook('onRequest', async (request, reply) => {
    const path = request.url.split('?')[0] ?? '/';
    assertCleanPath(path);
    if (await refuseUnadvertised(request, reply, versions)) return reply;
    // The intra-cluster API checks the cluster secret itself; it has no user identity.
    if (PUBLIC_ROUTES.has(path) || path.startsWith(`${PEER_IMAGE_PATH}/`)) return;
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
  registerVersions(app, versions);
  app.get('/healthz', async () => ({
    status: 'ok',
    origin: deps.origin.description,
    driver: deps.cache.driver.name,
    cache: await deps.cache.usage(),
  }));
  registerImagesApi(app, deps); // directory and http origins; a glance origin's API is proxied
  registerImageRoutes(app, deps);
  registerCacheApi(app, deps);
  registerLegacyApi(app, deps);
  registerClusterApi(app, deps);
  await registerDashboard(app, deps);
  registerProxy(app, deps);
  return app;
}
