import { connect as connectTcp, isIP, type OnReadOpts, type Socket } from 'node:net';
import { type ConnectionOptions, connect as connectTls } from 'node:tls';
import { type ClientTls, tlsConnect } from '../http-client.js';
import { type DirectBody, DirectReadable } from '../streams/direct-body.js';
import { parseHead, type ResponseHead } from './direct-head.js';

/**
 * The image GET of the HTTP origins, on a socket of its own: HTTP/1.1, `Connection: close`, the body read with
 * `onread` into the reader's memory (a fill's hash ring) or two reused buffers of the connection, and handed out
 * as views ({@link DirectBody}). undici (the client for
 * everything else) allocates a buffer per socket read, copies it into its parser's memory and pushes it through
 * a stream: at 1 GiB per miss that was most of a miss's CPU and all of its garbage. Bodies framed by
 * `Content-Length`, chunked or by the end of the connection are read. Redirects are not followed (a 3xx is a
 * response like any other): an origin that follows them asks undici.
 */

/** Bytes of each of a connection's two read buffers: a few syscalls per MiB. */
const READ_BYTES = 256 << 10;

/** What to send. Header names are lowercase; values are checked here (no CR, LF or NUL). */
export interface DirectRequest {
  url: URL;
  headers: Record<string, string>;
  /** Milliseconds to connect, then again for the response head. */
  timeoutMs: number;
  tls: ClientTls;
  /** Aborts the request, and the body while it streams: rejects (or fails the body) with `signal.reason`. */
  signal?: AbortSignal;
}

export interface DirectResponse extends ResponseHead {
  body: DirectReadable;
}

const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;

/** Sends a GET; resolves with the status, headers and the body to read (or destroy). */
export async function directGet(request: DirectRequest): Promise<DirectResponse> {
  const { url, signal } = request;
  signal?.throwIfAborted();
  const lines = [`GET ${url.pathname}${url.search} HTTP/1.1`, `host: ${url.host}`, 'connection: close'];
  for (const [name, value] of Object.entries(request.headers)) {
    if (!HEADER_NAME.test(name) || !HEADER_VALUE.test(value)) throw new TypeError(`invalid ${name} header`);
    lines.push(`${name}: ${value}`);
  }
  const connection = new DirectConnection(request);
  const head = await connection.send(`${lines.join('\r\n')}\r\n\r\n`);
  return { ...head, body: new DirectReadable(connection) };
}

type Framing = { kind: 'length'; left: number } | { kind: 'chunked' } | { kind: 'close' } | { kind: 'none' };

/** Where a chunked body's parser is: in a size line, in data (`left` bytes), after data (CRLF), in trailers. */
type ChunkState =
  | { at: 'size'; line: string }
  | { at: 'data'; left: number }
  | { at: 'crlf'; seen: number }
  | { at: 'trailer'; line: string }
  | { at: 'end' };

