import type { Server as TlsServer } from 'node:tls';
import type { FastifyInstance } from 'fastify';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { createAuthenticator } from '../auth/factory.js';
import type { Authenticator } from '../auth/identity.js';
import { assertLoopbackBind } from '../auth/noauth.js';
import { PolicyEnforcer } from '../auth/policy.js';
import type { ImageCache } from '../cache/image-cache.js';
import { Cluster } from '../cluster/cluster.js';
import { ConfigError, ShuttingDownError } from '../errors.js';
import { openCache } from '../open-cache.js';
import { createOrigin } from '../origin/from-spec.js';
import type { Origin } from '../origin/origin.js';
import { runOnce as clean } from '../workers/cleaner.js';
import { Prefetcher } from '../workers/prefetcher.js';
import { runOnce as prune } from '../workers/pruner.js';
import { every, type Schedule } from '../workers/scheduler.js';
import { buildApp } from './app.js';
import { Metrics } from './metrics.js';
import type { ServeConfig } from './options.js';
import { ConfirmedRecords } from './stale.js';
import { httpsFactory, listenerTls, type TlsSetup, tlsSetup } from './tls.js';

/** A running server. */
export interface RunningServer {
  /** `http://host:port` (`https://` with `cert_file`), with the port actually bound (for `bind_port = 0`). */
  url: string;
  app: FastifyInstance;
  cache: ImageCache;
  prefetcher: Prefetcher;
  /** What a `workers` process's hit is checked with, in this process (src/server/workers/leases.ts). */
  auth: Authenticator;
  policy: PolicyEnforcer;
  origin: Origin;
  metrics: Metrics;
  /**
   * Graceful stop: no new connections, running downloads get `shutdown_timeout` seconds to finish, then fills
   * still running are aborted (their files go to `invalid/`, never left in `incomplete/`), then everything
   * closes.
   */
  close(): Promise<void>;
  /**
   * Serves a client connection accepted elsewhere (the owner of `workers` keeps some for itself: workers/route.ts)
   * as if this server had accepted it: nothing read from it yet. `close` waits for it like for its own.
   */
  adopt(connection: Socket): void;
  /**
   * Reads `cert_file`, `key_file` and `ca_file` again and uses them for new connections (SIGHUP); false when
   * TLS is off. Throws {@link ConfigError} for files that cannot be used; the old ones then stay in force.
   */
  reloadTls(): boolean;
}

/** What a caller of {@link startServer} may inject besides the config (tests: a clock). */
export interface StartServerOptions {
  /** The clock of time windows (`stale_if_error`). @default Date.now */
  now?: () => number;
  /**
   * Listen on this Unix socket instead of `bind_host:bind_port`, in plain http (the owner process of `workers`:
   * its workers listen publicly, terminate TLS and forward here, saying who called in `X-Forwarded-For` and
   * `X-Forwarded-Proto`, which only then are trusted). @default undefined (the public listener)
   */
  privateSocket?: string;
}

/** Builds everything `serve` runs from a resolved config, in dependency order, and listens. */
export async function startServer(
  config: ServeConfig,
  logger: Logger,
  options: StartServerOptions = {},
): Promise<RunningServer> {
  const { server } = config;
  if (!server.origin) {
    // A ConfigError, so the CLI exits 2 (a configuration error) like every other missing option.
    throw new ConfigError(
      'no origin: pass --origin directory:PATH|http:URL-TEMPLATE|glance:URL, set IMGCACHE_ORIGIN, or set origin ' +
        'in the [imgcache] section of the config file',
    );
  }
  if (server.auth_strategy.toLowerCase() === 'noauth') {
    assertLoopbackBind(server.bind_host, server.allow_noauth_non_loopback);
  }
  const tls: TlsSetup = tlsSetup(server, config.cache.worker_self_reference_url, logger);
  const policy = new PolicyEnforcer(config.policy);
  const auth: Authenticator = createAuthenticator({
    strategy: server.auth_strategy,
    ...(server.auth_tokens_file ? { tokensFile: server.auth_tokens_file } : {}),
    onTokensReloadError: (error: unknown) => logger.error({ err: error }, 'tokens file reload failed'),
    ...(server.auth_url
      ? {
          keystone: {
            authUrl: server.auth_url,
            username: server.username ?? '',
            password: server.password ?? '',
            userDomainName: server.user_domain_name,
            projectName: server.project_name ?? '',
            projectDomainName: server.project_domain_name,
            cacheTtlSeconds: server.token_cache_time,
            tls: tls.keystone,
          },
        }
      : {}),
  });
  const origin: Origin = createOrigin(server.origin, {
    tls: tls.origin,
    ...(server.service_token ? { serviceToken: server.service_token } : {}),
  });
  let cache: ImageCache | undefined;
  let app: FastifyInstance | undefined;
  let cluster: Cluster | null = null;
  try {
    cache = await openCache(config.cache, { logger, reconcile: true });
    const prefetcher = new Prefetcher({ cache, origin, logger, concurrency: server.prefetch_concurrency });
    cluster = Cluster.of({
      cache,
      secret: server.cluster_secret,
      peerFetch: server.peer_fetch,
      logger,
      onDropped: (imageId) => prefetcher.forget(imageId),
      peerTls: tls.peer,
      peerMaxReaders: server.peer_max_readers,
      // Below the fill's own idle timeout, so a fill whose peer went silent survives the switch to another source.
      peerStallMs: (config.cache.image_cache_fill_idle_timeout * 1000) / 2,
    });
    const metrics = new Metrics(cache, { prefetcher, ...(cluster ? { peers: cluster.peerSlots } : {}) });
    app = await buildApp({
      cache,
      origin,
      auth,
      policy,
      prefetcher,
      metrics,
      logger,
      cluster,
      staleRecords: staleRecordsFor(config, origin, logger, options),
      ...(tls.listener && !options.privateSocket ? { serverFactory: httpsFactory(tls.listener) } : {}),
      ...(options.privateSocket ? { trustProxy: true } : {}),
    });
    if (options.privateSocket) await app.listen({ path: options.privateSocket });
    else await app.listen({ host: server.bind_host, port: server.bind_port });
    await cluster?.start();
    const parts = { app, cache, origin, auth, policy, metrics, prefetcher, cluster };
    return running(config, logger, parts, options.privateSocket !== undefined);
  } catch (error) {
    // Whatever was opened before the failure (a port in use, a bad cache dir) is closed again.
    await app?.close().catch(() => {});
    await cluster?.stop().catch(() => {});
    await cache?.close().catch(() => {});
    await origin.close().catch(() => {});
    await auth.close().catch(() => {});
    throw error;
  }
}

