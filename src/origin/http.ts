import type { Readable } from 'node:stream';
import { type Agent, type Dispatcher, interceptors } from 'undici';
import { ConfigError, ImageStateError, OriginError } from '../errors.js';
import type { ImageRecord, Origin, OriginCaller } from './origin.js';
import { checkImageId, IMAGE_CHUNK_BYTES, md5FromHeader } from './record.js';
import {
  contentLength,
  createAgent,
  discard,
  header,
  type OriginResponse,
  rangedBody,
  redactUrl,
  send,
  sendDirect,
  statusError,
  timeoutOf,
  type TransportOptions,
} from './transport.js';

/** Options of an {@link HttpOrigin}. */
export interface HttpOriginOptions extends TransportOptions {
  /**
   * Redirects followed per request (object stores often answer with a redirect to a signed URL). Credentials from
   * the template are not sent to another host.
   * @default 5
   */
  maxRedirections?: number;
}

/** Stands for `{id}` while the template is parsed: lowercase letters survive URL normalisation anywhere. */
const ID_MARK = 'imgcacheimageidmark';

/** A parsed `http:` template: the URL with `{id}` marked, and the credentials taken out of it. */
export interface HttpTemplate {
  /** The template URL without credentials, `{id}` replaced by a mark. */
  readonly marked: string;
  /** `Basic …` when the template had `user:password@`. */
  readonly authorization: string | undefined;
  /** For logs: the template with `{id}` and without credentials. */
  readonly description: string;
}

/**
 * Checks an `http(s)://…{id}…` template; throws {@link ConfigError} saying what is wrong. `{id}` may appear more
 * than once; each is replaced by the URL-encoded image id.
 */
export function parseHttpTemplate(template: string): HttpTemplate {
  if (!template.includes('{id}')) {
    throw new ConfigError(
      'origin http template must contain {id} where the image id goes, e.g. http://store.example/images/{id}',
    );
  }
  let url: URL;
  try {
    url = new URL(template.replaceAll('{id}', ID_MARK));
  } catch (error) {
    throw new ConfigError(`origin http template is not a valid URL`, { cause: error });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(`origin http template must be an http:// or https:// URL, not ${url.protocol}`);
  }
  if (!url.pathname.includes(ID_MARK) && !url.search.includes(ID_MARK)) {
    throw new ConfigError(`origin http template must have {id} in its path or query, not in the host`);
  }
  const userinfo = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
  const authorization = url.username || url.password ? `Basic ${Buffer.from(userinfo).toString('base64')}` : undefined;
  url.username = '';
  url.password = '';
  url.hash = '';
  return {
    marked: url.href,
    authorization,
    description: `http:${redactUrl(url).replaceAll(ID_MARK, '{id}')}`,
  };
}

/**
 * `http:TEMPLATE`: images are plain HTTP resources, e.g. `http://store.example/images/{id}`. Metadata comes from
 * a HEAD (a GET whose body is never read when HEAD is not allowed), or, for a download, from the headers of the
 * GET the fill reads (`openImageWithRecord`: one request per miss): status `active`, `size` from
 * `Content-Length`, `checksum` from `Content-MD5` (hex as Glance sends it, or base64 per RFC 1864) or v1's
 * `x-image-meta-checksum`, the multihash from `x-image-meta-os_hash_*` or `OpenStack-Image-Hash-*`.
 *
 * The caller's token is never sent here: it is a Keystone token for our API, not a credential for the store.
 */
export class HttpOrigin implements Origin {
  readonly kind = 'http' as const;
  readonly authorizesCallers = false;
  readonly description: string;
  readonly #template: HttpTemplate;
  readonly #agent: Agent;
  readonly #dispatcher: Dispatcher;
  readonly #options: HttpOriginOptions;
  readonly #followsRedirects: boolean;
  /** The store answered an image GET with a redirect (signed URLs): image GETs go through undici, which follows. */
  #redirects = false;

  constructor(template: string, options: HttpOriginOptions = {}) {
    this.#template = parseHttpTemplate(template);
    this.description = this.#template.description;
    this.#options = options;
    this.#agent = createAgent(options);
    const maxRedirections = options.maxRedirections ?? 5;
    this.#followsRedirects = maxRedirections > 0;
    this.#dispatcher =
      maxRedirections > 0 ? this.#agent.compose(interceptors.redirect({ maxRedirections })) : this.#agent;
  }

