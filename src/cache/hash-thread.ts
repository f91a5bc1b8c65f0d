import type { Worker } from 'node:worker_threads';
import { HashWorkerError } from '../errors.js';

/**
 * One hash thread and the ring it reads (see hash-pool.ts for why). The worker is a tiny CommonJS script given
 * as source (`eval`), so it needs no build step and no loader. It runs one session per message, hashing every slot
 * the main thread hands over until told to end, answers `{ hex }` (finished) or `{ dropped }`, and takes the next.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
parentPort.on('message', (m) => {
  const hash = createHash(m.algorithm);
  const control = new Int32Array(m.control);
  const lengths = new Int32Array(m.lengths);
  const views = [];
  for (let i = 0; i < m.slots; i++) views.push(new Uint8Array(m.ring, i * m.slotSize, m.slotSize));
  let read = 0;
  for (;;) {
    const seq = Atomics.load(control, ${0 /* SEQ */});
    const end = Atomics.load(control, ${2 /* END */});
    if (read < Atomics.load(control, ${1 /* WRITTEN */})) {
      const slot = read % m.slots;
      const length = lengths[slot];
      hash.update(length === m.slotSize ? views[slot] : views[slot].subarray(0, length));
      read += 1;
      Atomics.store(control, ${3 /* HASHED */} + m.index, read);
      Atomics.notify(control, ${3 /* HASHED */} + m.index);
    } else if (end === 1) {
      parentPort.postMessage({ hex: hash.digest('hex') });
      return;
    } else if (end === 2) {
      parentPort.postMessage({ dropped: true });
      return;
    } else {
      Atomics.wait(control, ${0 /* SEQ */}, seq);
    }
  }
});
`;

/** Slots per ring and their size: a fill's hashing memory is SLOTS x SLOT_SIZE (4 MiB). */
export const SLOTS = 4;
export const SLOT_SIZE = 1 << 20;
/** Control words: a sequence bumped on every change (what the threads sleep on), slots written, end, slots hashed. */
export const SEQ = 0;
export const WRITTEN = 1;
export const END = 2;
export const HASHED = 3;

/** One ring: the slots, their lengths and the control words, shared with the session's threads. */
export interface Ring {
  data: SharedArrayBuffer;
  bytes: Buffer;
  lengths: Int32Array;
  control: Int32Array;
}

export function newRing(): Ring {
  const data = new SharedArrayBuffer(SLOTS * SLOT_SIZE);
  return {
    data,
    bytes: Buffer.from(data),
    lengths: new Int32Array(new SharedArrayBuffer(SLOTS * 4)),
    control: new Int32Array(new SharedArrayBuffer((HASHED + 2) * 4)),
  };
}

/** A reply the thread owes a session, in the order the sessions were opened. */
interface PendingReply {
  resolve(hex: string | null): void;
  reject(error: Error): void;
}

/** One hash thread: runs one session at a time; dies loudly (every pending reply rejects). */
export class HashThread {
  readonly #worker: Worker;
  readonly #replies: PendingReply[] = [];
  /** Settles when the thread has answered the last session it was given. */
  #lastReply: Promise<void> = Promise.resolve();
  #failure: HashWorkerError | null = null;
  /** Called once when the thread dies, so the pool forgets it and the session fails at once. */
  onFailure: (error: HashWorkerError) => void = () => {};

  constructor(spawn: (source: string) => Worker) {
    this.#worker = spawn(WORKER_SOURCE);
    this.#worker.unref(); // only a running session keeps the process alive
    this.#worker.on('message', (reply: { hex?: string }) => this.#replies.shift()?.resolve(reply.hex ?? null));
    this.#worker.on('error', (error) => this.#fail(error));
    this.#worker.on('exit', (code) => this.#fail(new Error(`hash worker exited with code ${code}`)));
  }

  get failure(): HashWorkerError | null {
    return this.#failure;
  }

  /** Starts a session over `ring`; resolves with the hex digest (finished) or null (dropped). */
  run(algorithm: string, ring: Ring, index: number): Promise<string | null> {
    if (this.#failure) return Promise.reject(this.#failure);
    this.#worker.ref();
    const reply = new Promise<string | null>((resolve, reject) => this.#replies.push({ resolve, reject }));
    this.#worker.postMessage({
      algorithm,
      ring: ring.data,
      lengths: ring.lengths.buffer,
      control: ring.control.buffer,
      slots: SLOTS,
      slotSize: SLOT_SIZE,
      index,
    });
    this.#lastReply = reply.then(
      () => {},
      () => {},
    );
    return reply.finally(() => {
      if (this.#replies.length === 0) this.#worker.unref();
    });
  }

  /**
   * Resolves once the thread has answered every session it was given (each was told to end), or after `ms`:
   * terminating a thread still inside a session lost its 'exit' event at shutdown (the process ended with code 13,
   * an unsettled top-level await), so close lets the sessions finish first.
   */
  async answered(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
    try {
      await Promise.race([this.#lastReply, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  terminate(): Promise<number> {
    // An idle thread is unref'd: without this, a process whose last work is this close would exit (code 13, an
    // unsettled top-level await) before the thread's 'exit' event resolves the promise.
    this.#worker.ref();
    return this.#worker.terminate();
  }

  #fail(error: Error): void {
    if (this.#failure) return;
    this.#failure = new HashWorkerError(`hash worker failed: ${error.message}`, { cause: error });
    for (const reply of this.#replies.splice(0)) reply.reject(this.#failure);
    this.onFailure(this.#failure);
  }
}

