import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { HashWorkerError } from '../errors.js';
import { type ComputedDigests, type DigestPlan, DEFAULT_HASH_ALGO, ImageHasher } from './digest.js';
import { END, HASHED, HashThread, newRing, type Ring, SEQ, SLOT_SIZE, SLOTS, WRITTEN } from './hash-thread.js';

/**
 * Hashing off the main thread. MD5 and SHA-512 each run at a few hundred MiB/s on a server core, slower than a
 * disk write from the page cache: computed inline they cap a fill's throughput. Here each digest a fill computes
 * (usually one, see `planDigests`) runs on a thread of its own, in parallel with the main thread's I/O.
 *
 * Bytes reach the threads through a small ring of SharedArrayBuffer slots (SLOTS x SLOT_SIZE per fill): the main
 * thread copies each chunk once into free slots, every thread of the session hashes every slot, and a slot is free
 * again when all of them have. Nothing is allocated per chunk and a fill's hashing memory is the ring, whatever the
 * image size. The threads sleep in `Atomics.wait` on the ring's control words; the main thread never blocks (it
 * awaits `Atomics.waitAsync` when the ring is full).
 */

/** `Atomics.waitAsync` (Node >= 16) is in ES2024's lib, not in the ES2023 one this project compiles against. */
type WaitAsync = (array: Int32Array, index: number, value: number) => { async: boolean; value: Promise<string> | string };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

/** Feeds bytes in order and returns the digests; `update` resolves when the caller may send more. */
export interface StreamHasher {
  update(chunk: Buffer): Promise<void> | void;
  digests(): Promise<ComputedDigests>;
  /** Forget the session (the fill failed). */
  discard(): void;
}

/** Options of a {@link HashPool}. */
export interface HashPoolOptions {
  /**
   * Starts one hash thread running `source` (CommonJS, `eval`). Tests pass a factory to inject a dying worker.
   * @default `new Worker(source, { eval: true })`
   */
  spawnWorker?: (source: string) => Worker;
  /** Hash threads at most; a fill that finds none free hashes on the main thread. @default the core count, at least 2 */
  maxThreads?: number;
}

/** Hash threads shared by every fill of a cache: one per digest a fill computes, while it runs. */
export class HashPool {
  readonly #spawn: (source: string) => Worker;
  readonly #maxThreads: number;
  readonly #idle: HashThread[] = [];
  readonly #all = new Set<HashThread>();
  readonly #rings: Ring[] = [];

  constructor(options: HashPoolOptions = {}) {
    this.#spawn = options.spawnWorker ?? ((source) => new Worker(source, { eval: true }));
    this.#maxThreads = options.maxThreads ?? Math.max(2, availableParallelism());
  }

  /**
   * A hasher computing `plan`'s digests, each on a thread of its own. When the pool has not enough threads left
   * (many fills at once), the session hashes on the calling thread instead: slower, never wrong.
   */
  open(plan: DigestPlan): StreamHasher {
    const algorithms = [...(plan.md5 ? ['md5'] : []), ...(plan.multihash ? [plan.multihash] : [])];
    const free = this.#idle.length + this.#maxThreads - this.#all.size;
    if (algorithms.length > free) return inlineHasher(plan);
    const threads = algorithms.map(() => this.#take());
    const ring = this.#rings.pop() ?? newRing();
    ring.control.fill(0);
    return new RingSession(ring, threads, algorithms, plan, (clean) => {
      for (const thread of threads) if (!thread.failure) this.#idle.push(thread);
      if (clean) this.#rings.push(ring);
    });
  }

  async close(): Promise<void> {
    const threads = [...this.#all];
    this.#all.clear();
    this.#idle.length = 0;
    // Sessions still running were told to end (a failed fill discards its own): let them answer, then stop.
    const stop = async (thread: HashThread) => {
      await thread.answered(1000);
      await thread.terminate();
    };
    await Promise.all(threads.map(stop));
  }

  #take(): HashThread {
    const idle = this.#idle.pop();
    if (idle) return idle;
    const thread = new HashThread(this.#spawn);
    thread.onFailure = () => {
      this.#all.delete(thread);
      const at = this.#idle.indexOf(thread);
      if (at >= 0) this.#idle.splice(at, 1);
    };
    this.#all.add(thread);
    return thread;
  }
}

/** One fill's hashing over a ring and its threads (thread `i` hashes `algorithms[i]`). */
class RingSession implements StreamHasher {
  readonly #ring: Ring;
  readonly #replies: Array<Promise<string | null>>;
  readonly #plan: DigestPlan;
  readonly #done: (clean: boolean) => void;
  /** Slots handed to the threads so far; the next one is being filled with `#slotUsed` bytes. */
  #written = 0;
  #slotUsed = 0;
  #bytes = 0;
  #failure: HashWorkerError | null = null;
  readonly #failed: Promise<never>;
  #ended = false;

  constructor(ring: Ring, threads: HashThread[], algorithms: string[], plan: DigestPlan, done: (clean: boolean) => void) {
    this.#ring = ring;
    this.#plan = plan;
    this.#done = done;
    let reject!: (error: Error) => void;
    this.#failed = new Promise<never>((_resolve, fail) => (reject = fail));
    this.#failed.catch(() => {}); // raced against by every wait; never an unhandled rejection
    this.#replies = threads.map((thread, index) => {
      const reply = thread.run(algorithms[index] as string, ring, index);
      reply.catch((error: HashWorkerError) => {
        this.#failure ??= error;
        reject(error);
        Atomics.notify(ring.control, HASHED + index); // wake a waitAsync on this thread's counter
      });
      return reply;
    });
  }

