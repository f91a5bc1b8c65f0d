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
  /** Takes `chunk` (copied: the caller may reuse it once the returned promise, if any, has settled). */
  update(chunk: Buffer): Promise<void> | void;
  digests(): Promise<ComputedDigests>;
  /** Forget the session (the fill failed). */
  discard(): void;
  /** The session's memory doubles as the file's write buffers ({@link SlotTee}); null when it has none to share. */
  readonly tee: SlotTee | null;
}

/**
 * A ring whose slots are also written to the fill's file: each slot, once full (the last one at the end), is
 * handed to `write`, and is reused only after the file has been reported past it. One copy of every byte (from
 * the socket's buffer into the slot) serves the hash threads and the disk; the writes are 1 MiB each.
 */
export interface SlotTee {
  /** From now on, every published slot goes to `write` (in order; its bytes stay put until {@link fileReached}). */
  start(write: (slot: Buffer) => void): void;
  /** The file holds the session's first `bytes` bytes. */
  fileReached(bytes: number): void;
  /** The file stopped (a disk fault): slots no longer wait for it. */
  stop(): void;
  /** Bytes of the session in the ring so far (a chunk still waiting for room is counted once it is in). */
  readonly copied: number;
  /**
   * Where the session's next bytes go, when there is room: a socket can read into it, and `update` with a view of
   * exactly this memory takes the bytes where they are (no copy). Null when the ring is full.
   */
  freeTail(): Buffer | null;
  /** A copy of bytes `[from, to)` of the session, which must not have reached the file (their slots are kept). */
  copy(from: number, to: number): Buffer;
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
class RingSession implements StreamHasher, SlotTee {
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
  /** The file's writer while teeing ({@link SlotTee}), the bytes published to it and those it reported written. */
  #write: ((slot: Buffer) => void) | null = null;
  #published = 0;
  #fileBytes = 0;
  #fileMoved: (() => void) | null = null;
  /** Discarded while teeing: writes in flight may still read the ring, which is therefore not reused. */
  #tainted = false;

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

  get tee(): SlotTee {
    return this;
  }

  start(write: (slot: Buffer) => void): void {
    this.#write = write;
  }

  fileReached(bytes: number): void {
    this.#fileBytes = bytes;
    this.#wakeForFile();
  }

  stop(): void {
    this.#write = null;
    this.#wakeForFile();
  }

