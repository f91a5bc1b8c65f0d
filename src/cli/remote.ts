import type { Logger } from 'pino';
import type { Agent, Dispatcher } from 'undici';
import { z } from 'zod';
import {
  type ClientTls,
  closedBeforeAnswer,
  header,
  type HttpResponse,
  httpRequest,
  isCertificateError,
  isClientCertificateRefusal,
  requestFailure,
  tlsAgent,
} from '../http-client.js';
import { CliFailure, CliUsageError } from './exit.js';

/** How long one request may take, connection included. Prune and clean of a big cache are the slow ones. */
export const REMOTE_TIMEOUT_MS = 60_000;

/** What `clear --target` sends: Glance's `x-image-cache-clear-target`, where "both" is no header (spec §5.6). */
const CLEAR_HEADER = { cache: 'cache', queue: 'queue', both: undefined } as const;

/**
 * `GET /v2/cache` as Glance and imgcache answer it. Loose objects: fields we do not know (the centralized
 * driver's `id` and `checksum`) are kept, so `list --json` prints the body.
 */
const listingSchema = z.looseObject({
  cached_images: z.array(
    z.looseObject({
      image_id: z.string(),
      hits: z.number(),
      last_accessed: z.number(),
      last_modified: z.number(),
      size: z.number(),
    }),
  ),
  queued_images: z.array(z.string()),
});

/** imgcache's `GET /v2/cache/errors`: the last prefetch error of each queued image it could not cache. */
const errorsSchema = z.object({
  prefetch_errors: z.record(z.string(), z.looseObject({ error: z.string() })),
});

/** The server's `GET /v2/cache` body, validated. */
export type RemoteListing = z.infer<typeof listingSchema>;

const pruneSchema = z.object({ total_files_pruned: z.number(), total_bytes_pruned: z.number() });

/** The answer about one image id: done, or refused for a reason that concerns this id only (400, 404, 405). */
export type ImageOutcome = { ok: true } | { ok: false; status: number; reason: string };

/** Options of {@link RemoteCache}. */
export interface RemoteCacheOptions {
  /** Base URL of the server (checked by {@link parseServerUrl}). */
  url: URL;
  /** Sent as `X-Auth-Token`; never logged, never part of a message. @default no token */
  token?: string;
  /** Per-request limit in milliseconds. @default REMOTE_TIMEOUT_MS */
  timeoutMs?: number;
  /** Gets one info line per request (method, path, status); never the token. */
  logger?: Logger;
  /**
   * `--ca-file` / `--insecure`: how an https server is verified; `--cert-file` / `--key-file`: the client
   * certificate shown when it asks for one. @default Node's roots, verified, no client certificate
   */
  tls?: ClientTls;
}

/** `--url` as a base URL, or a {@link CliUsageError} (exit 2): only http(s), no query, no fragment. */
export function parseServerUrl(raw: string, source: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new CliUsageError(`${source} must be an http:// or https:// URL (http://HOST:PORT); got ${quote(raw)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new CliUsageError(`${source} must be an http:// or https:// URL; got ${quote(raw)}`);
  }
  if (url.search !== '' || url.hash !== '') throw new CliUsageError(`${source} must not have a query or a fragment`);
  if (url.username !== '' || url.password !== '') {
    throw new CliUsageError(`${source} must not hold a user name or password; pass a token with --token instead`);
  }
  // A path prefix (a proxy's /glance) is kept: request paths are resolved below it.
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  return url;
}

/**
 * The v2 Cache API of a running server (imgcache or Glance ≥ 2.14, spec §4.4), with the few operations the
 * management commands need. Failures that no other id or retry could fix (unreachable, 401, 403, the API
 * missing) throw {@link CliFailure} with glance-cache-manage's wording (spec §5.4, scenario 109).
 */
export class RemoteCache {
  /** `host:port`, for messages (never the user-info part of the URL). */
  readonly host: string;
  readonly #url: URL;
  readonly #token: string | undefined;
  readonly #timeoutMs: number;
  readonly #logger: Logger | undefined;
  readonly #agent: Agent | null;
  readonly #hasClientCertificate: boolean;

  constructor(options: RemoteCacheOptions) {
    // Always an agent of ours for https: only it reports a server's refusal of the client certificate.
    this.#agent = tlsAgent(options.tls, { always: options.url.protocol === 'https:' });
    this.#hasClientCertificate = options.tls?.cert !== undefined;
    this.#url = options.url;
    this.host = options.url.host;
    this.#token = options.token;
    this.#timeoutMs = options.timeoutMs ?? REMOTE_TIMEOUT_MS;
    this.#logger = options.logger;
  }

  /** Closes the connections of the https agent. */
  async close(): Promise<void> {
    await this.#agent?.close();
  }

  /** `GET /v2/cache`: the listing, checked, and the body as the server sent it (for `list --json`). */
  async list(): Promise<{ listing: RemoteListing; body: unknown }> {
    const response = await this.#expect('GET', 'v2/cache', 200);
    const body = await jsonOf(response);
    const parsed = listingSchema.safeParse(body);
    if (!parsed.success) {
      throw new CliFailure(`${this.host} answered GET /v2/cache with something that is not a cache listing`);
    }
    return { listing: parsed.data, body };
  }