  update(chunk: Buffer): Promise<void> | void {
    if (this.#failure) throw this.#failure;
    this.#bytes += chunk.length;
    const offset = this.#fill(chunk, 0);
    if (offset < chunk.length) return this.#rest(chunk, offset);
  }

  async digests(): Promise<ComputedDigests> {
    // The slot being filled had room when its filling began. After a failure, ending still releases the threads.
    if (!this.#failure && this.#slotUsed > 0) this.#publish();
    this.#end(1);
    let hexes: Array<string | null>;
    try {
      hexes = await Promise.all(this.#replies);
    } finally {
      this.#done(this.#failure === null);
    }
    const multihash = this.#plan.multihash;
    return {
      size: this.#bytes,
      checksum: this.#plan.md5 ? (hexes[0] ?? null) : null,
      osHashAlgo: multihash,
      osHashValue: multihash ? (hexes[this.#plan.md5 ? 1 : 0] ?? null) : null,
    };
  }

  discard(): void {
    if (this.#ended) return;
    this.#end(2);
    // An update waiting for room (#rest) wakes up and sees the session ended.
    for (let index = 0; index < this.#replies.length; index += 1) Atomics.notify(this.#ring.control, HASHED + index);
    // The threads are free once they answered `dropped` (their messages queue in order, so the next session may
    // already be handed to them); the ring is reused only when every thread is known to have left it.
    Promise.all(this.#replies).then(
      () => this.#done(true),
      () => this.#done(false),
    );
  }

  #end(code: 1 | 2): void {
    this.#ended = true;
    const { control } = this.#ring;
    Atomics.store(control, END, code);
    Atomics.add(control, SEQ, 1);
    Atomics.notify(control, SEQ);
  }

  /**
   * Copies as much of `chunk` from `offset` as there is free room for; returns where it stopped. Chunks are packed
   * into the slot being filled (origins send 16-64 KiB chunks), which is handed to the threads once full.
   */
  #fill(chunk: Buffer, offset: number): number {
    while (offset < chunk.length && this.#written - this.#slowest().hashed < SLOTS) {
      const slot = this.#written % SLOTS;
      const length = Math.min(SLOT_SIZE - this.#slotUsed, chunk.length - offset);
      chunk.copy(this.#ring.bytes, slot * SLOT_SIZE + this.#slotUsed, offset, offset + length);
      this.#slotUsed += length;
      offset += length;
      if (this.#slotUsed === SLOT_SIZE) this.#publish();
    }
    return offset;
  }

  /** Hands the slot being filled to the threads. */
  #publish(): void {
    const { lengths, control } = this.#ring;
    lengths[this.#written % SLOTS] = this.#slotUsed;
    this.#slotUsed = 0;
    this.#written += 1;
    Atomics.store(control, WRITTEN, this.#written);
    Atomics.add(control, SEQ, 1);
    Atomics.notify(control, SEQ);
  }

  /** The ring is full: wait for the slowest thread to free a slot, then go on copying. */
  async #rest(chunk: Buffer, offset: number): Promise<void> {
    while (offset < chunk.length) {
      const { index, hashed } = this.#slowest();
      const wait = waitAsync(this.#ring.control, HASHED + index, hashed);
      if (wait.async) await Promise.race([wait.value, this.#failed]);
      if (this.#failure) throw this.#failure;
      if (this.#ended) return; // discarded meanwhile: the threads left the ring
      offset = this.#fill(chunk, offset);
    }
  }

  #slowest(): { index: number; hashed: number } {
    const { control } = this.#ring;
    let slowest = { index: 0, hashed: Atomics.load(control, HASHED) };
    for (let index = 1; index < this.#replies.length; index += 1) {
      const hashed = Atomics.load(control, HASHED + index);
      if (hashed < slowest.hashed) slowest = { index, hashed };
    }
    return slowest;
  }
}

/** The same interface, hashing on the calling thread (no pool, or no thread free). */
export function inlineHasher(plan: DigestPlan = { md5: true, multihash: DEFAULT_HASH_ALGO }): StreamHasher {
  const hasher = new ImageHasher(plan.multihash ?? DEFAULT_HASH_ALGO, { md5: plan.md5, multihash: plan.multihash !== null });
  return {
    update: (chunk) => hasher.update(chunk),
    digests: async () => hasher.digests(),
    discard: () => {},
  };
}
