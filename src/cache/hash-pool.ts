import { Worker } from 'node:worker_threads';
import { HashWorkerError } from '../errors.js';
import { type ComputedDigests, checkHashAlgorithm, DEFAULT_HASH_ALGO, ImageHasher } from './digest.js';

/**
 * Hashing off the main thread. MD5 and SHA-512 each run at a few hundred MiB/s on a server core, slower than a
 * disk write from the page cache: computed inline they cap a fill's throughput. Here MD5 runs on one worker
 * thread and the multihash on another, in parallel with each other and with the main thread's I/O.
 *
 * The worker is a tiny CommonJS script given as source (`eval`), so it needs no build step and no loader.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hashes = new Map();
parentPort.on('message', (message) => {
  if (message.type === 'open') {
    hashes.set(message.id, createHash(message.algorithm));
  } else if (message.type === 'update') {
    hashes.get(message.id).update(message.chunk);
    parentPort.postMessage({ type: 'ack', id: message.id, bytes: message.chunk.byteLength });
  } else if (message.type === 'digest') {
    const hash = hashes.get(message.id);
    hashes.delete(message.id);
    parentPort.postMessage({ type: 'digest', id: message.id, hex: hash.digest('hex') });
  } else if (message.type === 'drop') {
    hashes.delete(message.id);
  }
});
`;

/** Bytes a session may have queued at its workers before `update` makes the caller wait. */
const IN_FLIGHT_LIMIT = 4 << 20;

type WorkerReply = { type: 'ack'; id: number; bytes: number } | { type: 'digest'; id: number; hex: string };

/** Feeds bytes in order and returns the digests; `update` resolves when the caller may send more. */
export interface StreamHasher {
  update(chunk: Buffer): Promise<void> | void;
  digests(): Promise<ComputedDigests>;
  /** Forget the session (the fill failed). */
  discard(): void;
}

/** What a session hears from a worker: bytes hashed, or the worker's death. */
interface SessionListener {
  ack(bytes: number): void;
  fail(error: Error): void;
}

/** Options of a {@link HashPool}. */
export interface HashPoolOptions {
  /**
   * Starts one hash thread running `source` (CommonJS, `eval`). Tests pass a factory to inject a dying worker.
   * @default `new Worker(source, { eval: true })`
   */
  spawnWorker?: (source: string) => Worker;
}

class HashWorker {
  readonly #worker: Worker;
  readonly #acks = new Map<number, SessionListener>();
  readonly #digests = new Map<number, { resolve: (hex: string) => void; reject: (error: Error) => void }>();
  #sessions = 0;
  #failure: Error | null = null;