  /**
   * imgcache's `GET /v2/cache/errors`: queued id → its last prefetch error. A Glance has no such route (it
   * answers 405, reading `errors` as an image id): there, no errors are known.
   */
  async prefetchErrors(): Promise<Record<string, string>> {
    const response = await this.#send('GET', 'v2/cache/errors', {});
    if (response.status === 405) {
      await response.discard();
      return {};
    }
    if (response.status !== 200) {
      const { message } = await errorOf(response);
      throw new CliFailure(`${this.host} refused GET /v2/cache/errors (HTTP ${response.status}): ${message}`);
    }
    const parsed = errorsSchema.safeParse(await jsonOf(response));
    if (!parsed.success) {
      throw new CliFailure(`${this.host} answered GET /v2/cache/errors with something that is not a list of errors`);
    }
    return Object.fromEntries(Object.entries(parsed.data.prefetch_errors).map(([id, failure]) => [id, failure.error]));
  }

  /** `PUT /v2/cache/{id}`: 202 when queued (Glance does not say whether it was cached already). */
  async queue(id: string): Promise<ImageOutcome> {
    return this.#forImage('PUT', id, 202);
  }

  /**
   * `DELETE /v2/cache/{id}`: removes the cached file and the queue entry (204). With `scope: 'cluster'`
   * (imgcache's `?scope=cluster`) the server also records a cluster-wide invalidation: every node drops its copy.
   */
  async delete(id: string, options: { scope?: 'node' | 'cluster' } = {}): Promise<ImageOutcome> {
    return this.#forImage('DELETE', id, 204, options.scope === 'cluster' ? '?scope=cluster' : '');
  }

  /** `DELETE /v2/cache`; the API returns no counts (Glance computes and drops them). */
  async clear(target: keyof typeof CLEAR_HEADER): Promise<void> {
    const value = CLEAR_HEADER[target];
    await (await this.#expect('DELETE', 'v2/cache', 204, value ? { 'x-image-cache-clear-target': value } : {})).discard();
  }

  /** `POST /v2/cache/prune` (Images API 2.18), with the server's `image_cache_max_size`. */
  async prune(): Promise<{ filesPruned: number; bytesPruned: number }> {
    const response = await this.#expect('POST', 'v2/cache/prune', 200);
    const parsed = pruneSchema.safeParse(await jsonOf(response));
    if (!parsed.success) throw new CliFailure(`${this.host} answered POST /v2/cache/prune without the pruned counts`);
    return { filesPruned: parsed.data.total_files_pruned, bytesPruned: parsed.data.total_bytes_pruned };
  }

  /** `POST /v2/cache/clean` (Images API 2.18), with the server's `image_cache_stall_time`; no counts. */
  async clean(): Promise<void> {
    await (await this.#expect('POST', 'v2/cache/clean', 200)).discard();
  }

  async #forImage(method: Dispatcher.HttpMethod, id: string, success: number, query = ''): Promise<ImageOutcome> {
    const response = await this.#send(method, `v2/cache/${encodeURIComponent(id)}${query}`, {}, id);
    if (response.status === success) {
      await response.discard();
      return { ok: true };
    }
    // Anything else is about this id: a 404 that reached here is ERR_IMAGE_NOT_FOUND, a 400 an inactive image,
    // a 405 an id that is also a route (`clean`, `prune`: spec §4.4). 5xx (the origin failing) too.
    return { ok: false, status: response.status, reason: (await errorOf(response)).message };
  }

  /** One request that must answer `success`; anything else fails the command with the server's message. */
  async #expect(
    method: Dispatcher.HttpMethod,
    path: string,
    success: number,
    headers: Record<string, string> = {},
  ): Promise<Answer> {
    const response = await this.#send(method, path, headers);
    if (response.status !== success) {
      const { message } = await errorOf(response);
      throw new CliFailure(`${this.host} refused ${method} /${path} (HTTP ${response.status}): ${message}`);
    }
    return response;
  }

