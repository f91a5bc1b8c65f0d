/**
 * Every code imgcache reports, with the HTTP status the server answers it with and the exit code the CLI ends
 * with. The one table: `src/server/errors.ts` and `src/cli/exit.ts` read it and nothing else, and
 * {@link ImageCacheError} takes only a key of it, so a code without a status or an exit code cannot compile.
 *
 * Exit codes (`imgcache --help`): 1 the operation failed; 2 the command line, the configuration or an image id is
 * wrong, so retrying the same command can never succeed. Statuses: 500 for faults of the cache itself (disk,
 * hash threads, driver configuration), which a client cannot fix.
 */
export const ERROR_CODES = {
  // What the client sent.
  ERR_BAD_REQUEST: { status: 400, exit: 1 },
  ERR_INVALID_IMAGE_ID: { status: 400, exit: 2 },
  ERR_IMAGE_STATE: { status: 400, exit: 1 },
  ERR_UNAUTHORIZED: { status: 401, exit: 1 },
  ERR_FORBIDDEN: { status: 403, exit: 1 },
  ERR_IMAGE_NOT_FOUND: { status: 404, exit: 1 },
  ERR_IMAGE_NOT_CACHED: { status: 404, exit: 1 },
  ERR_NOT_SUPPORTED: { status: 409, exit: 1 },
  ERR_RANGE_NOT_SATISFIABLE: { status: 416, exit: 1 },
  // Written by the server's own handlers, never thrown: an unrouted path, a method a route does not serve, and
  // an error that is not ours (its message is not shown).
  ERR_NOT_FOUND: { status: 404, exit: 1 },
  ERR_METHOD_NOT_ALLOWED: { status: 405, exit: 1 },
  ERR_INTERNAL: { status: 500, exit: 1 },
  // Configuration and command line: nothing was touched.
  ERR_INVALID_CONFIG: { status: 500, exit: 2 },
  ERR_UNKNOWN_DRIVER: { status: 500, exit: 2 },
  ERR_CLI_USAGE: { status: 500, exit: 2 },
  ERR_CLI_FAILED: { status: 500, exit: 1 },
  // The cache itself.
  ERR_BAD_DRIVER_CONFIGURATION: { status: 500, exit: 1 },
  ERR_CACHE_IO: { status: 500, exit: 1 },
  ERR_WRITE_CLOSED: { status: 500, exit: 1 },
  ERR_FILL_IN_PROGRESS: { status: 500, exit: 1 },
  ERR_READ_STREAM_USED: { status: 500, exit: 1 },
  ERR_HASH_WORKER: { status: 500, exit: 1 },
  ERR_FILL_ABORTED: { status: 500, exit: 1 },
  ERR_NOT_CACHED: { status: 500, exit: 1 },
  // Upstream: the origin or Keystone.
  ERR_ORIGIN: { status: 502, exit: 1 },
  ERR_CHECKSUM_MISMATCH: { status: 502, exit: 1 },
  ERR_SIZE_MISMATCH: { status: 502, exit: 1 },
  ERR_AUTH_UNAVAILABLE: { status: 503, exit: 1 },
  ERR_SHUTTING_DOWN: { status: 503, exit: 1 },
  ERR_PEER_BUSY: { status: 503, exit: 1 },
  ERR_FILL_IDLE_TIMEOUT: { status: 504, exit: 1 },
} as const satisfies Record<`ERR_${string}`, { status: number; exit: 1 | 2 }>;

/** A code of {@link ERROR_CODES}. */
export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * Every error imgcache throws is an {@link ImageCacheError} with a stable `code`. Callers (the CLI, the HTTP
 * layer) switch on the code, never on the message, so messages are free to say what the operator should fix.
 */
export class ImageCacheError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** An image id that could escape the cache directory or collide with a file the cache owns. */
export class InvalidImageIdError extends ImageCacheError {
  readonly imageId: string;

  constructor(imageId: string, reason: string) {
    super(
      'ERR_INVALID_IMAGE_ID',
      `invalid image id ${JSON.stringify(imageId.length > 80 ? `${imageId.slice(0, 80)}…` : imageId)}: ${reason}`,
    );
    this.imageId = imageId;
  }
}

/** Glance's `BadDriverConfiguration`: the driver cannot work with the configuration it was given. */
export class BadDriverConfigurationError extends ImageCacheError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_BAD_DRIVER_CONFIGURATION', message, options);
  }
}

/** `image_cache_driver` names no driver we have. Never silently replaced by another driver. */
export class UnknownDriverError extends ImageCacheError {
  constructor(name: string, known: readonly string[]) {
    super(
      'ERR_UNKNOWN_DRIVER',
      `image_cache_driver: unknown driver ${JSON.stringify(name)}; choose one of ${known.join(', ')}`,
    );
  }
}

/** A configuration value that is missing, malformed or out of range. The message names the option. */
export class ConfigError extends ImageCacheError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_INVALID_CONFIG', message, options);
  }
}

/** The image has no complete file in the cache. */
export class ImageNotCachedError extends ImageCacheError {
  readonly imageId: string;

  constructor(imageId: string, options?: { cause?: unknown }) {
    super('ERR_IMAGE_NOT_CACHED', `image ${imageId} is not cached`, options);
    this.imageId = imageId;
  }
}

/** The bytes written do not hash to what the image's metadata promised. */
export class ChecksumMismatchError extends ImageCacheError {
  readonly imageId: string;
  readonly algorithm: string;
  readonly expected: string;
  readonly found: string;