  constructor(spawn: (source: string) => Worker) {
    this.#worker = spawn(WORKER_SOURCE);
    this.#worker.unref(); // only open sessions keep the process alive
    this.#worker.on('message', (reply: WorkerReply) => {
      if (reply.type === 'ack') this.#acks.get(reply.id)?.ack(reply.bytes);
      else {
        this.#digests.get(reply.id)?.resolve(reply.hex);
        this.#digests.delete(reply.id);
      }
    });
    this.#worker.on('error', (error) => this.#fail(error));
    this.#worker.on('exit', (code) => this.#fail(new Error(`hash worker exited with code ${code}`)));
  }

  /** The worker died: sessions on it fail, and the pool starts a new one for the next session. */
  get failed(): boolean {
    return this.#failure !== null;
  }

  open(id: number, algorithm: string, listener: SessionListener): void {
    if (this.#failure) throw this.#failure;
    if (this.#sessions++ === 0) this.#worker.ref();
    this.#acks.set(id, listener);
    this.#worker.postMessage({ type: 'open', id, algorithm });
  }

  update(id: number, chunk: Uint8Array): void {
    if (this.#failure) throw this.#failure;
    this.#worker.postMessage({ type: 'update', id, chunk }, [chunk.buffer as ArrayBuffer]);
  }

  digest(id: number): Promise<string> {
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise<string>((resolve, reject) => {
      this.#digests.set(id, { resolve, reject });
      this.#worker.postMessage({ type: 'digest', id });
    }).finally(() => this.#close(id));
  }

  drop(id: number): void {
    if (!this.#acks.has(id)) return;
    if (!this.#failure) this.#worker.postMessage({ type: 'drop', id });
    this.#close(id);
  }

  terminate(): Promise<number> {
    return this.#worker.terminate();
  }

  #close(id: number): void {
    if (!this.#acks.delete(id)) return;
    if (--this.#sessions === 0) this.#worker.unref();
  }

  #fail(error: Error): void {
    this.#failure ??= new HashWorkerError(`hash worker failed: ${error.message}`, { cause: error });
    for (const pending of this.#digests.values()) pending.reject(this.#failure);
    this.#digests.clear();
    // A session waiting for acks (congested) would wait forever: wake it with the error.
    for (const listener of this.#acks.values()) listener.fail(this.#failure);
  }
}

/** Two hash threads shared by every fill of a cache. */
export class HashPool {
  #workers: [HashWorker, HashWorker] | null = null;
  #nextId = 1;
  readonly #spawn: (source: string) => Worker;

  constructor(options: HashPoolOptions = {}) {
    this.#spawn = options.spawnWorker ?? ((source) => new Worker(source, { eval: true }));
  }

  /** A hasher whose MD5 and multihash run on the pool's two threads. */
  open(algorithm: string = DEFAULT_HASH_ALGO): StreamHasher {
    const multihash = checkHashAlgorithm(algorithm);
    if (this.#workers?.some((worker) => worker.failed)) {
      const dead = this.#workers;
      this.#workers = null;
      // Sessions still open on the survivor end by themselves; terminating it only frees the thread sooner.
      for (const worker of dead) if (!worker.failed) worker.terminate().catch(() => {});
    }
    this.#workers ??= [new HashWorker(this.#spawn), new HashWorker(this.#spawn)];
    const [md5Worker, multiWorker] = this.#workers;
    const id = this.#nextId++;
    // Bytes queued at each thread: the caller waits while either is over the limit (MD5 and SHA-512 run at
    // different speeds, and neither queue may grow without bound).
    const inFlight = [0, 0];
    let bytes = 0;
    let waiter: { resolve: () => void; reject: (error: Error) => void } | null = null;
    let failure: Error | null = null;
    const congested = () => Math.max(inFlight[0] ?? 0, inFlight[1] ?? 0) >= IN_FLIGHT_LIMIT;
    const listener = (index: 0 | 1): SessionListener => ({
      ack(n) {
        inFlight[index] = (inFlight[index] ?? 0) - n;
        if (waiter && !congested()) {
          const wake = waiter;
          waiter = null;
          wake.resolve();
        }
      },
      fail(error) {
        failure ??= error;
        const wake = waiter;
        waiter = null;
        wake?.reject(error);
      },
    });
    md5Worker.open(id, 'md5', listener(0));
    try {
      multiWorker.open(id, multihash, listener(1));
    } catch (error) {
      md5Worker.drop(id);
      throw error;
    }
    return {
      update(chunk: Buffer): Promise<void> | void {
        if (failure) throw failure;
        // One copy per thread, each transferred: the caller's buffer stays valid (consumers share it).
        md5Worker.update(id, new Uint8Array(chunk));
        multiWorker.update(id, new Uint8Array(chunk));
        bytes += chunk.length;
        inFlight[0] = (inFlight[0] ?? 0) + chunk.length;
        inFlight[1] = (inFlight[1] ?? 0) + chunk.length;
        if (!congested()) return;
        return new Promise<void>((resolve, reject) => {
          waiter = { resolve, reject };
        });
      },
      async digests(): Promise<ComputedDigests> {
        const [checksum, osHashValue] = await Promise.all([md5Worker.digest(id), multiWorker.digest(id)]);
        return { size: bytes, checksum, osHashAlgo: multihash, osHashValue };
      },
      discard(): void {
        md5Worker.drop(id);
        multiWorker.drop(id);
      },
    };
  }

  async close(): Promise<void> {
    const workers = this.#workers;
    this.#workers = null;
    if (workers) await Promise.all(workers.map((worker) => worker.terminate()));
  }
}

/** The same interface, hashing on the calling thread (`hashThreads = 0`, or tiny inputs). */
export function inlineHasher(algorithm: string = DEFAULT_HASH_ALGO): StreamHasher {
  const hasher = new ImageHasher(algorithm);
  return {
    update: (chunk) => hasher.update(chunk),
    digests: async () => hasher.digests(),
    discard: () => {},
  };
}