  /**
   * One request. Throws for what no other id would change; returns every other response. On an image's route
   * (`imageId` set), a 404 that names the image (imgcache's ERR_IMAGE_NOT_FOUND, Glance's "Image X not found.")
   * is about that image; any other 404 means the route, so the API, is missing.
   */
  async #send(
    method: Dispatcher.HttpMethod,
    path: string,
    headers: Record<string, string>,
    imageId?: string,
  ): Promise<Answer> {
    const url = new URL(path, this.#url);
    const started = Date.now();
    let response: Answer;
    try {
      response = new Answer(
        await httpRequest(url, {
          method,
          headers: { accept: 'application/json', ...headers, ...(this.#token ? { 'x-auth-token': this.#token } : {}) },
          // The signal is the bound of the whole request, connection and body included; undici's own headers and
          // body timeouts get the same value so that its defaults (300 s) never apply.
          signal: AbortSignal.timeout(this.#timeoutMs),
          headersTimeout: this.#timeoutMs,
          bodyTimeout: this.#timeoutMs,
          ...(this.#agent ? { dispatcher: this.#agent } : {}),
        }),
      );
    } catch (error) {
      const reason = networkReason(error, this.#timeoutMs, this.#hasClientCertificate);
      throw new CliFailure(`cannot reach ${this.#url.origin}: ${reason}`, { cause: error });
    }
    this.#logger?.info({ method, path: `/${path}`, status: response.status, ms: Date.now() - started }, 'cache API');
    const { status } = response;
    if (status >= 300 && status < 400) {
      // Never followed (undici does not): following would resend X-Auth-Token to wherever a redirect points.
      await response.discard();
      const to = response.header('location');
      const where = to ? ` to ${to}` : '';
      throw new CliFailure(`${this.host} redirects ${method} /${path}${where}; pass the final URL as --url`);
    }
    if (status === 401 || status === 403) {
      await response.discard();
      throw new CliFailure(
        status === 401
          ? 'authentication failed: pass a valid --token (or set IMGCACHE_TOKEN)'
          : 'Not authorized to make this request.',
      );
    }
    if (status === 404) {
      if (imageId === undefined || !namesImage(await errorOf(response), imageId)) {
        throw new CliFailure(`Cache management API not enabled on host ${this.host}`);
      }
    }
    return response;
  }
}

/**
 * A server's answer with its body read at most once: a 404 is read to see whether it names the image, and then
 * again by whoever reports it.
 */
class Answer {
  readonly status: number;
  readonly #response: HttpResponse;
  #text: Promise<string> | null = null;

  constructor(response: HttpResponse) {
    this.#response = response;
    this.status = response.statusCode;
  }

  /** The status line's reason phrase (`Not Found`), for a body that says nothing. */
  get statusText(): string {
    return this.#response.statusText;
  }

  header(name: string): string | undefined {
    return header(this.#response.headers, name);
  }

  /** The body as text; '' when it broke off. */
  text(): Promise<string> {
    this.#text ??= this.#response.body.text().catch(() => '');
    return this.#text;
  }

  /** Drops a body nobody reads (it is small: an error or an empty 2xx), keeping the socket when it can. */
  async discard(): Promise<void> {
    if (this.#text === null) await this.#response.body.dump().catch(() => {});
  }
}

/** Why a request got no response, in one line: `connect ECONNREFUSED 127.0.0.1:9292`, a DNS error, the timeout. */
function networkReason(error: unknown, timeoutMs: number, hasClientCertificate: boolean): string {
  const failure = requestFailure(error);
  if (failure.kind === 'timeout') return `no answer within ${timeoutMs / 1000} s`;
  if (isCertificateError(error)) {
    return `${failure.message}: the server's TLS certificate is not trusted (pass --ca-file FILE or set IMGCACHE_CA_FILE to the CA that signed it, or --insecure)`;
  }
  const signedBy = "--cert-file must be signed by a CA in the server's ca_file";
  if (isClientCertificateRefusal(error)) {
    // OpenSSL's message is long ("80CC...:error:0A00045C:SSL routines:...:SSL alert number 116"): its reason suffices.
    const alert = /:([^:]*alert[^:]*):/.exec(failure.message)?.[1] ?? failure.message;
    return hasClientCertificate
      ? `the server refused the client certificate (${alert}): ${signedBy}`
      : `the server requires a client certificate (${alert}): pass --cert-file FILE and --key-file FILE (or set ` +
          `IMGCACHE_CERT_FILE and IMGCACHE_KEY_FILE), a certificate signed by a CA in its ca_file and its key`;
  }
  if (hasClientCertificate && closedBeforeAnswer(error)) {
    // Node's TLS server (imgcache serve) closes without an alert on a certificate it does not accept: a guess.
    const guess = 'if it checks client certificates, it did not accept this one';
    return `${failure.message}: the server closed the connection before answering; ${guess} (${signedBy})`;
  }
  return failure.message;
}

/** The `{"error": {"code", "message"}}` of imgcache, Glance's text, or the status line: one line either way. */
async function errorOf(response: Answer): Promise<{ code: string | null; message: string }> {
  const text = (await response.text()).trim();
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown }; message?: unknown };
    const message = body.error?.message ?? body.message;
    const code = body.error?.code;
    if (typeof message === 'string') return { code: typeof code === 'string' ? code : null, message: oneLine(message) };
  } catch {
    // Not JSON: Glance's webob errors are text/plain or HTML.
  }
  const plain = oneLine(text.replace(/<[^>]*>/g, ' '));
  return { code: null, message: plain.slice(0, 300) || response.statusText || `HTTP ${response.status}` };
}

/** A 404 about the image rather than the route: imgcache's code, or Glance's text "Image <id> not found.". */
function namesImage(error: { code: string | null; message: string }, id: string): boolean {
  if (error.code !== null) return error.code === 'ERR_IMAGE_NOT_FOUND';
  return /\bimage\b.*\bnot found\b/i.test(error.message) && error.message.includes(id);
}

async function jsonOf(response: Answer): Promise<unknown> {
  try {
    return JSON.parse(await response.text()) as unknown;
  } catch {
    return undefined;
  }
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

function quote(text: string): string {
  return JSON.stringify(text);
}