  async getImage(imageId: string, caller: OriginCaller): Promise<ImageRecord> {
    const id = checkImageId(imageId);
    let method: 'HEAD' | 'GET' = 'HEAD';
    let response = await this.#request(method, id, caller);
    // RFC 9110 §9.1 requires HEAD, yet some stores (signed-URL services, small app servers) refuse it.
    if (response.statusCode === 405 || response.statusCode === 501) {
      await response.body.dump();
      method = 'GET';
      response = await this.#request(method, id, caller);
    }
    try {
      if (response.statusCode < 200 || response.statusCode > 299) {
        throw await statusError(response, id, this.#what(id), 'forbidden');
      }
      return recordFromHeaders(id, response.headers, this.#what(id));
    } finally {
      // A HEAD's body is empty; a GET's stays unread: closing its socket beats downloading the image.
      if (method === 'HEAD') await response.body.dump().catch(() => {});
      else discard(response.body);
    }
  }

  async openImage(imageId: string, caller: OriginCaller, signal: AbortSignal): Promise<Readable> {
    return (await this.openImageWithRecord(imageId, caller, signal)).body;
  }

  /** One GET: its headers are the record (as a HEAD's would be), its body the image. */
  async openImageWithRecord(
    imageId: string,
    caller: OriginCaller,
    signal: AbortSignal,
  ): Promise<{ record: ImageRecord; body: Readable }> {
    signal.throwIfAborted();
    const id = checkImageId(imageId);
    const response = await this.#imageGet(id, caller, signal);
    if (response.statusCode === 204) {
      discard(response.body);
      throw new ImageStateError(id, 'queued', 'download it: it has no data');
    }
    if (response.statusCode < 200 || response.statusCode > 299 || response.statusCode === 206) {
      throw await statusError(response, id, this.#what(id), 'forbidden');
    }
    try {
      return { record: recordFromHeaders(id, response.headers, this.#what(id)), body: response.body };
    } catch (error) {
      discard(response.body);
      throw error;
    }
  }

  /** A ranged GET; a store that ignores ranges (200) has the range cut from its whole body. */
  async openImageRange(
    imageId: string,
    caller: OriginCaller,
    range: { start: number; end: number },
    signal: AbortSignal,
  ): Promise<Readable> {
    signal.throwIfAborted();
    const id = checkImageId(imageId);
    const response = await this.#request('GET', id, caller, signal, `bytes=${range.start}-${range.end}`);
    return rangedBody(response, range, id, `${this.#what(id)}, bytes ${range.start}-${range.end}`, 'forbidden');
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }

  #what(id: string): string {
    return `http origin, image ${id}`;
  }

  /** The image's GET: through the direct client (no copy per read for the fill), unless the store redirects. */
  async #imageGet(id: string, caller: OriginCaller, signal: AbortSignal): Promise<OriginResponse> {
    if (!this.#redirects) {
      const url = this.#url(id);
      const request = {
        url,
        headers: this.#headers(caller),
        timeoutMs: timeoutOf(this.#options),
        tls: this.#options.tls ?? {},
        signal,
      };
      const response = await sendDirect(request, `GET ${redactUrl(url)}`);
      const redirect = response.statusCode >= 300 && response.statusCode < 400 && header(response.headers, 'location');
      if (!(redirect && this.#followsRedirects)) return response;
      discard(response.body);
      this.#redirects = true;
    }
    return this.#request('GET', id, caller, signal);
  }

  #url(id: string): URL {
    return new URL(this.#template.marked.replaceAll(ID_MARK, encodeURIComponent(id)));
  }

  #headers(caller: OriginCaller): Record<string, string> {
    const headers: Record<string, string> = { 'accept-encoding': 'identity', 'user-agent': 'imgcache' };
    if (this.#template.authorization) headers.authorization = this.#template.authorization;
    if (caller.requestId) headers['x-openstack-request-id'] = caller.requestId;
    return headers;
  }

  #request(method: 'GET' | 'HEAD', id: string, caller: OriginCaller, signal?: AbortSignal, range?: string) {
    const url = this.#url(id);
    const headers = this.#headers(caller);
    if (range) headers.range = range;
    return send(
      this.#dispatcher,
      {
        origin: url.origin,
        path: `${url.pathname}${url.search}`,
        method,
        headers,
        signal,
        highWaterMark: IMAGE_CHUNK_BYTES,
      },
      `${method} ${redactUrl(url)}`,
    );
  }
}

/** The record an HTTP store's headers describe. A `Content-MD5` that is no MD5 is a broken origin, not "none". */
function recordFromHeaders(id: string, headers: OriginResponse['headers'], what: string): ImageRecord {
  let checksum: string | null = null;
  const md5 = header(headers, 'content-md5') ?? header(headers, 'x-image-meta-checksum');
  if (md5 !== undefined) {
    checksum = md5FromHeader(md5);
    if (checksum === null) {
      const shown = JSON.stringify(md5.slice(0, 60));
      throw new OriginError(`${what}: the origin sent an MD5 header that is neither hex nor base64: ${shown}`);
    }
  }
  const algo = header(headers, 'x-image-meta-os_hash_algo') ?? header(headers, 'openstack-image-hash-algo');
  const value = header(headers, 'x-image-meta-os_hash_value') ?? header(headers, 'openstack-image-hash-value');
  const multihash = algo && value && /^(?:[0-9a-f]{2})+$/i.test(value.trim());
  return {
    id,
    status: 'active',
    size: contentLength(headers),
    checksum,
    os_hash_algo: multihash ? algo.trim().toLowerCase() : null,
    os_hash_value: multihash ? value.trim().toLowerCase() : null,
  };
}
