import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { Socket } from 'node:net';
import type { Logger } from 'pino';
import { ConfigError } from '../../errors.js';
import type { ServeConfig } from '../options.js';
import { listenerTls } from '../tls.js';
import { Forwarder } from './forward.js';
import { WORKER_ENV } from './ipc.js';
import { OwnerLink } from './owner-link.js';
import { hitCandidate, serveHit } from './worker-hit.js';

/** fastify's defaults, so a connection to a worker behaves as one to the single-process server. */
const KEEP_ALIVE_TIMEOUT_MS = 72_000;
const ROUTE = '/v2/images/:imageId/file';

/**
 * The life of one HTTP worker of `workers = N` (a node:cluster worker running `imgcache serve`): it answers the
 * client connections the owner accepted on `bind_host:bind_port` and handed over (TLS is terminated here),
 * serves hits of cached images itself when the owner allows it (`worker-hit.ts`) and forwards every other
 * request to the owner (`forward.ts`). It opens no cache, no origin and no store: the owner owns them all.
 *
 * It stops on the owner's `drain` (and on SIGTERM/SIGINT, which a terminal sends the whole process group): its
 * connections are closed as soon as they are idle, running requests get `shutdown_timeout` seconds, then it
 * exits. It exits at once when the owner is gone (the IPC channel closed): nothing is left to forward to.
 */
export async function runWorker(config: ServeConfig, logger: Logger): Promise<void> {
  const socketPath = process.env[WORKER_ENV.socket];
  if (!socketPath || !process.send) throw new ConfigError('a workers process was started without its owner');
  const hits = process.env[WORKER_ENV.hits] === '1';
  // No extra bindings: a worker's request lines are the app's (`pid` says which process wrote them).
  const log = logger;
  const tls = listenerTls(config.server);
  const forwarder = new Forwarder(socketPath, tls ? 'https' : 'http');
  const link = new OwnerLink((command, handle) => {
    if (command.type === 'connection' && handle instanceof Socket) accept(handle);
    else if (command.type === 'drain') drain();
    else if (command.type === 'reload-tls') reload();
  });

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const imageId = hits ? hitCandidate(req) : null;
    if (imageId === null) {
      forwarder.forward(req, res);
      return;
    }
    const started = performance.now();
    serveHit(imageId, req, res, link, log).then(
      (served) => {
        if (!served) {
          forwarder.forward(req, res);
          return;
        }
        res.once('close', () => answered(link, log, req, res, started));
      },
      (error: unknown) => {
        log.warn({ err: error, imageId }, 'a hit could not be served by this worker: forwarding it');
        if (res.headersSent) res.destroy();
        else forwarder.forward(req, res);
      },
    );
  };
  const server: Server | HttpsServer = tls ? createHttpsServer(tls, handle) : createServer(handle);
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.requestTimeout = 0;
  // node:http sets up its connection tracking (closeIdleConnections, the headersTimeout checks) when the server
  // starts listening. This one never listens (its connections come from the owner), so it is told it does.
  server.emit('listening');

  // The connections this worker answers: it never listens, so the server cannot count them for a drain.
  const open = new Set<Socket>();
  let draining = false;
  const accept = (socket: Socket) => {
    if (draining) {
      socket.destroy();
      return;
    }
    open.add(socket);
    socket.once('close', () => {
      open.delete(socket);
      if (draining && open.size === 0) exit(0);
    });
    server.emit('connection', socket); // http (or tls, then http) takes it from here, as from a listener
  };
  const drain = () => {
    if (draining) return;
    draining = true;
    log.info('worker draining: no new connections; waiting for running downloads');
    if (open.size === 0) return exit(0);
    // Kept-alive connections are closed as soon as their response is done, so the drain ends with them.
    server.closeIdleConnections();
    setInterval(() => server.closeIdleConnections(), 100).unref();
    setTimeout(() => {
      for (const socket of open) socket.destroy();
    }, config.server.shutdown_timeout * 1000).unref();
  };
  const exit = (code: number) => {
    forwarder.close();
    process.exit(code);
  };
  const reload = () => {
    try {
      const fresh = listenerTls(config.server);
      if (fresh && 'setSecureContext' in server) server.setSecureContext(fresh);
    } catch (error) {
      log.error({ err: error }, 'TLS reload failed: the previous certificate stays in force');
    }
  };
  process.once('disconnect', () => {
    log.warn('the owner process is gone: exiting');
    exit(1);
  });
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, drain);
  process.on('SIGHUP', () => {}); // the owner re-reads TLS and tells us; a terminal's hangup must not kill us
  link.notify({ type: 'ready' });
}

/** Hits this worker answered, for request ids unique across the processes (fastify's are `req-N` per process). */
let requests = 0;

/** The request line of a hit this worker served, as the app writes it, and its latency for /metrics. */
function answered(link: OwnerLink, log: Logger, req: IncomingMessage, res: ServerResponse, started: number): void {
  const seconds = (performance.now() - started) / 1000;
  const status = res.statusCode;
  requests += 1;
  log.info(
    { reqId: `req-${process.pid}-${requests}`, method: req.method, path: req.url, status, cache: 'HIT', ms: Math.round(seconds * 1000) },
    'request',
  );
  link.notify({ type: 'observe', method: req.method ?? 'GET', route: ROUTE, status, seconds });
}