/** One request's connection: the head, then the body as views of the read buffer. */
class DirectConnection implements DirectBody {
  length: number | null = null;
  readonly #socket: Socket;
  /**
   * Two read buffers: a socket read lands in one that nobody holds. A TCP socket stops reading at once when
   * refused, but a TLS socket still delivers the rest of what it decrypted, and that must not land on the view
   * a waiting reader holds, nor on the unread rest of a read queued behind it.
   */
  readonly #buffers = [Buffer.allocUnsafe(READ_BYTES), Buffer.allocUnsafe(READ_BYTES)] as const;
  /** The buffer of the view a waiting reader holds. */
  #heldBuffer: ArrayBufferLike | null = null;
  /** The head's bytes so far, until its blank line. */
  #head: Buffer | null = null;
  #headParsed = false;
  #framing: Framing = { kind: 'none' };
  #chunk: ChunkState = { at: 'size', line: '' };
  #onBytes: ((view: Buffer) => void | Promise<void>) | null = null;
  /** The reader's memory for the next read (see {@link DirectBody.pipeTo}). */
  #memory: (() => Buffer | null) | null = null;
  /**
   * Bytes read but not yet delivered, oldest first: body bytes that came with the head, the rest of a read the
   * reader paused in (a view of its read buffer), and copies of reads that arrive meanwhile (TLS).
   */
  readonly #queue: Buffer[] = [];
  /** The reader asked to wait (its promise has not settled). */
  #waiting = false;
  /** The other side ended the stream; what is queued is still delivered first. */
  #eof = false;
  #headDone!: (head: ResponseHead) => void;
  #headFailed!: (error: Error) => void;
  #bodyDone: (() => void) | null = null;
  #bodyFailed: ((error: Error) => void) | null = null;
  #ended = false;
  #error: Error | null = null;
  #timer: NodeJS.Timeout | undefined;
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = () => this.destroy(this.#signal?.reason as Error);

  constructor(request: DirectRequest) {
    const { url, timeoutMs } = request;
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    const https = url.protocol === 'https:';
    const port = Number(url.port) || (https ? 443 : 80);
    const onread: OnReadOpts = {
      buffer: () => this.#freeBuffer(),
      callback: (n: number, buffer: Uint8Array) => this.#onRead(n, buffer),
    };
    // tls.connect takes `onread` too (documented; missing from @types/node's ConnectionOptions).
    const tlsOptions: ConnectionOptions & { onread: OnReadOpts } = {
      host,
      port,
      ...(isIP(host) ? {} : { servername: host }),
      ...tlsConnect(request.tls),
      onread,
    };
    this.#socket = https ? connectTls(tlsOptions) : connectTcp({ host, port, onread });
    this.#signal = request.signal;
    this.#signal?.addEventListener('abort', this.#onAbort, { once: true });
    this.#timer = setTimeout(() => this.destroy(timeoutError('connect', timeoutMs)), timeoutMs);
    this.#socket.once(https ? 'secureConnect' : 'connect', () => {
      clearTimeout(this.#timer);
      this.#timer = setTimeout(() => this.destroy(timeoutError('headers', timeoutMs)), timeoutMs);
    });
    this.#socket.on('error', (error) => this.destroy(error));
    this.#socket.on('end', () => this.#onEnd());
    // 'close' after 'end' waits for the queue to be delivered (#atEnd); before it, the connection broke.
    this.#socket.on('close', () => {
      if (!this.#eof) this.destroy(new Error('other side closed'));
    });
  }

  send(request: string): Promise<ResponseHead> {
    const head = new Promise<ResponseHead>((resolve, reject) => {
      this.#headDone = resolve;
      this.#headFailed = reject;
    });
    this.#socket.write(request, 'latin1');
    return head;
  }

  pipeTo(onBytes: (view: Buffer) => void | Promise<void>, memory?: () => Buffer | null): Promise<void> {
    if (this.#error) return Promise.reject(this.#error);
    this.#onBytes = onBytes;
    this.#memory = memory ?? null;
    const done = new Promise<void>((resolve, reject) => {
      this.#bodyDone = resolve;
      this.#bodyFailed = reject;
    });
    if (this.#bodyComplete()) this.#finish();
    else this.#drain();
    return done;
  }

  destroy(error?: Error): void {
    if (!this.#ended && !this.#error) {
      this.#error = error ?? new Error('the connection was closed');
      this.#cleanup();
      this.#headFailed?.(this.#error);
      this.#bodyFailed?.(this.#error);
    }
    this.#socket.destroy();
  }

  #cleanup(): void {
    clearTimeout(this.#timer);
    this.#signal?.removeEventListener('abort', this.#onAbort);
  }

  /**
   * Where the next socket read lands: the reader's memory when it offers some and nothing is queued or waiting
   * (the read is then the next delivery, exactly where the reader writes next), else a read buffer no waiting
   * reader and no queued rest refers to.
   */
  #freeBuffer(): Buffer {
    if (this.#memory && !this.#waiting && this.#queue.length === 0 && !this.#error && !this.#ended) {
      const memory = this.#memory();
      if (memory && memory.length > 0) return memory;
    }
    const [first, second] = this.#buffers;
    const busy = (buffer: Buffer) =>
      this.#heldBuffer === buffer.buffer || this.#queue.some((queued) => queued.buffer === buffer.buffer);
    return busy(first) ? second : first;
  }

  /** A read of `n` bytes into `into`; false pauses the socket (the reader is busy, or the head waits for one). */
  #onRead(n: number, into: Uint8Array): boolean {
    if (this.#error || this.#ended) return false;
    const read = Buffer.from(into.buffer, into.byteOffset, n);
    if (!this.#headParsed) return this.#readHead(read);
    if (this.#onBytes === null || this.#waiting || this.#queue.length > 0) {
      this.#queue.push(Buffer.from(read));
      return false;
    }
    return this.#deliver(read);
  }

  #readHead(read: Buffer): boolean {
    const all = this.#head ? Buffer.concat([this.#head, read]) : Buffer.from(read);
    this.#head = all;
    let parsed: { head: ResponseHead; bodyStart: number } | null;
    try {
      parsed = parseHead(all);
      if (parsed) this.#framing = framingOf(parsed.head);
    } catch (error) {
      this.destroy(error as Error);
      return false;
    }
    if (!parsed) return true; // more head to come (parseHead throws past its size limit)
    clearTimeout(this.#timer);
    this.#head = null;
    this.#headParsed = true;
    const { head, bodyStart } = parsed;
    this.length = this.#framing.kind === 'length' ? this.#framing.left : this.#framing.kind === 'none' ? 0 : null;
    if (bodyStart < all.length) this.#queue.push(all.subarray(bodyStart));
    this.#headDone(head);
    return false; // paused until someone reads the body
  }

  /** Delivers what is queued, in order, until the reader asks to wait; then reads on. */
  #drain(): void {
    while (this.#queue.length > 0 && !this.#waiting && !this.#error && !this.#ended) {
      const next = this.#queue.shift()!;
      this.#deliver(next);
    }
    if (this.#waiting || this.#error || this.#ended) return;
    if (this.#eof) this.#atEnd();
    else this.#socket.read(0);
  }

  /**
   * Hands the body bytes of `source` to the reader. Returns false when the connection must pause: the reader
   * asked to wait (the rest of `source` is queued first), the body is complete, or it failed.
   */
  #deliver(source: Buffer): boolean {
    try {
      let at = 0;
      while (at < source.length && !this.#error && !this.#ended) {
        const span = this.#nextSpan(source, at, source.length);
        if (span === null) break;
        at = span.next;
        if (span.data === null || span.data.length === 0) continue;
        const waiting = this.#onBytes!(span.data);
        if (waiting) {
          // The body ends only once its last bytes were taken: a reader still copying them must finish first.
          if (at < source.length && !this.#bodyComplete()) this.#queue.unshift(source.subarray(at));
          this.#heldBuffer = source.buffer;
          this.#wait(waiting);
          return false;
        }
      }
      if (this.#bodyComplete()) {
        this.#finish();
        return false;
      }
      return !this.#error && !this.#ended;
    } catch (error) {
      this.destroy(error as Error);
      return false;
    }
  }

  #wait(waiting: Promise<void>): void {
    this.#waiting = true;
    waiting.then(
      () => {
        this.#waiting = false;
        this.#heldBuffer = null;
        if (this.#bodyComplete()) this.#finish();
        else this.#drain();
      },
      (error: Error) => this.destroy(error),
    );
  }

  /** The next run of body bytes in `source` from `at` (null data: framing only), or null when none is there. */
  #nextSpan(source: Buffer, at: number, end: number): { data: Buffer | null; next: number } | null {
    const framing = this.#framing;
    if (framing.kind === 'close') return { data: source.subarray(at, end), next: end };
    if (framing.kind === 'length') {
      const take = Math.min(framing.left, end - at);
      framing.left -= take;
      return { data: source.subarray(at, at + take), next: end };
    }
    if (framing.kind === 'none') return null;
    return this.#chunkSpan(source, at, end);
  }

  /** RFC 9112 §7.1: sizes in hex (extensions ignored), data, CRLF; a zero size, trailers, an empty line. */
  #chunkSpan(source: Buffer, at: number, end: number): { data: Buffer | null; next: number } {
    const state = this.#chunk;
    if (state.at === 'end') return { data: null, next: end };
    if (state.at === 'data') {
      const take = Math.min(state.left, end - at);
      state.left -= take;
      if (state.left === 0) this.#chunk = { at: 'crlf', seen: 0 };
      return { data: source.subarray(at, at + take), next: at + take };
    }
    if (state.at === 'crlf') {
      const expected = state.seen === 0 ? 0x0d : 0x0a;
      if (source[at] !== expected) throw new Error('bad chunked encoding: no CRLF after a chunk');
      state.seen += 1;
      if (state.seen === 2) this.#chunk = { at: 'size', line: '' };
      return { data: null, next: at + 1 };
    }
    const lf = source.indexOf(0x0a, at);
    const stop = lf === -1 || lf >= end ? end : lf;
    const line = state.line + source.toString('latin1', at, stop);
    if (line.length > 4096) throw new Error('bad chunked encoding: a line over 4 KiB');
    if (stop === end) {
      state.line = line;
      return { data: null, next: end };
    }
    const text = line.endsWith('\r') ? line.slice(0, -1) : line;
    if (state.at === 'trailer') {
      this.#chunk = text === '' ? { at: 'end' } : { at: 'trailer', line: '' };
      return { data: null, next: stop + 1 };
    }
    const size = /^([0-9a-fA-F]{1,12})[ \t]*(?:;.*)?$/.exec(text);
    if (!size) throw new Error(`bad chunked encoding: chunk size ${JSON.stringify(text.slice(0, 40))}`);
    const left = parseInt(size[1]!, 16);
    this.#chunk = left === 0 ? { at: 'trailer', line: '' } : { at: 'data', left };
    return { data: null, next: stop + 1 };
  }

  #bodyComplete(): boolean {
    const framing = this.#framing;
    if (framing.kind === 'length') return framing.left === 0;
    if (framing.kind === 'chunked') return this.#chunk.at === 'end';
    return framing.kind === 'none';
  }

  #onEnd(): void {
    this.#eof = true;
    if (!this.#headParsed) return this.destroy(new Error('the origin closed the connection without an answer'));
    if (this.#ended || this.#error || this.#framing.kind === 'none') return;
    if (this.#onBytes !== null && !this.#waiting && this.#queue.length === 0) this.#atEnd();
  }

  /** The stream ended and everything read was delivered: the end of a body framed by it, else one cut short. */
  #atEnd(): void {
    if (this.#ended || this.#error) return;
    if (this.#framing.kind === 'close') return this.#finish();
    const framing = this.#framing;
    const length = this.length;
    const detail = framing.kind === 'length' && length !== null ? ` after ${length - framing.left} of ${length} bytes` : '';
    this.destroy(new Error(`the origin closed the connection${detail}`));
  }

  #finish(): void {
    if (this.#ended || this.#error) return;
    this.#ended = true;
    this.#cleanup();
    this.#socket.destroy();
    const done = this.#bodyDone;
    this.#bodyDone = null;
    this.#bodyFailed = null;
    done?.();
  }
}

function framingOf(head: ResponseHead): Framing {
  const { statusCode, headers } = head;
  if (statusCode === 204 || statusCode === 304 || statusCode < 200) return { kind: 'none' };
  const te = headers['transfer-encoding'];
  if (te !== undefined) {
    const codings = (Array.isArray(te) ? te.join(',') : te).split(',').map((c) => c.trim().toLowerCase());
    return codings[codings.length - 1] === 'chunked' ? { kind: 'chunked' } : { kind: 'close' };
  }
  const cl = headers['content-length'];
  if (cl === undefined) return { kind: 'close' };
  const values = new Set((Array.isArray(cl) ? cl.join(',') : cl).split(',').map((v) => v.trim()));
  const [only] = values;
  if (values.size !== 1 || only === undefined || !/^\d{1,16}$/.test(only)) {
    throw new Error(`bad Content-Length ${JSON.stringify(String(cl).slice(0, 40))}`);
  }
  return { kind: 'length', left: Number(only) };
}

function timeoutError(phase: 'connect' | 'headers', ms: number): Error {
  const error = new Error(`${phase === 'connect' ? 'Connect' : 'Headers'} timeout after ${ms} ms`);
  error.name = 'TimeoutError';
  (error as NodeJS.ErrnoException).code = phase === 'connect' ? 'UND_ERR_CONNECT_TIMEOUT' : 'UND_ERR_HEADERS_TIMEOUT';
  return error;
}
