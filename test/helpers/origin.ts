import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';

/** Deterministic pseudo-random bytes (an LCG), so tests need no fixtures and corruption is never invisible. */
export function imageBytes(size: number, seed = 1): Buffer {
  const buffer = Buffer.allocUnsafe(size);
  let state = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    buffer[i] = state >>> 24;
  }
  return buffer;
}

/** What Glance would say about these bytes. */
export function glanceMetadata(data: Buffer): { size: number; checksum: string; osHashAlgo: string; osHashValue: string } {
  return {
    size: data.length,
    checksum: createHash('md5').update(data).digest('hex'),
    osHashAlgo: 'sha512',
    osHashValue: createHash('sha512').update(data).digest('hex'),
  };
}

export interface TestOriginOptions {
  /** Bytes per chunk. @default 64 KiB */
  chunkSize?: number;
  /** Emit an error after this many bytes. */
  failAt?: number;
  /** Fail `open()` itself, this many times. */
  failOpens?: number;
  /** Hand out bytes only as the test calls `allow()`. */
  gated?: boolean;
  /** Wait this long between chunks. */
  delayMs?: number;
}

/**
 * An origin that serves one image from memory and counts how often it was opened, with switches for the
 * faults a real origin has: refusing, resetting mid-stream, stalling, and going slow.
 */
export class TestOrigin {
  opens = 0;
  /** Bytes handed out, over all opens. */
  served = 0;
  readonly data: Buffer;
  readonly #options: TestOriginOptions;
  #allowed = 0;
  #wakers: Array<() => void> = [];
  #failOpens: number;

  constructor(data: Buffer, options: TestOriginOptions = {}) {
    this.data = data;
    this.#options = options;
    this.#failOpens = options.failOpens ?? 0;
  }

  /** With `gated`: let the origin send up to `bytes` in total (Infinity: everything). */
  allow(bytes: number): void {
    this.#allowed = Math.max(this.#allowed, bytes);
    for (const wake of this.#wakers.splice(0)) wake();
  }

  readonly open = async (signal?: AbortSignal): Promise<Readable> => {
    this.opens += 1;
    if (this.#failOpens > 0) {
      this.#failOpens -= 1;
      throw new Error('origin refused (test)');
    }
    const { chunkSize = 64 * 1024, failAt, gated = false, delayMs = 0 } = this.#options;
    let offset = 0;
    const origin = this;
    const waitUntilAllowed = async (end: number) => {
      while (gated && origin.#allowed < end) await new Promise<void>((resolve) => origin.#wakers.push(resolve));
    };
    return Readable.from(
      (async function* () {
        while (offset < origin.data.length) {
          if (signal?.aborted) throw signal.reason;
          const end = Math.min(origin.data.length, offset + chunkSize);
          await waitUntilAllowed(end);
          if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
          if (failAt !== undefined && end > failAt) throw new Error('origin reset the connection (test)');
          const chunk = origin.data.subarray(offset, end);
          offset = end;
          origin.served += chunk.length;
          yield chunk;
        }
      })(),
      { objectMode: false },
    );
  };
}

/** Reads a stream to the end; resolves with its bytes, or rejects with its error and what came before. */
export async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of stream) chunks.push(chunk as Buffer);
  } catch (error) {
    Object.assign(error as object, { received: Buffer.concat(chunks).length });
    throw error;
  }
  return Buffer.concat(chunks);
}
