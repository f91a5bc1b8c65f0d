import { createHash } from 'node:crypto';
import { once } from 'node:events';
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ImageRecord } from '../../src/origin/origin.js';
import { SCHEMAS } from '../../src/server/schemas.js';
import { drainedOrClosed } from '../../src/streams/drained.js';

/** Faults a {@link FakeGlance} injects into one image's responses. Change them any time with `setFaults`. */
export interface FakeImageFaults {
  /** Milliseconds to wait before each body chunk of `GET …/file`. @default 0 */
  slowMs?: number;
  /**
   * Send the first body chunk of `GET …/file`, then hold the rest until this promise resolves (a fill the test
   * keeps running for as long as it needs). @default undefined
   */
  gate?: Promise<void>;
  /** Destroy the socket after this many body bytes of `GET …/file` (a reset mid-download). @default undefined */
  resetAfter?: number;
  /**
   * Serve bytes that differ from the image's (same length, one byte flipped every 64 KiB) while `Content-MD5`
   * and the metadata still promise the real ones. @default false
   */
  corrupt?: boolean;
  /**
   * Answer 500 instead: `true` for every request about the image, `'file'` for `GET …/file` only, `'metadata'`
   * for `GET /v2/images/{id}` only. @default false
   */
  status500?: boolean | 'file' | 'metadata';
  /** Answer `GET /v2/images/{id}` (the metadata) with this status and a JSON error instead, e.g. 503 or 403. */
  metadataStatus?: number;
}

/** Who a token belongs to (what Keystone would say). */
export interface FakeToken {
  projectId: string;
  /** `admin` sees every image and may delete any. */
  roles: string[];
}

/** Options of a {@link FakeGlance}. */
export interface FakeGlanceOptions {
  /**
   * `keystone`: every request except `GET /versions` needs an `X-Auth-Token` registered with `addToken` (401
   * otherwise). `noauth`: no token needed, every caller is admin (Glance's `auth_strategy = noauth`).
   * @default 'keystone'
   */
  auth?: 'keystone' | 'noauth';
  /** Bytes per body chunk of `GET …/file`. @default 65536 */
  chunkSize?: number;
  /** What `GET /versions` lists (ids and statuses; links are added). @default v2.17 CURRENT, v2.16, v2.0 */
  versions?: Array<{ id: string; status: string }>;
  /** Serve https with this PEM certificate and key (a test CA's, `helpers/tls.ts`). @default plain http */
  tls?: { cert: string; key: string };
}

/** One request as the fake received it. */
export interface RecordedRequest {
  method: string;
  /** Path and query. */
  url: string;
  headers: IncomingHttpHeaders;
}

interface StoredImage {
  record: ImageRecord;
  data: Buffer | null;
  faults: FakeImageFaults;
}

interface Context {
  projectId: string | null;
  isAdmin: boolean;
}

/**
 * A small Glance v2 API on 127.0.0.1 for tests: images in memory, Keystone-style tokens, visibility, request
 * counters and per-image fault switches. Routes: `GET /versions`; `GET /v2/schemas/{name}` (Glance's schemas);
 * `GET /v2/images` (the visible images in the order added, paged by `limit` and `marker` with a `next` link, as
 * Glance pages); `GET` and `DELETE /v2/images/{id}`;
 * `GET /v2/images/{id}/file` (200 with `Content-Length` and hex `Content-MD5`, 204 without data, one `Range`
 * honoured with 206); `PUT /v2/images/{id}/file` (upload to a `queued` image, 204); anything else 404 JSON.
 *
 * Visibility as in Glance: an image whose `visibility` is `private` or `shared` and that has an `owner` is seen
 * (else 404) only by tokens of that project and by admins; everything else by every valid token.
 */
export class FakeGlance {
  /** Requests per `METHOD /path` (no query), e.g. `counts.get('GET /v2/images/x/file')`. */
  readonly counts = new Map<string, number>();
  /** Every request, in order. */
  readonly requests: RecordedRequest[] = [];
  /** Image bytes written to responses so far, per image id (over all downloads). */
  readonly served = new Map<string, number>();
  /** Downloads the client abandoned before the end, per image id. */
  readonly abandoned = new Map<string, number>();
  /** `GET …/file` bodies being sent right now (ranges included), and the most there ever were at once. */
  downloadsNow = 0;
  mostDownloadsAtOnce = 0;
  readonly #images = new Map<string, StoredImage>();
  readonly #tokens = new Map<string, FakeToken>();
  readonly #options: Required<Omit<FakeGlanceOptions, 'versions' | 'tls'>> & Pick<FakeGlanceOptions, 'versions'>;
  readonly #scheme: 'http' | 'https';
  readonly #server: Server;
  #url = '';