/** `stale_if_error`'s memory, when it applies: an origin that authorizes callers and an auth of our own. */
function staleRecordsFor(
  config: ServeConfig,
  origin: Origin,
  logger: Logger,
  options: StartServerOptions,
): ConfirmedRecords | null {
  const window = config.server.stale_if_error;
  if (window === 0) return null;
  if (!origin.authorizesCallers) {
    logger.info('stale_if_error is not needed with this origin: cached images are served without asking it');
    return null;
  }
  if (config.server.auth_strategy.toLowerCase() === 'noauth') {
    logger.warn('stale_if_error has no effect with auth_strategy = noauth: callers must be authenticated by imgcache');
    return null;
  }
  return new ConfirmedRecords({ windowSeconds: window, ...(options.now ? { now: options.now } : {}) });
}

interface Parts {
  app: FastifyInstance;
  cache: ImageCache;
  origin: Origin;
  auth: Authenticator;
  policy: PolicyEnforcer;
  metrics: Metrics;
  prefetcher: Prefetcher;
  cluster: Cluster | null;
}

/** Starts the background work of a listening server and returns its handle with the graceful close. */
function running(config: ServeConfig, logger: Logger, parts: Parts, privateSocket: boolean): RunningServer {
  const { server } = config;
  const { app, cache, origin, auth, policy, metrics, prefetcher, cluster } = parts;
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : server.bind_port;
  const host = server.bind_host.includes(':') ? `[${server.bind_host}]` : server.bind_host;
  prefetcher.start(server.prefetch_interval);
  const schedules: Schedule[] = [
    every(server.prune_interval, 'prune', () => prune({ cache }), logger),
    every(server.clean_interval, 'clean', () => clean({ cache }), logger),
  ];
  const shuttingDown = () => new ShuttingDownError();

  // Connections adopted from elsewhere: node:http tracks them (idle ones close with the server) but its close
  // does not wait for them, so close waits for them here.
  const adopted = new Set<Socket>();
  const adopt = (connection: Socket) => {
    adopted.add(connection);
    connection.once('close', () => adopted.delete(connection));
    app.server.emit('connection', connection);
    connection.resume();
  };
  const adoptedClosed = () =>
    Promise.all([...adopted].map((connection) => new Promise((resolve) => connection.once('close', resolve))));

  let closing: Promise<void> | null = null;
  const close = () => {
    closing ??= (async () => {
      logger.info('shutting down: no new connections; waiting for running downloads');
      prefetcher.halt();
      const stopped = Promise.all(schedules.map((schedule) => schedule.stop()));
      const closed = Promise.all([app.close(), adoptedClosed()]);
      const deadline = new Promise<'timeout'>((resolve) =>
        setTimeout(() => resolve('timeout'), server.shutdown_timeout * 1000).unref(),
      );
      if ((await Promise.race([closed, deadline])) === 'timeout') {
        logger.warn('shutdown_timeout reached: aborting the downloads still running');
        await cache.abortFills(shuttingDown());
        app.server.closeAllConnections();
        for (const connection of adopted) connection.destroy();
        await closed;
      }
      // Prefetches hold no connection: they are aborted here, their files go to invalid/, never stay in incomplete/.
      await cache.abortFills(shuttingDown());
      await prefetcher.stop();
      await stopped;
      await cluster?.stop();
      await cache.close();
      await origin.close();
      await auth.close();
      logger.info('stopped');
    })();
    return closing;
  };
  const reloadTls = () => {
    const listener = listenerTls(server);
    if (!listener || privateSocket) return false; // behind workers, TLS is theirs (workers/owner.ts reloads it)
    (app.server as unknown as TlsServer).setSecureContext(listener);
    logger.info('cert_file, key_file and ca_file reloaded: new connections use them');
    return true;
  };
  const scheme = server.cert_file === undefined ? 'http' : 'https';
  const url = `${scheme}://${host}:${port}`;
  return { url, app, cache, prefetcher, auth, policy, origin, metrics, close, adopt, reloadTls };
}
