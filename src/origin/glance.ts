import type { Readable } from 'node:stream';
import { type Agent, type Dispatcher, errors } from 'undici';
import type { ClientTls } from '../http-client.js';
import { BadRequestError, ConfigError, ImageStateError, OriginError } from '../errors.js';
import type { ApiVersion, ImageRecord, Origin, OriginCaller, ProxyRequest, ProxyResponse } from './origin.js';
import { forwardRequestHeaders, forwardResponseHeaders } from './proxy-headers.js';
import { checkImageId, IMAGE_CHUNK_BYTES, isJsonObject, toImageRecord } from './record.js';
import {
  createAgent,
  discard,
  rangedBody,
  readJson,
  redactUrl,
  send,
  sendDirect,
  statusError,
  timeoutOf,
  type TransportOptions,
} from './transport.js';

/** Options of a {@link GlanceOrigin}. */
export interface GlanceOriginOptions extends TransportOptions {
  /**
   * `X-Auth-Token` for the server's own requests (prefetch), which have no caller. Without it those requests go
   * out unauthenticated and a Keystone-protected Glance answers 401.
   */
  serviceToken?: string;
}

/** Checks a `glance:` base URL; throws {@link ConfigError}. Returns it without a trailing slash. */
export function parseGlanceUrl(location: string): URL {
  let url: URL;
  try {
    url = new URL(location);
  } catch (error) {
    throw new ConfigError(`origin glance URL ${JSON.stringify(location)} is not a valid URL`, { cause: error });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(`origin glance URL must be http:// or https://, not ${url.protocol}`);
  }
  if (url.username || url.password || url.search || url.hash) {
    throw new ConfigError('origin glance URL must be a base URL without credentials, query or fragment');
  }
  url.pathname = url.pathname.replace(/\/+$/, '');
  return url;
}

/**
 * `glance:URL`: an upstream Glance API. Every metadata and data request carries the caller's `X-Auth-Token`, so
 * the upstream decides what the caller may see (a private image of another project is 404, as in Glance itself).
 * Requests without a caller token (the server's own prefetch work) use the configured service token.
 */
export class GlanceOrigin implements Origin {
  readonly kind = 'glance' as const;
  readonly authorizesCallers = true;
  readonly description: string;
  readonly #origin: string;
  readonly #basePath: string;
  readonly #timeoutMs: number;
  readonly #tls: ClientTls;
  readonly #agent: Agent;
  readonly #serviceToken: string | undefined;

  constructor(baseUrl: string, options: GlanceOriginOptions = {}) {
    const url = parseGlanceUrl(baseUrl);
    this.#origin = url.origin;
    this.#basePath = url.pathname === '/' ? '' : url.pathname;
    this.description = `glance:${redactUrl(url).replace(/\/$/, '')}`;
    this.#agent = createAgent(options);
    this.#timeoutMs = timeoutOf(options);
    this.#tls = options.tls ?? {};
    this.#serviceToken = options.serviceToken;
  }

  /** `GET /v2/images/{id}` as the caller. */
  async getImage(imageId: string, caller: OriginCaller): Promise<ImageRecord> {
    const id = checkImageId(imageId);
    const what = `glance origin, GET image ${id}`;
    const response = await this.#request('GET', `/v2/images/${encodeURIComponent(id)}`, caller, what);
    if (response.statusCode !== 200) throw await statusError(response, id, what, 'unauthorized');
    const image = await readJson(response, what);
    if (!isJsonObject(image) || typeof image.status !== 'string') {
      throw new OriginError(`${what}: the answer is not a Glance image (a JSON object with a status)`, 200);
    }
    try {
      return toImageRecord(id, image, { status: 'active', size: null });
    } catch (error) {
      throw new OriginError(`${what}: bad image document: ${(error as Error).message}`, 200, { cause: error });
    }
  }

