import type { Readable } from 'node:stream';
import { Agent, type Dispatcher } from 'undici';
import { ConfigError, ForbiddenError, ImageNotFoundError, OriginError, UnauthorizedError } from '../errors.js';
import { type ClientTls, header, isCertificateError, tlsConnect } from '../http-client.js';
import { cutRange } from '../streams/slice.js';
import { type DirectRequest, directGet } from './direct-get.js';

// The body and header helpers every undici caller shares live in the leaf http-client; the origins import them
// from here with the rest of their transport.
export { discard, header } from '../http-client.js';

/**
 * What the HTTP-speaking origins (http.ts, glance.ts) share: one keep-alive agent per origin of the one HTTP
 * client (undici, see `http-client.ts`), error mapping and small header helpers. Requests go through undici's
 * `Dispatcher.request` with an explicit origin and path, so a path is sent as given and can never change the host.
 */

/** Connect and response-headers timeout when none is configured. */
export const DEFAULT_TIMEOUT_MS = 30_000;

/** Options shared by the HTTP origins. */
export interface TransportOptions {
  /**
   * Milliseconds to wait for a connection, and then for the response headers. There is no body timeout: images
   * are many GB and the fill engine has its own idle timeout (`image_cache_fill_idle_timeout`).
   * @default 30000
   */
  timeoutMs?: number;
  /** How an https origin is verified (`origin_ca_file`, `origin_insecure`). @default Node's roots, verified */
  tls?: ClientTls;
}

/** A response as the origins read it: undici's, or {@link sendDirect}'s (an image GET). */
export interface OriginResponse {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable;
}

/** The configured timeout; throws {@link ConfigError} for one that is not a positive number. */
export function timeoutOf(options: TransportOptions): number {
  const timeout = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!(Number.isFinite(timeout) && timeout > 0)) {
    throw new ConfigError(`origin timeout must be a positive number of milliseconds, got ${timeout}`);
  }
  return timeout;
}

/** One agent per origin: keep-alive sockets are reused across requests; `close()` ends them. */
export function createAgent(options: TransportOptions): Agent {
  const timeout = timeoutOf(options);
  return new Agent({
    connect: { timeout, ...tlsConnect(options.tls ?? {}) },
    headersTimeout: timeout,
    bodyTimeout: 0,
  });
}

/**
 * Sends a request; a failure to get a response (refused, reset, timed out, a protocol error) becomes an
 * {@link OriginError} without status. An abort through `options.signal` rejects with the signal's reason, as
 * every abortable Node API does: the caller asked for it and knows.
 */
export async function send(
  dispatcher: Dispatcher,
  options: Dispatcher.RequestOptions,
  what: string,
): Promise<Dispatcher.ResponseData> {
  try {
    return await dispatcher.request(options);
  } catch (error) {
    throw requestError(error, options.signal as AbortSignal | null | undefined, what);
  }
}

/**
 * An image GET through the direct client (`direct-get.ts`: its body can be read without a copy per socket read),
 * failures mapped as {@link send} maps them.
 */
export async function sendDirect(request: DirectRequest, what: string): Promise<OriginResponse> {
  try {
    return await directGet(request);
  } catch (error) {
    throw requestError(error, request.signal, what);
  }
}

function requestError(error: unknown, signal: AbortSignal | null | undefined, what: string): unknown {
  if (signal?.aborted) return signal.reason;
  // An untrusted certificate is a configuration problem: say which option fixes it.
  const hint = isCertificateError(error)
    ? ' (the origin\'s TLS certificate is not trusted: set [imgcache] origin_ca_file to the CA that signed it, or origin_insecure = true)'
    : '';
  return new OriginError(`${what} failed: ${(error as Error).message}${hint}`, null, { cause: error });
}

/**
 * The body of a ranged GET: a 206 as it is, a 200 (a store that ignores ranges) cut to the range, anything else
 * the status's error (see {@link statusError}).
 */
