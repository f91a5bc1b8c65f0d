import { createCipheriv, createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { drainedOrClosed } from '../../src/streams/drained.js';

/**
 * A rate-limited, counting image store for cluster storms (test/cluster/storm.test.ts, bench/cluster.ts): an
 * `http:` origin (`--origin http://127.0.0.1:PORT/images/{id}`) whose images are never held in memory. An image's
 * bytes are AES-128-CTR keystream of its seed, so any range is computed in place at GB/s, and a 1 GiB image costs
 * a key, a size and an MD5. Every body goes through one token bucket shared by all responses: the bandwidth of an
 * origin link that a storm of nodes must share, which is what makes 3 fills cost 3x the time, not just 3x the bytes.
 * Body bytes (ranges included) and body requests are counted, per image and in total, and each body request is
 * logged so a failing test can show who fetched what.
 */

const MIB = 1 << 20;
/** Bytes per write: small enough that the bucket interleaves concurrent responses finely. */
const CHUNK = 64 * 1024;
/** Seconds of tokens the bucket may hold: an idle link does not save up a burst that hides contention. */
const BURST_SECONDS = 0.02;

/** One image of the store. */
export interface StormImage {
  id: string;
  size: number;
  /** Hex MD5 of the whole image, sent as `Content-MD5` so that nodes verify what they cache. */
  md5: string;
  /** Hex SHA-256 of the whole image: what the bench's clients check (2.4x cheaper than MD5 with SHA-NI). */
  sha256: string;
  seed: number;
}

/** One body request (GET), logged when its response ends. */
export interface BodyRequest {
  method: string;
  id: string;
  /** The `Range` header as sent, or null. */
  range: string | null;
  status: number;
  /** Body bytes written for it. */
  bytes: number;
  /** Milliseconds since the origin started. */
  startMs: number;
  endMs: number;
  /** The client went away before the whole body was sent. */
  aborted: boolean;
}

/** Zeros to encrypt: the keystream of AES-CTR is the encryption of zeros. Read only. */
const ZEROS = Buffer.alloc(16 * MIB);

/**
 * The bytes of an image from `offset` on, `length` at a time: keystream of the image's key, one cipher for the
 * whole run (a response), so a chunk costs its AES and nothing else.
 */
function keystreamFrom(seed: number, offset: number): (length: number) => Buffer {
  const key = createHash('sha256').update(`storm-origin-${seed}`).digest().subarray(0, 16);
  const block = Math.floor(offset / 16);
  const iv = Buffer.alloc(16);
  // The counter is the low 64 bits of the IV, big-endian: images stay far below 2^64 blocks.
  iv.writeBigUInt64BE(BigInt(block), 8);
  const cipher = createCipheriv('aes-128-ctr', key, iv);
  let skip = offset - block * 16;
  return (length) => {
    if (skip + length > ZEROS.length) throw new RangeError(`keystream chunks are at most ${ZEROS.length - skip} bytes`);
    if (skip === 0) return cipher.update(ZEROS.subarray(0, length));
    const out = cipher.update(ZEROS.subarray(0, skip + length)).subarray(skip);
    skip = 0;
    return out;
  };
}

/** The bytes of an image at `offset`, `length` of them. */
function keystream(seed: number, offset: number, length: number): Buffer {
  const next = keystreamFrom(seed, offset);
  // The first chunk also encrypts the up to 15 bytes before `offset` in its block: every chunk leaves room for them.
  const step = ZEROS.length - 16;
  if (length <= step) return next(length);
  const parts: Buffer[] = [];
  for (let left = length; left > 0; left -= step) parts.push(next(Math.min(left, step)));
  return Buffer.concat(parts);
}

/** A token bucket shared by every response: `take(n)` resolves when `n` bytes may go out. FIFO by reservation. */
class Bucket {
  /** When the link is free again, in ms of performance time. */
  #freeAt = 0;

  constructor(private readonly bytesPerSecond: number) {}

  async take(bytes: number): Promise<void> {
    if (!Number.isFinite(this.bytesPerSecond)) return;
    const now = performance.now();
    this.#freeAt = Math.max(this.#freeAt, now - BURST_SECONDS * 1000) + (bytes / this.bytesPerSecond) * 1000;
    const wait = this.#freeAt - now;
    if (wait > 1) await sleep(wait);
  }
}

/** `bytes=a-b`, `bytes=a-` or `bytes=-n` of a `size`-byte image as [start, end] inclusive; null for unsatisfiable. */
function parseRange(header: string, size: number): [number, number] | null | 'ignore' {
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === '' && match[2] === '')) return 'ignore'; // multiple or odd ranges: send it all
  if (match[1] === '') {
    const suffix = Number(match[2]);
    return suffix === 0 ? null : [Math.max(0, size - suffix), size - 1];
  }
  const start = Number(match[1]);
  const end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
  return start >= size || end < start ? null : [start, end];
}

export class StormOrigin {
  readonly images = new Map<string, StormImage>();
  readonly log: BodyRequest[] = [];
  /** Body bytes sent per image id. */
  readonly bytesById = new Map<string, number>();
  /** Body requests (GET) per image id. */
  readonly requestsById = new Map<string, number>();
  heads = 0;
  #server: Server | undefined;
  #bucket: Bucket;
  #started = performance.now();

