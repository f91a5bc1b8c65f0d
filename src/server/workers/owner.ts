import cluster from 'node:cluster';
import { rm } from 'node:fs/promises';
import { createServer as createListener, type Server as Listener, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { ServeConfig } from '../options.js';
import { type RunningServer, type StartServerOptions, startServer } from '../server.js';
import { listenerTls } from '../tls.js';
import { WORKER_ENV } from './ipc.js';
import { ownerTakes } from './route.js';
import { LeaseDesk } from './leases.js';
import { WorkerPool } from './pool.js';
import { ownerSocketDir } from './socket-dir.js';
import { withNodeFlags } from './node-flags.js';

/** What `serve` holds with `workers = N`: the public URL, the graceful stop and the TLS reload. */
export interface RunningOwner {
  /** `http(s)://bind_host:port`, the port the workers listen on. */
  url: string;
  /** The owner's server (its app listens on the private socket only). */
  server: RunningServer;
  /** Process ids of the workers running now. */
  workerPids(): number[];
  /** SIGTERM: every worker drains (running downloads get `shutdown_timeout`), then the owner stops as today. */
  close(): Promise<void>;
  /** SIGHUP: checks `cert_file`, `key_file` and `ca_file` here (throws ConfigError), then every worker re-reads them. */
  reloadTls(): boolean;
}

/** Seconds a worker may take past `shutdown_timeout` to exit before it is killed. */
const DRAIN_MARGIN_SECONDS = 5;

/**
 * `serve` with `workers = N > 1` (Glance's option), the nginx way: this process is the owner. It runs the whole
 * single-process server (fills, admission and the size cap, the prefetcher, pruner and cleaner, the cluster, the
 * API) on a private Unix socket, listens on `bind_host:bind_port` and hands each connection to one of N workers
 * (`pool.ts`, `worker.ts`). A miss is one fill here whichever worker received it; the workers stream hits of
 * cached images themselves under a lease from here (`leases.ts`), so hits, `last_accessed` and eviction are the
 * owner's.
 *
 * The socket lives in a private directory (`socket-dir.ts`): only this user can connect, which matters because
 * the owner trusts its callers' `X-Forwarded-*`, and a caller there would skip `ca_file`'s client certificates.
 */
export async function startWithWorkers(
  config: ServeConfig,
  logger: Logger,
  options: Pick<StartServerOptions, 'now'> = {},
): Promise<RunningOwner> {
  const dir = await ownerSocketDir();
  const socket = join(dir, 'owner.sock');
  let server: RunningServer;
  try {
    server = await startServer(config, logger, { ...options, privateSocket: socket });
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  const desk = new LeaseDesk(server, logger);
  // The workers run this same command line (`imgcache serve ...`): node:cluster forks process.argv[1] again.
  cluster.setupPrimary({ silent: false, execArgv: withNodeFlags(process.execArgv) });
  const pool = new WorkerPool({
    count: config.server.workers,
    env: { [WORKER_ENV.socket]: socket, [WORKER_ENV.hits]: server.origin.authorizesCallers ? '0' : '1' },
    desk,
    logger,
    drainSeconds: config.server.shutdown_timeout + DRAIN_MARGIN_SECONDS,
  });
  // The public port is the owner's for its whole life; connections are accepted unread and handed to workers.
  // Plain http only: with TLS the bytes are encrypted, and the workers terminate TLS.
  const route = (connection: Socket) => {
    if (config.server.cert_file !== undefined) return pool.dispatch(connection);
    ownerTakes(connection, server.cache.driver, server.origin.authorizesCallers).then(
      (mine) => {
        if (!mine || connection.destroyed) return pool.dispatch(connection);
        server.adopt(connection); // the app parses the request from its first byte
      },
      () => pool.dispatch(connection), // never rejects; the guard that no rejection is ever unhandled
    );
  };
  const listener: Listener = createListener({ pauseOnConnect: true }, route);
  let port: number;
  try {
    port = await listen(listener, config.server.bind_host, config.server.bind_port);
    await pool.start();
  } catch (error) {
    listener.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  logger.info({ workers: pool.pids, socket }, `serving with ${config.server.workers} workers`);
  const { bind_host: bindHost, cert_file: certFile } = config.server;
  const host = bindHost.includes(':') ? `[${bindHost}]` : bindHost;
  const scheme = certFile === undefined ? 'http' : 'https';
  let closing: Promise<void> | null = null;
  return {
    url: `${scheme}://${host}:${port}`,
    server,
    workerPids: () => pool.pids,
    close: () =>
      (closing ??= (async () => {
        const closed = new Promise<void>((done) => listener.close(() => done()));
        logger.info('shutting down: no new connections; the workers finish their running downloads');
        await pool.drain();
        // The downloads the owner answers itself are the app's connections now: its close gives them
        // shutdown_timeout, then cuts them, and with them the listener's last connections.
        await server.close();
        await closed;
        await rm(dir, { recursive: true, force: true });
      })()),
    reloadTls: () => {
      if (!listenerTls(config.server)) return false;
      pool.broadcast({ type: 'reload-tls' });
      logger.info('cert_file, key_file and ca_file reloaded: the workers use them for new connections');
      return true;
    },
  };
}

/** Listens on `host:port` and resolves with the port bound (`port` 0: a free one). */
function listen(listener: Listener, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    listener.once('error', reject);
    listener.listen({ host, port }, () => {
      listener.off('error', reject);
      const address = listener.address();
      resolve(typeof address === 'object' && address ? address.port : port);
    });
  });
}
