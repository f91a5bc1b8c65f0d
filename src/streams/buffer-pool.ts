/**
 * A few large buffers, reused. A fresh 1 MiB buffer per chunk costs more than the copy it holds: the allocator
 * maps new pages, the kernel faults and zeroes each of them, and the garbage collector sees the memory only as
 * external bytes, so RSS climbs by hundreds of MiB before it frees any. Reused buffers stay mapped and warm.
 *
 * A buffer is lent until it is given back. Whoever takes one must give it back only once nothing reads it any
 * more: for a socket write, in the write's callback (the kernel copies from it until then).
 */
export class BufferPool {
  readonly bufferSize: number;
  readonly #idle: Buffer[] = [];
  readonly #maxIdle: number;
  #lent = 0;

  constructor(bufferSize: number, maxIdle: number) {
    this.bufferSize = bufferSize;
    this.#maxIdle = maxIdle;
  }

  /** Buffers out on loan now. */
  get lent(): number {
    return this.#lent;
  }

  /** Buffers kept for reuse now. */
  get idle(): number {
    return this.#idle.length;
  }

  take(): Buffer {
    this.#lent += 1;
    // allocUnsafeSlow: a buffer of its own, never a slice of Node's shared pool (it is handed to the kernel).
    return this.#idle.pop() ?? Buffer.allocUnsafeSlow(this.bufferSize);
  }

  give(buffer: Buffer): void {
    this.#lent -= 1;
    // Past the idle limit (a burst of clients) the buffer is left to the garbage collector: memory stays bounded.
    if (this.#idle.length < this.#maxIdle && buffer.length === this.bufferSize) this.#idle.push(buffer);
  }
}