  /** `rateMiB`: MiB/s shared by all bodies (Infinity: unlimited). */
  constructor(rateMiB: number) {
    this.#bucket = new Bucket(rateMiB * MIB);
  }

  /** Adds an image of `size` bytes made from `seed` (its MD5 and SHA-256 are computed now, without holding it). */
  addImage(id: string, size: number, seed: number): StormImage {
    const md5 = createHash('md5');
    const sha256 = createHash('sha256');
    const next = keystreamFrom(seed, 0);
    for (let offset = 0; offset < size; offset += ZEROS.length) {
      const bytes = next(Math.min(ZEROS.length, size - offset));
      md5.update(bytes);
      sha256.update(bytes);
    }
    const image = { id, size, seed, md5: md5.digest('hex'), sha256: sha256.digest('hex') };
    this.images.set(id, image);
    return image;
  }

  /** The bytes of an image (tests of small images only: this allocates them). */
  bytesOf(id: string, start = 0, end?: number): Buffer {
    const image = this.images.get(id);
    if (!image) throw new Error(`no image ${id}`);
    const last = end ?? image.size;
    return keystream(image.seed, start, last - start);
  }

  get totalBytes(): number {
    return [...this.bytesById.values()].reduce((a, b) => a + b, 0);
  }

  get totalRequests(): number {
    return [...this.requestsById.values()].reduce((a, b) => a + b, 0);
  }

  /** Origin body bytes sent for `ids`, over the sum of their sizes (1 when each crossed the link once). */
  ratio(ids: readonly string[]): number {
    const sent = ids.reduce((n, id) => n + (this.bytesById.get(id) ?? 0), 0);
    const size = ids.reduce((n, id) => n + (this.images.get(id)?.size ?? 0), 0);
    return sent / size;
  }

  /** The log as lines, for a failure message. */
  logText(): string {
    return this.log
      .map(
        (r) =>
          `${r.startMs.toFixed(0).padStart(7)}-${r.endMs.toFixed(0).padEnd(7)} ms ${r.method} ${r.id} ` +
          `range ${r.range ?? '-'} -> ${r.status}, ${r.bytes} B${r.aborted ? ' (aborted)' : ''}`,
      )
      .join('\n');
  }

  /** Listens on 127.0.0.1 (random port); resolves with the `--origin` value for imgcache. */
  async start(): Promise<string> {
    this.#started = performance.now();
    const server = createServer((request, response) => {
      this.#handle(request, response).catch((error: unknown) => {
        response.destroy(error instanceof Error ? error : new Error(String(error)));
      });
    });
    this.#server = server;
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    return `http://127.0.0.1:${port}/images/{id}`;
  }

  async close(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#server = undefined;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const match = /^\/images\/([^/?]+)$/.exec(request.url ?? '');
    const image = match ? this.images.get(decodeURIComponent(match[1] as string)) : undefined;
    if (!image) {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('no such image\n');
      return;
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const rangeHeader = typeof request.headers.range === 'string' ? request.headers.range : null;
    const range = rangeHeader === null ? 'ignore' : parseRange(rangeHeader, image.size);
    if (range === null) {
      response.writeHead(416, { 'content-range': `bytes */${image.size}` }).end();
      return;
    }
    const [start, end] = range === 'ignore' ? [0, image.size - 1] : range;
    const headers: Record<string, string> = {
      'content-type': 'application/octet-stream',
      'content-length': String(end - start + 1),
      'accept-ranges': 'bytes',
    };
    // The whole image's MD5 describes a 200 body only; a 206 carries its place instead.
    if (range === 'ignore') headers['content-md5'] = image.md5;
    else headers['content-range'] = `bytes ${start}-${end}/${image.size}`;
    const status = range === 'ignore' ? 200 : 206;
    if (request.method === 'HEAD') {
      this.heads += 1;
      response.writeHead(status, headers).end();
      return;
    }
    this.requestsById.set(image.id, (this.requestsById.get(image.id) ?? 0) + 1);
    const entry: BodyRequest = {
      method: 'GET',
      id: image.id,
      range: rangeHeader,
      status,
      bytes: 0,
      startMs: performance.now() - this.#started,
      endMs: 0,
      aborted: false,
    };
    let gone = false;
    response.once('close', () => {
      gone = !response.writableFinished;
    });
    response.writeHead(status, headers);
    const bytesAt = keystreamFrom(image.seed, start);
    try {
      for (let offset = start; offset <= end && !gone; offset += CHUNK) {
        const length = Math.min(CHUNK, end + 1 - offset);
        await this.#bucket.take(length);
        if (gone || response.destroyed) break;
        const more = response.write(bytesAt(length));
        entry.bytes += length;
        this.bytesById.set(image.id, (this.bytesById.get(image.id) ?? 0) + length);
        if (!more) await drainedOrClosed(response);
      }
      if (!gone && !response.destroyed) response.end();
    } finally {
      entry.aborted = gone || entry.bytes < end - start + 1;
      entry.endMs = performance.now() - this.#started;
      this.log.push(entry);
    }
  }
}
