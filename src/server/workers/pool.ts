import cluster, { type Worker } from 'node:cluster';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { ImageCacheError } from '../../errors.js';
import { isMessage, type OwnerMessage } from './ipc.js';
import type { LeaseDesk } from './leases.js';

/** What the owner's pool of HTTP workers is made of. */
export interface PoolOptions {
  count: number;
  /** Environment added for the workers (the owner's socket, whether they serve hits). */
  env: Record<string, string>;
  desk: LeaseDesk;
  logger: Logger;
  /** Seconds a drain may take before the workers still running are killed (`shutdown_timeout` plus a margin). */
  drainSeconds: number;
}

/** A worker that dies within this long of its start counts as a crash loop: its replacement waits longer. */
const QUICK_DEATH_MS = 5_000;
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 30_000;
/** How long the pool waits for each worker to be ready at start. */
const START_TIMEOUT_MS = 15_000;
/** Connections held while no worker is ready (all of them died at once): past this, new ones are dropped. */
const MAX_WAITING = 1024;

/**
 * The owner's N HTTP workers (node:cluster processes running `imgcache serve` again). The owner keeps the
 * listening socket: it accepts each connection without reading from it and hands it to the next ready worker,
 * round-robin, over IPC (as node:cluster's round-robin does, but the listener is the owner's, so it stays open
 * while workers come and go: when every worker died at once, connections wait for the replacements instead of
 * the port closing). A worker that exits unexpectedly is replaced, logged, after a back-off that doubles while
 * replacements keep dying quickly (a crash loop does not spin), and its leases end. `drain` stops replacing,
 * tells every worker to drain and waits for them to exit (killing the ones still there after `drainSeconds`).
 */
export class WorkerPool {
  readonly #options: PoolOptions;
  readonly #workers = new Map<number, { worker: Worker; startedAt: number; ready: boolean }>();
  readonly #waiting: Socket[] = [];
  #next = 0;
  #draining = false;
  /** Until every first worker is ready: an exit then fails the start (no replacement). */
  #starting = true;
  #backoffMs = BACKOFF_MIN_MS;
  #respawn: NodeJS.Timeout | undefined;

  constructor(options: PoolOptions) {
    this.#options = options;
  }

  /** Process ids of the workers running now. */
  get pids(): number[] {
    return [...this.#workers.values()].flatMap(({ worker }) => (worker.process.pid ? [worker.process.pid] : []));
  }

  /** Forks the workers and resolves once every one is ready; rejects (the ones started are drained) if one fails. */
  async start(): Promise<void> {
    cluster.on('exit', (worker, code, signal) => this.#exited(worker, code, signal));
    try {
      await Promise.all(Array.from({ length: this.#options.count }, () => this.#fork()));
      this.#starting = false;
    } catch (error) {
      await this.drain();
      throw error;
    }
  }

  /** Hands a connection the owner accepted (paused: nothing read yet) to the next ready worker. */
  dispatch(socket: Socket): void {
    if (this.#draining) {
      socket.destroy();
      return;
    }
    const ready = [...this.#workers.values()].filter((entry) => entry.ready && entry.worker.isConnected());
    if (ready.length === 0) {
      if (this.#waiting.length >= MAX_WAITING) socket.destroy();
      else this.#waiting.push(socket);
      return;
    }
    const { worker } = ready[this.#next++ % ready.length]!;
    worker.send({ type: 'connection' } satisfies OwnerMessage, socket, { keepOpen: false }, (error: Error | null) => {
      // Not handed over (the worker died just now): the client gets a closed connection, never a wrong answer.
      if (error) socket.destroy();
    });
  }

  /** Sends `message` to every worker (`reload-tls`). */
  broadcast(message: OwnerMessage): void {
    for (const { worker } of this.#workers.values()) if (worker.isConnected()) worker.send(message);
  }

  /** No more connections or replacements; every worker drains and exits (killed after `drainSeconds`). */
  async drain(): Promise<void> {
    this.#draining = true;
    clearTimeout(this.#respawn);
    for (const socket of this.#waiting.splice(0)) socket.destroy();
    const running = [...this.#workers.values()].map(({ worker }) => worker);
    const exits = running.map((worker) => new Promise<void>((done) => {
      if (worker.isDead()) return done();
      worker.once('exit', () => done());
    }));
    for (const worker of running) if (worker.isConnected()) worker.send({ type: 'drain' } satisfies OwnerMessage);
    const late = setTimeout(() => {
      for (const worker of running) if (!worker.isDead()) worker.process.kill('SIGKILL');
    }, this.#options.drainSeconds * 1000);
    await Promise.all(exits);
    clearTimeout(late);
  }

  #fork(): Promise<void> {
    const { env, desk, logger } = this.#options;
    const worker = cluster.fork(env);
    const entry = { worker, startedAt: Date.now(), ready: false };
    this.#workers.set(worker.id, entry);
    worker.on('message', (message: unknown) => {
      void desk.handle(worker.id, message, (answer) => {
        if (worker.isConnected()) worker.send(answer);
      }); // handle never rejects
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        worker.process.kill('SIGKILL');
        reject(new ImageCacheError('ERR_INTERNAL', `worker ${worker.process.pid} was not ready within ${START_TIMEOUT_MS / 1000} s`));
      }, START_TIMEOUT_MS);
      const failed = (code: number | null, signal: string | null) => {
        clearTimeout(timer);
        reject(new ImageCacheError('ERR_INTERNAL', `a worker exited before it was ready (${signal ?? `code ${code}`})`));
      };
      worker.once('exit', failed);
      worker.on('message', (message: unknown) => {
        if (!isMessage(message) || message.type !== 'ready' || entry.ready) return;
        clearTimeout(timer);
        worker.off('exit', failed);
        entry.ready = true;
        logger.info({ worker: worker.process.pid }, 'worker ready');
        for (const socket of this.#waiting.splice(0)) this.dispatch(socket);
        resolve();
      });
    });
  }

  #exited(worker: Worker, code: number | null, signal: string | null): void {
    const entry = this.#workers.get(worker.id);
    if (!entry) return;
    this.#workers.delete(worker.id);
    const { desk, logger } = this.#options;
    desk.dropWorker(worker.id).catch((error: unknown) => logger.error({ err: error }, 'ending a dead worker\'s leases failed'));
    if (this.#draining || this.#starting) return;
    const quick = Date.now() - entry.startedAt < QUICK_DEATH_MS;
    this.#backoffMs = quick ? Math.min(this.#backoffMs * 2, BACKOFF_MAX_MS) : BACKOFF_MIN_MS;
    const delay = quick ? this.#backoffMs : 0;
    logger.error(
      { worker: worker.process.pid, code, signal, replaceInMs: delay },
      'a worker exited unexpectedly: replacing it (its downloads in flight were cut)',
    );
    this.#respawn = setTimeout(() => {
      if (this.#draining) return;
      this.#fork().catch((error: unknown) => logger.error({ err: error }, 'a replacement worker failed to start'));
    }, delay);
  }
}
