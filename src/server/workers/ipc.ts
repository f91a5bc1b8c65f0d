/**
 * The messages between the owner process of `workers` and its HTTP workers (node:cluster's IPC channel, JSON).
 * A worker asks; the owner answers requests that carry a `seq` with the same `seq`.
 */

/** Request headers as a worker received them (Node's lower-case names; arrays for repeated ones). */
export type WireHeaders = Record<string, string | string[] | undefined>;

/** Worker -> owner. */
export type WorkerMessage =
  /** May this request be served from the committed file? (auth, policy and a lease on the image) */
  | { type: 'lease'; seq: number; imageId: string; headers: WireHeaders }
  /** The file of lease `lease` was read to the end: record the hit before the last chunk goes out. */
  | { type: 'record'; seq: number; lease: number }
  /** Done with lease `lease` after `bytesRead` bytes (the image may be evicted again). */
  | { type: 'end'; lease: number; bytesRead: number }
  /** This worker is set up: connections may be handed to it. */
  | { type: 'ready' }
  /** A request this worker answered itself, for `imgcache_http_request_duration_seconds`. */
  | { type: 'observe'; method: string; route: string; status: number; seconds: number };

/** Owner -> worker. */
export type OwnerMessage =
  /** The answer to `lease`: the file to stream, or `null` (not cached, refused, or an error): forward it. */
  | { type: 'lease'; seq: number; grant: LeaseGrant | null }
  /** The answer to `record`: the hit is recorded (or failed, logged). */
  | { type: 'recorded'; seq: number }
  /** A client connection the owner accepted, sent with the message as its handle (nothing read from it yet). */
  | { type: 'connection' }
  /** No more connections come; finish the running requests within `shutdown_timeout`, then exit. */
  | { type: 'drain' }
  /** Read `cert_file`, `key_file` and `ca_file` again (SIGHUP). */
  | { type: 'reload-tls' };

/** What a worker needs to stream a leased hit. */
export interface LeaseGrant {
  lease: number;
  path: string;
  size: number;
  /** The image's MD5 (Glance's `Content-MD5`), when recorded. */
  checksum: string | null;
}

/** Environment variables the owner passes to its workers (not options: never set them yourself). */
export const WORKER_ENV = {
  /** The owner's private socket, where everything a worker does not serve itself is forwarded. */
  socket: 'IMGCACHE_INTERNAL_OWNER_SOCKET',
  /** "1" when workers may serve hits themselves (the origin does not authorize callers). */
  hits: 'IMGCACHE_INTERNAL_WORKER_HITS',
} as const;

/** True for a message of the shape `{ type: string }` (IPC carries whatever the other side sent). */
export function isMessage(value: unknown): value is { type: string } {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string';
}
