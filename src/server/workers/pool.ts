import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import { ImageCacheError } from '../../errors.js';
import { isMessage, type OwnerMessage, type WorkerMessage } from './ipc.js';
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
/** How long the pool waits for each worker to listen at start. */
const START_TIMEOUT_MS = 15_000;

/**
 * The owner's N HTTP workers (node:cluster: they share `bind_host:bind_port`; with Node's default round-robin
 * the owner accepts and hands connections out, so a killed owner leaves no worker bound to the port). A worker
 * that exits unexpectedly is replaced, logged, after a back-off that doubles while replacements keep dying
 * quickly (a crash loop does not spin), and its leases end. `drain` stops replacing, tells every worker to
 * drain and waits for them to exit (killing the ones still there after `drainSeconds`).
 */
export class WorkerPool {
  readonly #options: PoolOptions;
  readonly #workers = new Map<number, { worker: Worker; startedAt: number }>();
  #draining = false;
  /** Until every first worker listens: an exit then fails the start (no replacement). */
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

  /** Forks the workers and resolves with the port they listen on once every one does; rejects if one cannot. */
  async start(): Promise<number> {
    cluster.on('exit', (worker, code, signal) => this.#exited(worker, code, signal));
    try {
      const ports = await Promise.all(Array.from({ length: this.#options.count }, () => this.#fork()));
      this.#starting = false;
      return ports[0] as number;
    } catch (error) {
      await this.drain(); // the ones that did start go again; the owner then stops
      throw error;
    }
  }

  /** Sends `message` to every worker (`reload-tls`). */
  broadcast(message: OwnerMessage): void {
    for (const { worker } of this.#workers.values()) if (worker.isConnected()) worker.send(message);
  }

  /**
   * No more replacements; every worker drains and exits (killed after `drainSeconds`). `onListenersClosed` is
   * called once no worker accepts connections any more (each closed its listener, or is gone): from then on a
   * new connection is refused, as the single-process server refuses it once it logged its shutdown.
   */
  async drain(onListenersClosed: () => void = () => {}): Promise<void> {
    this.#draining = true;
    clearTimeout(this.#respawn);
    const running = [...this.#workers.values()].map(({ worker }) => worker);
    const exits = running.map((worker) => new Promise<void>((done) => {
      if (worker.isDead()) return done();
      worker.once('exit', () => done());
    }));
    const closed = running.map((worker, index) => new Promise<void>((done) => {
      void exits[index]!.then(done); // never rejects
      worker.on('message', (message: unknown) => {
        if (isMessage(message) && message.type === 'closed') done();
      });
    }));
    void Promise.all(closed).then(onListenersClosed); // never rejects: onListenersClosed only logs
    for (const worker of running) if (worker.isConnected()) worker.send({ type: 'drain' } satisfies OwnerMessage);
    const late = setTimeout(() => {
      for (const worker of running) if (!worker.isDead()) worker.process.kill('SIGKILL');
    }, this.#options.drainSeconds * 1000);
    await Promise.all(exits);
    clearTimeout(late);
  }

  #fork(): Promise<number> {
    const { env, desk, logger } = this.#options;
    const worker = cluster.fork(env);
    this.#workers.set(worker.id, { worker, startedAt: Date.now() });
    worker.on('message', (message: unknown) => {
      void desk.handle(worker.id, message, (answer) => {
        if (worker.isConnected()) worker.send(answer);
      }); // handle never rejects
    });
    let why: string | undefined;
    worker.on('message', (message: unknown) => {
      if (isMessage(message) && message.type === 'failed') why = (message as WorkerMessage & { type: 'failed' }).message;
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        worker.process.kill('SIGKILL');
        reject(new ImageCacheError('ERR_INTERNAL', `worker ${worker.process.pid} did not listen within ${START_TIMEOUT_MS / 1000} s`));
      }, START_TIMEOUT_MS);
      const failed = (code: number | null, signal: string | null) => {
        clearTimeout(timer);
        const reason = why ?? `it exited with ${signal ?? `code ${code}`}`;
        reject(new ImageCacheError('ERR_INTERNAL', `a worker could not listen on the port: ${reason}`));
      };
      worker.once('exit', failed);
      worker.once('listening', (address) => {
        clearTimeout(timer);
        worker.off('exit', failed);
        logger.info({ worker: worker.process.pid, port: address.port }, 'worker listening');
        resolve(address.port);
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