  /** `GET /v2/images/{id}/file` as the caller; 204 (the image has no data, bug 1251055) is an ImageStateError. */
  async openImage(imageId: string, caller: OriginCaller, signal: AbortSignal): Promise<Readable> {
    signal.throwIfAborted();
    const id = checkImageId(imageId);
    const what = `glance origin, GET image ${id} data`;
    const path = `/v2/images/${encodeURIComponent(id)}/file`;
    // The direct client (its body is read without a copy per socket read); Glance does not redirect downloads.
    const url = new URL(`${this.#origin}${this.#basePath}${path}`);
    const headers = this.#headers('GET', path, caller);
    const request = { url, headers, timeoutMs: this.#timeoutMs, tls: this.#tls, signal };
    const response = await sendDirect(request, what);
    if (response.statusCode === 204) {
      discard(response.body);
      throw new ImageStateError(id, 'queued', 'download it: it has no data');
    }
    if (response.statusCode !== 200) throw await statusError(response, id, what, 'unauthorized');
    return response.body;
  }

  /**
   * `GET /v2/images/{id}/file` with a `Range` header (Glance answers 206 since Pike); an upstream that ignores
   * the header and sends the whole image (200) is cut to the range here.
   */
  async openImageRange(
    imageId: string,
    caller: OriginCaller,
    range: { start: number; end: number },
    signal: AbortSignal,
  ): Promise<Readable> {
    signal.throwIfAborted();
    const id = checkImageId(imageId);
    const what = `glance origin, GET image ${id} bytes ${range.start}-${range.end}`;
    const path = `/v2/images/${encodeURIComponent(id)}/file`;
    const response = await this.#request('GET', path, caller, what, signal, `bytes=${range.start}-${range.end}`);
    return rangedBody(response, range, id, what, 'unauthorized');
  }

  /**
   * `GET /versions` (public in Glance: no token): the upstream's Images API versions, as listed. Glance answers
   * 200 here (300 only for `GET /`); entries that are not `{"id": string, "status": string}` are an error.
   */
  async apiVersions(): Promise<ApiVersion[]> {
    const what = 'glance origin, GET /versions';
    const response = await send(
      this.#agent,
      {
        origin: this.#origin,
        path: `${this.#basePath}/versions`,
        method: 'GET',
        headers: { accept: 'application/json', 'user-agent': 'imgcache' },
      },
      what,
    );
    if (response.statusCode !== 200 && response.statusCode !== 300) {
      discard(response.body);
      throw new OriginError(`${what}: the origin answered ${response.statusCode}`, response.statusCode);
    }
    const body = await readJson(response, what);
    const entries = isJsonObject(body) ? body.versions : undefined;
    if (!Array.isArray(entries)) throw new OriginError(`${what}: the answer has no "versions" list`, response.statusCode);
    return entries.map((entry: unknown) => {
      if (!isJsonObject(entry) || typeof entry.id !== 'string' || typeof entry.status !== 'string') {
        throw new OriginError(`${what}: a version entry without a string "id" and "status"`, response.statusCode);
      }
      return { id: entry.id, status: entry.status };
    });
  }

  /** `DELETE /v2/images/{id}` as the caller: resolves on 2xx; 404, 401, 403 and the rest map as for getImage. */
  async deleteImage(imageId: string, caller: OriginCaller): Promise<void> {
    const id = checkImageId(imageId);
    const what = `glance origin, DELETE image ${id}`;
    const response = await this.#request('DELETE', `/v2/images/${encodeURIComponent(id)}`, caller, what);
    if (response.statusCode < 200 || response.statusCode > 299) {
      throw await statusError(response, id, what, 'unauthorized');
    }
    await response.body.dump();
  }

  /**
   * Forwards any request to the upstream as it is, streaming the body both ways. Hop-by-hop headers (RFC 9110
   * §7.6.1) are dropped in both directions, `Host` becomes the upstream's, and `Via` is added (§7.6.3). Upstream
   * statuses are returned, never thrown; only an unreachable upstream is an {@link OriginError}.
   */
  async proxy(request: ProxyRequest): Promise<ProxyResponse> {
    if (!request.path.startsWith('/')) {
      throw new BadRequestError(`proxy path must start with "/": ${JSON.stringify(request.path.slice(0, 80))}`);
    }
    const what = `glance origin, ${request.method} ${request.path.split('?')[0]}`;
    let response: Dispatcher.ResponseData;
    try {
      response = await send(
        this.#agent,
        {
          origin: this.#origin,
          path: `${this.#basePath}${request.path}`,
          method: request.method,
          headers: forwardRequestHeaders(request.headers),
          body: request.body,
          signal: request.signal,
          highWaterMark: IMAGE_CHUNK_BYTES, // downloads with Range pass through here
        },
        what,
      );
    } catch (error) {
      // undici refuses what it cannot send (a bad method or header value): the client's request is at fault.
      if (error instanceof OriginError && error.cause instanceof errors.InvalidArgumentError) {
        throw new BadRequestError(`${what}: ${error.cause.message}`, { cause: error.cause });
      }
      throw error;
    }
    return { status: response.statusCode, headers: forwardResponseHeaders(response.headers), body: response.body };
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }

  #request(
    method: 'GET' | 'DELETE',
    path: string,
    caller: OriginCaller,
    what: string,
    signal?: AbortSignal,
    range?: string,
  ): Promise<Dispatcher.ResponseData> {
    const headers = this.#headers(method, path, caller);
    if (range) headers.range = range;
    const options: Dispatcher.RequestOptions = {
      origin: this.#origin,
      path: `${this.#basePath}${path}`,
      method,
      headers,
      signal,
    };
    if (path.endsWith('/file')) options.highWaterMark = IMAGE_CHUNK_BYTES;
    return send(this.#agent, options, what);
  }

  #headers(method: 'GET' | 'DELETE', path: string, caller: OriginCaller): Record<string, string> {
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'imgcache' };
    const token = caller.token ?? (caller.service ? this.#serviceToken : undefined);
    if (token !== undefined) headers['x-auth-token'] = token;
    if (caller.requestId) headers['x-openstack-request-id'] = caller.requestId;
    if (method === 'GET' && path.endsWith('/file')) headers.accept = 'application/octet-stream';
    return headers;
  }
}