  constructor(imageId: string, algorithm: string, expected: string, found: string) {
    super(
      'ERR_CHECKSUM_MISMATCH',
      `checksum verification failed for image ${imageId}: ${algorithm} expected ${expected}, found ${found}`,
    );
    this.imageId = imageId;
    this.algorithm = algorithm;
    this.expected = expected;
    this.found = found;
  }
}

/** The number of bytes written differs from the image's declared size. */
export class SizeMismatchError extends ImageCacheError {
  readonly imageId: string;
  readonly expected: number;
  readonly found: number;

  constructor(imageId: string, expected: number, found: number) {
    super('ERR_SIZE_MISMATCH', `size mismatch for image ${imageId}: expected ${expected} bytes, found ${found}`);
    this.imageId = imageId;
    this.expected = expected;
    this.found = found;
  }
}

/** The driver lacks an optional ability (for example listing the nodes that cache an image). */
export class CapabilityNotSupportedError extends ImageCacheError {
  constructor(driver: string, capability: string) {
    super('ERR_NOT_SUPPORTED', `the ${driver} driver does not support ${capability}`);
  }
}

/** A write handle was used after it was committed or rolled back. */
export class WriteClosedError extends ImageCacheError {
  constructor(imageId: string, state: string) {
    super('ERR_WRITE_CLOSED', `write of image ${imageId} is already ${state}`);
  }
}

/** Something on disk stopped an operation (a file that cannot be removed, a directory where a file should be). */
export class CacheIOError extends ImageCacheError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_CACHE_IO', message, options);
  }
}

/** A fill was stopped before it finished: every consumer went away (and it was not a prefetch), or `why`. */
export class FillAbortedError extends ImageCacheError {
  constructor(imageId: string, why = 'every consumer disconnected') {
    super('ERR_FILL_ABORTED', `fill of image ${imageId} aborted: ${why}`);
  }
}

/** The origin sent nothing for `image_cache_fill_idle_timeout` seconds. */
export class FillIdleTimeoutError extends ImageCacheError {
  constructor(imageId: string, seconds: number) {
    super(
      'ERR_FILL_IDLE_TIMEOUT',
      `fill of image ${imageId} aborted: the origin sent nothing for ${seconds} s (image_cache_fill_idle_timeout)`,
    );
  }
}

/** A prefetch or import ended without a cached image although the origin delivered (a cache fault, the cap). */
export class NotCachedError extends ImageCacheError {
  constructor(imageId: string, reason: string, options?: { cause?: unknown }) {
    super('ERR_NOT_CACHED', `image ${imageId} was not cached: ${reason}`, options);
  }
}

/** The image does not exist (or the caller may not see it, which Glance also answers with 404). */
export class ImageNotFoundError extends ImageCacheError {
  readonly imageId: string;

  constructor(imageId: string, options?: { cause?: unknown }) {
    super('ERR_IMAGE_NOT_FOUND', `image ${imageId} not found`, options);
    this.imageId = imageId;
  }
}

/** No credentials, or credentials that are not valid (HTTP 401). */
export class UnauthorizedError extends ImageCacheError {
  constructor(message = 'authentication required: send a valid X-Auth-Token', options?: { cause?: unknown }) {
    super('ERR_UNAUTHORIZED', message, options);
  }
}

/** Valid credentials, but the policy (or the origin) refuses the action (HTTP 403). */
export class ForbiddenError extends ImageCacheError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_FORBIDDEN', message, options);
  }
}

/** A request that can never succeed as sent (HTTP 400): a bad header, a body where none belongs. */
export class BadRequestError extends ImageCacheError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_BAD_REQUEST', message, options);
  }
}

/** The image exists but is in a state that forbids the action (not active, deactivated, no data). */
export class ImageStateError extends ImageCacheError {
  readonly status: string;

  constructor(imageId: string, status: string, action: string) {
    super('ERR_IMAGE_STATE', `image ${imageId} is ${status}: cannot ${action}`);
    this.status = status;
  }
}

/** The origin failed in a way that is not about the image (unreachable, 5xx, a protocol error): HTTP 502. */
export class OriginError extends ImageCacheError {
  /** HTTP status the origin answered, when it answered. */
  readonly originStatus: number | null;

  constructor(message: string, originStatus: number | null = null, options?: { cause?: unknown }) {
    super('ERR_ORIGIN', message, options);
    this.originStatus = originStatus;
  }
}

/** Keystone cannot answer (unreachable, 5xx, it rejects our service user): HTTP 503, never the caller's fault. */
export class AuthUnavailableError extends ImageCacheError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AUTH_UNAVAILABLE', message, options);
  }
}

/** The server is stopping: fills still running at `shutdown_timeout` are aborted with this (HTTP 503). */
export class ShuttingDownError extends ImageCacheError {
  constructor(message = 'the server is shutting down') {
    super('ERR_SHUTTING_DOWN', message);
  }
}

/** A hash thread of the cache died: a fault of the cache, not of the origin (the next fill gets new threads). */
export class HashWorkerError extends ImageCacheError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_HASH_WORKER', message, options);
  }
}

/**
 * This node already sends `peer_max_readers` copies of the image to other nodes (HTTP 503, Retry-After): the
 * asking node reads from another node that receives the image (fan-out), never from the origin for that reason.
 */
export class PeerBusyError extends ImageCacheError {
  constructor(imageId: string, limit: number) {
    super('ERR_PEER_BUSY', `this node already sends image ${imageId} to ${limit} other node(s) (peer_max_readers); read it from another node`);
  }
}