export async function rangedBody(
  response: OriginResponse,
  range: { start: number; end: number },
  imageId: string,
  what: string,
  unauthorized: 'unauthorized' | 'forbidden',
): Promise<Readable> {
  if (response.statusCode === 206) return response.body;
  if (response.statusCode === 200) return cutRange(response.body, range);
  throw await statusError(response, imageId, what, unauthorized);
}

/**
 * The error for a non-2xx answer about an image: 404 → {@link ImageNotFoundError}; 401 → {@link UnauthorizedError}
 * (or `ForbiddenError` where the origin's credentials are not the caller's); 403 → {@link ForbiddenError};
 * anything else → {@link OriginError} with `originStatus`. Reads a little of the body for the message, then
 * discards the rest so the socket is freed.
 */
export async function statusError(
  response: OriginResponse,
  imageId: string,
  what: string,
  unauthorized: 'unauthorized' | 'forbidden',
): Promise<Error> {
  const { statusCode } = response;
  const detail = await errorDetail(response.body);
  const suffix = detail ? `: ${detail}` : '';
  if (statusCode === 404) return new ImageNotFoundError(imageId);
  if (statusCode === 401 && unauthorized === 'unauthorized') {
    return new UnauthorizedError(`${what}: the origin needs valid credentials (401)${suffix}`);
  }
  if (statusCode === 401 || statusCode === 403) {
    return new ForbiddenError(`${what}: the origin refused (${statusCode})${suffix}`);
  }
  return new OriginError(`${what}: the origin answered ${statusCode}${suffix}`, statusCode);
}

const DETAIL_BYTES = 2048;

/** A one-line summary of an error body (Glance's JSON `message`/`description`, or text without HTML tags). */
async function errorDetail(body: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of body) {
      chunks.push(chunk as Buffer);
      length += (chunk as Buffer).length;
      if (length >= DETAIL_BYTES) break; // leaving the loop destroys the body: never read a huge error page
    }
  } catch {
    return '';
  }
  const text = Buffer.concat(chunks).subarray(0, DETAIL_BYTES).toString('utf8');
  let summary = text;
  try {
    const json: unknown = JSON.parse(text);
    if (typeof json === 'object' && json !== null) {
      const { message, description, title } = json as Record<string, unknown>;
      const best = [message, description, title].find((value) => typeof value === 'string');
      if (typeof best === 'string') summary = best;
    }
  } catch {
    summary = text.replace(/<[^>]*>/g, ' ');
  }
  summary = summary.replace(/\s+/g, ' ').trim();
  return summary.length > 200 ? `${summary.slice(0, 200)}…` : summary;
}

/** Reads a JSON body of at most `limit` bytes. Anything else is an {@link OriginError} naming `what`. */
export async function readJson(
  response: Dispatcher.ResponseData,
  what: string,
  limit = 4 << 20,
): Promise<unknown> {
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of response.body) {
      length += (chunk as Buffer).length;
      if (length > limit) throw new OriginError(`${what}: the JSON answer exceeds ${limit} bytes`, response.statusCode);
      chunks.push(chunk as Buffer);
    }
  } catch (error) {
    if (error instanceof OriginError) throw error;
    throw new OriginError(`${what}: the answer broke off: ${(error as Error).message}`, response.statusCode, {
      cause: error,
    });
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (error) {
    throw new OriginError(`${what}: the answer is not valid JSON: ${(error as Error).message}`, response.statusCode, {
      cause: error,
    });
  }
}

/** `Content-Length` as a number, or null when absent or not a plain decimal. */
export function contentLength(headers: OriginResponse['headers']): number | null {
  const value = header(headers, 'content-length')?.trim();
  if (value === undefined || !/^\d{1,16}$/.test(value)) return null;
  const length = Number(value);
  return Number.isSafeInteger(length) ? length : null;
}

/** A URL for logs and errors: without user and password. */
export function redactUrl(url: URL): string {
  const copy = new URL(url.href);
  copy.username = '';
  copy.password = '';
  return copy.href;
}
