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
  /** Releases sockets and timers. */
  close(): Promise<void>;
}