  constructor(options: FakeGlanceOptions = {}) {
    this.#options = { auth: options.auth ?? 'keystone', chunkSize: options.chunkSize ?? 64 * 1024, versions: options.versions };
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.#handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) json(res, 500, { message: String(error) });
        else res.destroy();
      });
    };
    this.#scheme = options.tls ? 'https' : 'http';
    this.#server = options.tls ? (createHttpsServer(options.tls, handler) as unknown as Server) : createServer(handler);
  }

  /** Base URL, once started: `http://127.0.0.1:PORT` (`https://` with `tls`). */
  get url(): string {
    return this.#url;
  }

  /**
   * Adds (or replaces) an image. Fields left out are filled in as Glance would: `status` `active` with data,
   * `queued` without; `size`, `checksum` (MD5) and `os_hash_algo`/`os_hash_value` (sha512) from `data`;
   * `visibility` `public`; `owner` null. Pass `null` explicitly to leave a field empty. Returns the stored record.
   */
  addImage(
    record: Partial<ImageRecord> & { id: string },
    data: Buffer | null,
    faults: FakeImageFaults = {},
  ): ImageRecord {
    const stored: ImageRecord = {
      status: data ? 'active' : 'queued',
      visibility: 'public',
      owner: null,
      ...digests(data),
      ...record,
    };
    this.#images.set(record.id, { record: stored, data, faults });
    return stored;
  }

  /** Replaces what `GET /versions` lists from now on. */
  setVersions(versions: Array<{ id: string; status: string }>): void {
    this.#options.versions = versions;
  }

  /** Replaces an image's fault switches. */
  setFaults(id: string, faults: FakeImageFaults): void {
    const image = this.#images.get(id);
    if (!image) throw new Error(`fake glance: no image ${id}`);
    image.faults = faults;
  }

  /** The stored image (after uploads and deletes), or undefined. */
  image(id: string): { record: ImageRecord; data: Buffer | null } | undefined {
    return this.#images.get(id);
  }

  /** Registers a token: requests carrying it act for `projectId` with `roles`. */
  addToken(token: string, who: FakeToken): void {
    this.#tokens.set(token, who);
  }

  /** Requests that carried this exact header value, e.g. `requestsWith('x-auth-token', 't1')`. */
  requestsWith(name: string, value: string): RecordedRequest[] {
    return this.requests.filter((request) => request.headers[name.toLowerCase()] === value);
  }

  /** Listens on 127.0.0.1 on a free port; resolves with the base URL. */
  async start(): Promise<string> {
    this.#server.listen(0, '127.0.0.1');
    await once(this.#server, 'listening');
    this.#url = `${this.#scheme}://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
    return this.#url;
  }

  /** Stops listening and drops every connection, including downloads in progress. */
  async close(): Promise<void> {
    if (!this.#server.listening) return;
    const closed = once(this.#server, 'close');
    this.#server.close();
    this.#server.closeAllConnections();
    await closed;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const method = req.method ?? 'GET';
    this.requests.push({ method, url: req.url ?? '/', headers: req.headers });
    const key = `${method} ${url.pathname}`;
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);

    if (url.pathname === '/versions' && method === 'GET') return json(res, 200, versions(this.#url, this.#options.versions));
    const context = this.#authenticate(req);
    if (!context) return fail(res, 401, 'The request you have made requires authentication.');

    const schema = /^\/v2\/schemas\/(.+)$/.exec(url.pathname)?.[1];
    if (schema !== undefined && method === 'GET') {
      return schema in SCHEMAS ? json(res, 200, SCHEMAS[schema]) : fail(res, 404, `no schema ${schema}`);
    }
    if (url.pathname === '/v2/images' && method === 'GET') return json(res, 200, this.#list(url, context));
    const match = /^\/v2\/images\/([^/]+)(\/file)?$/.exec(url.pathname);
    if (!match) return fail(res, 404, `no route for ${url.pathname}`);
    const id = decodeURIComponent(match[1] ?? '');
    const image = this.#images.get(id);
    if (!image || !visible(image.record, context)) {
      return fail(res, 404, `No image found with ID ${id}`);
    }
    const file = match[2] !== undefined;
    const { status500 } = image.faults;
    const get = method === 'GET';
    if (status500 === true || (status500 === 'file' && file && get) || (status500 === 'metadata' && !file && get)) {
      return fail(res, 500, 'injected fault (status500)');
    }
    if (!file && get && image.faults.metadataStatus !== undefined) {
      return fail(res, image.faults.metadataStatus, 'injected fault (metadataStatus)');
    }
    if (!file && get) {
      const links = { self: `/v2/images/${id}`, file: `/v2/images/${id}/file`, schema: '/v2/schemas/image' };
      return json(res, 200, { ...image.record, ...links });
    }
    if (!file && method === 'DELETE') return this.#delete(res, image, context);
    if (file && get) return this.#download(req, res, image, context);
    if (file && method === 'PUT') return this.#upload(req, res, image, context);
    res.setHeader('allow', file ? 'GET, PUT' : 'GET, DELETE');
    return fail(res, 405, `${method} is not allowed here`);
  }

  /** Glance's index: `limit` (default 25), `marker`, and `next` when the page is full. */
  #list(url: URL, context: Context): unknown {
    const visibleImages = [...this.#images.values()].filter((image) => visible(image.record, context));
    const limit = Number(url.searchParams.get('limit') ?? 25);
    const marker = url.searchParams.get('marker');
    const start = marker === null ? 0 : visibleImages.findIndex((image) => image.record.id === marker) + 1;
    const page = visibleImages.slice(start, start + limit).map(({ record }) => ({
      ...record,
      self: `/v2/images/${record.id}`,
      file: `/v2/images/${record.id}/file`,
      schema: '/v2/schemas/image',
    }));
    const body: Record<string, unknown> = { images: page, first: '/v2/images', schema: '/v2/schemas/images' };
    const last = page.at(-1);
    if (last && page.length === limit) {
      const next = new URLSearchParams(url.searchParams);
      next.set('marker', last.id);
      body.next = `/v2/images?${next.toString()}`;
    }
    return body;
  }

  #authenticate(req: IncomingMessage): Context | null {
    if (this.#options.auth === 'noauth') return { projectId: null, isAdmin: true };
    const token = req.headers['x-auth-token'];
    const who = typeof token === 'string' ? this.#tokens.get(token) : undefined;
    return who ? { projectId: who.projectId, isAdmin: who.roles.includes('admin') } : null;
  }

  #delete(res: ServerResponse, image: StoredImage, context: Context): void {
    const { record } = image;
    if (!context.isAdmin && record.owner && record.owner !== context.projectId) {
      return fail(res, 403, 'You are not permitted to delete this image.');
    }
    if (record.protected === true) {
      return fail(res, 403, `Image ${record.id} is protected and cannot be deleted.`);
    }
    this.#images.delete(record.id);
    res.writeHead(204).end();
  }

  async #download(req: IncomingMessage, res: ServerResponse, image: StoredImage, context: Context): Promise<void> {
    const { record, data, faults } = image;
    if (record.status === 'deactivated' && !context.isAdmin) {
      return fail(res, 403, 'The requested image has been deactivated. Image data download is prohibited.');
    }
    if (data === null) return void res.writeHead(204).end();
    let body = faults.corrupt ? corrupted(data) : data;
    const range = parseRange(req.headers.range, data.length);
    if (range === 'unsatisfiable') {
      res.writeHead(416, { 'content-range': `bytes */${data.length}` }).end();
      return;
    }
    const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream' };
    if (range) {
      body = body.subarray(range.start, range.end + 1);
      headers['content-range'] = `bytes ${range.start}-${range.end}/${data.length}`;
    } else if (record.checksum) {
      headers['content-md5'] = record.checksum; // hex, as Glance sends it (bug 1591004)
    }
    headers['content-length'] = body.length;
    res.writeHead(range ? 206 : 200, headers);
    this.downloadsNow += 1;
    this.mostDownloadsAtOnce = Math.max(this.mostDownloadsAtOnce, this.downloadsNow);
    // Counted down at the first of 'finish' (all handed to the OS) and 'close': never after the client has it all.
    let sending = true;
    const sent = () => {
      if (sending) this.downloadsNow -= 1;
      sending = false;
    };
    res.once('finish', sent).once('close', sent);
    await this.#stream(res, record.id, body, faults);
  }

  async #stream(res: ServerResponse, id: string, body: Buffer, faults: FakeImageFaults): Promise<void> {
    const limit = faults.resetAfter ?? Infinity;
    let closed = false;
    res.once('close', () => (closed = true));
    let offset = 0;
    while (offset < body.length && !closed) {
      if (faults.slowMs) await sleep(faults.slowMs);
      if (faults.gate && offset > 0) await faults.gate;
      if (closed) break;
      const end = Math.min(body.length, offset + this.#options.chunkSize, limit);
      if (end > offset) {
        const flushed = new Promise<void>((resolve) => res.write(body.subarray(offset, end), () => resolve()));
        this.served.set(id, (this.served.get(id) ?? 0) + (end - offset));
        offset = end;
        if (offset >= limit) await flushed;
        else if (res.writableNeedDrain) await drainedOrClosed(res);
      }
      if (offset >= limit) {
        res.socket?.destroy(); // resetAfter: the connection dies mid-body
        return;
      }
    }
    if (offset < body.length) {
      this.abandoned.set(id, (this.abandoned.get(id) ?? 0) + 1);
      return;
    }
    res.end();
  }

  async #upload(req: IncomingMessage, res: ServerResponse, image: StoredImage, context: Context): Promise<void> {
    const { record } = image;
    if (!context.isAdmin && record.owner && record.owner !== context.projectId) {
      return fail(res, 403, 'You are not permitted to upload data for this image.');
    }
    if (record.status !== 'queued') {
      return fail(res, 409, `Image status transition from ${record.status} to saving is not allowed`);
    }
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const data = Buffer.concat(chunks);
    image.data = data;
    Object.assign(record, { status: 'active', ...digests(data) });
    res.writeHead(204).end();
  }
}

function digests(data: Buffer | null): Pick<ImageRecord, 'size' | 'checksum' | 'os_hash_algo' | 'os_hash_value'> {
  if (!data) return { size: null, checksum: null, os_hash_algo: null, os_hash_value: null };
  return {
    size: data.length,
    checksum: createHash('md5').update(data).digest('hex'),
    os_hash_algo: 'sha512',
    os_hash_value: createHash('sha512').update(data).digest('hex'),
  };
}

function visible(record: ImageRecord, context: Context): boolean {
  if (context.isAdmin || !record.owner) return true;
  if (record.visibility !== 'private' && record.visibility !== 'shared') return true;
  return record.owner === context.projectId;
}

function corrupted(data: Buffer): Buffer {
  const copy = Buffer.from(data);
  for (let i = 0; i < copy.length; i += 64 * 1024) copy[i] = (copy[i] ?? 0) ^ 0xff;
  return copy;
}

/** One `bytes=` range (RFC 9110 §14.1.2), inclusive; null when absent or not one we serve (then 200 in full). */
function parseRange(
  value: string | undefined,
  length: number,
): { start: number; end: number } | 'unsatisfiable' | null {
  const match = value === undefined ? null : /^bytes=(\d*)-(\d*)$/.exec(value.trim());
  if (!match || (match[1] === '' && match[2] === '')) return null;
  let start: number;
  let end: number;
  if (match[1] === '') {
    start = Math.max(0, length - Number(match[2]));
    end = length - 1;
  } else {
    start = Number(match[1]);
    end = match[2] === '' ? length - 1 : Math.min(Number(match[2]), length - 1);
  }
  if (start >= length || start > end) return 'unsatisfiable';
  return { start, end };
}

function versions(base: string, listed?: Array<{ id: string; status: string }>): unknown {
  const link = [{ rel: 'self', href: `${base}/v2/` }];
  const entries = listed ?? [
    { id: 'v2.17', status: 'CURRENT' },
    { id: 'v2.16', status: 'SUPPORTED' },
    { id: 'v2.0', status: 'SUPPORTED' },
  ];
  return { versions: entries.map((entry) => ({ ...entry, links: link })) };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=UTF-8',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

/** An error answer in the shape of Glance's JSON errors. */
function fail(res: ServerResponse, status: number, message: string): void {
  json(res, status, { code: status, title: STATUS_CODES[status] ?? 'Error', message });
}
