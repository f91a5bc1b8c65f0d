import type { Readable } from 'node:stream';

/**
 * Glance image metadata as the cache uses it (the fields of `GET /v2/images/{id}`). Extra properties are kept:
 * policies may refer to them (`'test_1234':%(x_test_key)s`).
 */
export interface ImageRecord {
  id: string;
  /** `active`, `queued`, `saving`, `deactivated`, `deleted`, `pending_delete`, `killed`, `importing`, `uploading`. */
  status: string;
  size: number | null;
  /** MD5 hex digest. */
  checksum: string | null;
  os_hash_algo: string | null;
  os_hash_value: string | null;
  visibility?: string;
  owner?: string | null;
  [property: string]: unknown;
}

/** Who is asking, as far as the origin needs to know: a Glance origin forwards the caller's token. */
export interface OriginCaller {
  /** The caller's `X-Auth-Token`, forwarded as is. */
  token?: string;
  /**
   * The server's own work (prefetch), with no caller behind it: only then does an origin use its configured
   * service credentials. A caller without a token stays without one: it never borrows the service's view.
   */
  service?: boolean;
  /** Request id for the origin's logs (`X-Openstack-Request-Id`). */
  requestId?: string;
}

/** One entry of an Images API's `GET /versions` (`{"id": "v2.16", "status": "CURRENT"}`). */
export interface ApiVersion {
  id: string;
  /** `CURRENT`, `SUPPORTED`, `DEPRECATED`, ... as the origin says. */
  status: string;
}

/** A request for {@link Origin.proxy}, as the server received it. */
export interface ProxyRequest {
  method: string;
  /** Path and query, starting with `/`, e.g. `/v2/images?limit=10`. Appended to the upstream's base path. */
  path: string;
  headers: Record<string, string | string[] | undefined>;
  /** The request body, streamed upstream as it arrives; null for none. */
  body: Readable | null;
  /** Abort to cancel the upstream request (the client went away). */
  signal?: AbortSignal;
}

/** The upstream's answer to a proxied request; `body` streams and must be consumed or destroyed. */
export interface ProxyResponse {
  status: number;
  headers: Record<string, string | string[]>;
  body: Readable;
}

/**
 * Where images come from on a miss. Three kinds, chosen by `--origin`: `directory:PATH`, `http:TEMPLATE`,
 * `glance:URL`.
 *
 * Errors: {@link ImageNotFoundError} (unknown, or invisible to the caller: Glance answers 404 for both),
 * {@link ForbiddenError} (the origin refuses the caller), {@link OriginError} (anything else).
 */
export interface Origin {
  readonly kind: 'directory' | 'http' | 'glance';
  /** Human-readable location for logs and `/healthz` (no credentials). */
  readonly description: string;
  /**
   * Whether the origin decides, per caller, who may see an image (`glance:`: the caller's token goes upstream).
   * When it does not (`directory:`, `http:`: every caller sees every image), a cached image needs no origin
   * round trip: the server serves the hit from what the cache recorded, even while the origin is down.
   */
  readonly authorizesCallers: boolean;
  /** The image's metadata as `caller` may see it. */
  getImage(imageId: string, caller: OriginCaller): Promise<ImageRecord>;
  /** The image's bytes from the start. Abort `signal` to cancel the transfer. */
  openImage(imageId: string, caller: OriginCaller, signal: AbortSignal): Promise<Readable>;
  /**
   * The image's bytes with the metadata its response carries, from one request: for origins whose download
   * response says all that `getImage` would (`http:`: size and digests are headers), a miss then costs one
   * origin request instead of two. Optional. Abort `signal` to cancel the transfer.
   */
  openImageWithRecord?(
    imageId: string,
    caller: OriginCaller,
    signal: AbortSignal,
  ): Promise<{ record: ImageRecord; body: Readable }>;
  /**
   * Just the inclusive byte range `start..end` (an HTTP `Range` request, a positioned read). Optional: without
   * it, a range is cut from the whole stream.
   */
  openImageRange?(
    imageId: string,
    caller: OriginCaller,
    range: { start: number; end: number },
    signal: AbortSignal,
  ): Promise<Readable>;
  /**
   * The Images API versions the origin advertises (its `GET /versions`), for origins that are an Images API
   * themselves (`glance:`); the server follows them instead of promising APIs the origin lacks. Absent for
   * origins that are not. @throws OriginError when the origin cannot say.
   */
  apiVersions?(): Promise<ApiVersion[]>;
  /**
   * Forwards any request to the upstream as it is (streamed both ways), for origins that are a whole Images API
   * (`glance:`): with it the server stands in for the upstream, so clients point at imgcache instead of Glance.
   * Upstream statuses are returned, never thrown. Comes with {@link deleteImage}; see {@link canProxy}.
   */
  proxy?(request: ProxyRequest): Promise<ProxyResponse>;
  /** `DELETE /v2/images/{id}` upstream as `caller` (an origin that proxies also deletes). */
  deleteImage?(imageId: string, caller: OriginCaller): Promise<void>;
  /**
   * Every image the origin holds, for origins that can enumerate them (`directory:`); the server's Images API
   * lists them. Absent for origins that cannot (`http:`: a URL template has no index).
   */
  listImages?(): Promise<ImageRecord[]>;
  /** Releases sockets and timers. */
  close(): Promise<void>;
}

/** An origin the server can stand in for: it forwards requests and deletes images upstream. */
export type ProxyingOrigin = Origin & Required<Pick<Origin, 'proxy' | 'deleteImage'>>;

/** Whether the server can proxy the Images API to `origin`: a capability, never a question of its class. */
export function canProxy(origin: Origin): origin is ProxyingOrigin {
  return typeof origin.proxy === 'function' && typeof origin.deleteImage === 'function';
}
