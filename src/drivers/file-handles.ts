import type { FileHandle } from 'node:fs/promises';
import { type Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { CacheIOError, ImageCacheError, WriteClosedError } from '../errors.js';
import type { ImageDigests, ImageReader, ImageWriter } from './driver.js';
import { isErrno } from './fs-util.js';

/** 1 MiB: large enough that a multi-GB image is a few thousand syscalls, small enough to keep memory flat. */
export const CHUNK_SIZE = 1 << 20;

/**
 * A Writable over an open file. `_final` fsyncs, so when the stream has finished the bytes are on disk and the
 * rename that publishes the file cannot expose a torn image after a power loss.
 */
export class FileSink extends Writable {
  readonly #file: FileHandle;
  bytesWritten = 0;

  constructor(file: FileHandle) {
    super({ highWaterMark: CHUNK_SIZE });
    this.#file = file;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#writeAll([chunk]).then(() => callback(), callback);
  }

  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    callback: (error?: Error | null) => void,
  ): void {
    this.#writeAll(chunks.map((c) => c.chunk)).then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#file.sync().then(() => callback(), callback);
  }

  async #writeAll(buffers: Buffer[]): Promise<void> {
    let pending = buffers;
    let total = pending.reduce((sum, b) => sum + b.length, 0);
    // writev may write less than asked (a full disk, a signal): keep going from where it stopped.
    while (total > 0) {
      const { bytesWritten } = await this.#file.writev(pending);
      this.bytesWritten += bytesWritten;
      this.emit('progress', this.bytesWritten);
      total -= bytesWritten;
      if (total === 0) break;
      if (bytesWritten === 0) throw new CacheIOError('write made no progress');
      pending = dropBytes(pending, bytesWritten);
    }
  }
}

function dropBytes(buffers: Buffer[], count: number): Buffer[] {
  const rest: Buffer[] = [];
  let skip = count;
  for (const buffer of buffers) {
    if (skip >= buffer.length) {
      skip -= buffer.length;
      continue;
    }
    rest.push(skip > 0 ? buffer.subarray(skip) : buffer);
    skip = 0;
  }
  return rest;
}

/** What a write handle asks of its driver: the steps of commit and rollback that touch paths and metadata. */
export interface WriteCallbacks {
  /** Publish the finished file (rename into place, pop the queue, record metadata). */
  publish(size: number, digests: ImageDigests): Promise<void>;
  /** Move whatever was written to `invalid/` (or delete it) and tell the store. */
  discard(reason: string, keepFile: boolean): Promise<void>;
  /** The handle is closed either way. */
  release(): void;
}

type WriterState = 'open' | 'committing' | 'committed' | 'rolled back';

export class FileImageWriter implements ImageWriter {
  readonly imageId: string;
  readonly path: string;
  readonly stream: FileSink;
  readonly #file: FileHandle;
  readonly #callbacks: WriteCallbacks;
  #state: WriterState = 'open';

  constructor(imageId: string, path: string, file: FileHandle, callbacks: WriteCallbacks) {
    this.imageId = imageId;
    this.path = path;
    this.#file = file;
    this.stream = new FileSink(file);
    this.#callbacks = callbacks;
    // An error on the stream is reported to whoever writes; without a listener it would crash the process.
    this.stream.on('error', () => {});
  }

  get bytesWritten(): number {
    return this.stream.bytesWritten;
  }

  async commit(digests: ImageDigests = {}): Promise<void> {
    if (this.#state !== 'open') throw new WriteClosedError(this.imageId, this.#state);
    this.#state = 'committing';
    try {
      if (this.stream.errored) throw this.stream.errored;
      if (!this.stream.writableEnded) this.stream.end();
      await finished(this.stream);
      await this.#file.close();
      await this.#callbacks.publish(this.stream.bytesWritten, digests);
      this.#state = 'committed';
      this.#callbacks.release();
    } catch (error) {
      this.#state = 'open';
      // A full disk: the bytes were fine, and keeping them in invalid/ would keep the disk full.
      await this.rollback(error, { keepFile: !isErrno(error, 'ENOSPC', 'EDQUOT') });
      throw error;
    }
  }

  async rollback(reason: unknown, options: { keepFile?: boolean } = {}): Promise<void> {
    if (this.#state !== 'open') return;
    this.#state = 'rolled back';
    try {
      this.stream.destroy();
      await this.#file.close().catch(() => {});
      await this.#callbacks.discard(reason instanceof Error ? reason.message : String(reason), options.keepFile ?? true);
    } finally {
      this.#callbacks.release();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.rollback('incomplete fetch');
  }
}

export class FileImageReader implements ImageReader {
  readonly imageId: string;
  readonly path: string;
  readonly size: number;
  readonly #file: FileHandle;
  readonly #recordHit: () => Promise<void>;
  #closed = false;
  #streamed = false;

  constructor(imageId: string, path: string, file: FileHandle, size: number, recordHit: () => Promise<void>) {
    this.imageId = imageId;
    this.path = path;
    this.size = size;
    this.#file = file;
    this.#recordHit = recordHit;
  }

  createReadStream(range: { start?: number; end?: number } = {}): Readable {
    if (this.#streamed) throw new ImageCacheError('ERR_READ_STREAM_USED', 'createReadStream can be called once');
    this.#streamed = true;
    // autoClose off: the fd belongs to this handle and is closed by complete()/close(), exactly once.
    return this.#file.createReadStream({ ...range, highWaterMark: CHUNK_SIZE, autoClose: false });
  }

  get fd(): number {
    return this.#file.fd;
  }

  async read(buffer: Buffer, length: number, position: number): Promise<number> {
    if (this.#closed) throw new CacheIOError(`image ${this.imageId}: read after its file was closed`);
    let total = 0;
    // A positional read may return less than asked before the end of the file (a signal): read on until the end.
    while (total < length) {
      const { bytesRead } = await this.#file.read(buffer, total, length - total, position + total);
      if (bytesRead === 0) break;
      total += bytesRead;
    }
    return total;
  }

  async complete(): Promise<void> {
    if (this.#closed) return;
    await this.close();
    await this.#recordHit();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#file.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