  freeTail(): Buffer | null {
    if (this.#ended || this.#failure || !this.#hasRoom()) return null;
    const start = this.#tailStart();
    return this.#ring.bytes.subarray(start, start + SLOT_SIZE - this.#slotUsed);
  }

  get copied(): number {
    return this.#published + this.#slotUsed;
  }

  copy(from: number, to: number): Buffer {
    const out = Buffer.allocUnsafe(to - from);
    for (let at = from; at < to; ) {
      const slot = Math.floor(at / SLOT_SIZE);
      const offset = at - slot * SLOT_SIZE;
      const length = Math.min(SLOT_SIZE - offset, to - at);
      const start = (slot % SLOTS) * SLOT_SIZE + offset;
      this.#ring.bytes.copy(out, at - from, start, start + length);
      at += length;
    }
    return out;
  }

  update(chunk: Buffer): Promise<void> | void {
    if (this.#failure) throw this.#failure;
    this.#bytes += chunk.length;
    if (this.#inPlace(chunk)) return;
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
      // Teeing: the ring is the file's write buffers until the file has every byte (or stopped).
      while (this.#write && this.#fileBytes < this.#published) {
        await new Promise<void>((resolve) => (this.#fileMoved = resolve));
      }
    } finally {
      this.#done(this.#failure === null && !this.#tainted);
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
    // A teeing ring may still be read by file writes in flight: it is not reused. A `digests()` waiting for the
    // file stops waiting.
    if (this.#write) this.#tainted = true;
    this.#write = null;
    this.#wakeForFile();
    if (this.#ended) return;
    this.#end(2);
    // An update waiting for room (#rest) wakes up and sees the session ended.
    for (let index = 0; index < this.#replies.length; index += 1) Atomics.notify(this.#ring.control, HASHED + index);
    // The threads are free once they answered `dropped` (their messages queue in order, so the next session may
    // already be handed to them); the ring is reused only when every thread is known to have left it.
    Promise.all(this.#replies).then(
      () => this.#done(!this.#tainted),
      () => this.#done(false),
    );
  }

  #wakeForFile(): void {
    const moved = this.#fileMoved;
    this.#fileMoved = null;
    moved?.();
  }

  /** Slots the file has: all of them when not teeing. */
  #fileSlots(): number {
    if (!this.#write) return Number.POSITIVE_INFINITY;
    return this.#fileBytes >= this.#published ? this.#written : Math.floor(this.#fileBytes / SLOT_SIZE);
  }

  #end(code: 1 | 2): void {
    this.#ended = true;
    const { control } = this.#ring;
    Atomics.store(control, END, code);
    Atomics.add(control, SEQ, 1);
    Atomics.notify(control, SEQ);
  }

  /** Where in the ring the session's next byte goes: the free part of the slot being filled starts here. */
  #tailStart(): number {
    return (this.#written % SLOTS) * SLOT_SIZE + this.#slotUsed;
  }

  /** `chunk` was read into {@link freeTail}: it is where it belongs; the slot is handed over once full. */
  #inPlace(chunk: Buffer): boolean {
    const where = chunk.buffer === this.#ring.data && chunk.byteOffset === this.#tailStart();
    if (!where || chunk.length > SLOT_SIZE - this.#slotUsed || !this.#hasRoom()) return false;
    this.#slotUsed += chunk.length;
    if (this.#slotUsed === SLOT_SIZE) this.#publish();
    return true;
  }

  /** The slot being filled is free: every thread and the file (when teeing) are done with its last round. */
  #hasRoom(): boolean {
    return this.#written - Math.min(this.#slowest().hashed, this.#fileSlots()) < SLOTS;
  }

  /**
   * Copies as much of `chunk` from `offset` as there is free room for; returns where it stopped. Chunks are packed
   * into the slot being filled (origins send 16-64 KiB chunks), which is handed to the threads once full.
   */
  #fill(chunk: Buffer, offset: number): number {
    while (offset < chunk.length && this.#hasRoom()) {
      const length = Math.min(SLOT_SIZE - this.#slotUsed, chunk.length - offset);
      chunk.copy(this.#ring.bytes, this.#tailStart(), offset, offset + length);
      this.#slotUsed += length;
      offset += length;
      if (this.#slotUsed === SLOT_SIZE) this.#publish();
    }
    return offset;
  }

  /** Hands the slot being filled to the threads. */
  #publish(): void {
    const { lengths, control } = this.#ring;
    const slot = this.#written % SLOTS;
    const length = this.#slotUsed;
    lengths[slot] = length;
    this.#slotUsed = 0;
    this.#written += 1;
    this.#published += length;
    Atomics.store(control, WRITTEN, this.#written);
    Atomics.add(control, SEQ, 1);
    Atomics.notify(control, SEQ);
    this.#write?.(this.#ring.bytes.subarray(slot * SLOT_SIZE, slot * SLOT_SIZE + length));
  }

  /** The ring is full: wait for the slowest thread to free a slot, then go on copying. */
  async #rest(chunk: Buffer, offset: number): Promise<void> {
    while (offset < chunk.length) {
      const { index, hashed } = this.#slowest();
      if (this.#fileSlots() < hashed) {
        // The file is the slowest reader of the ring.
        await Promise.race([new Promise<void>((resolve) => (this.#fileMoved = resolve)), this.#failed]);
      } else {
        const wait = waitAsync(this.#ring.control, HASHED + index, hashed);
        if (wait.async) await Promise.race([wait.value, this.#failed]);
      }
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
    tee: null,
  };
}
