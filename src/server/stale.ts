import type { Identity } from '../auth/identity.js';
import { ForbiddenError, ImageNotFoundError, OriginError, UnauthorizedError } from '../errors.js';
import type { ImageRecord } from '../origin/origin.js';

/** Options of {@link ConfirmedRecords}. */
export interface ConfirmedRecordsOptions {
  /** `stale_if_error`: how old a confirmation may be, in seconds, to serve a cached image from it. */
  windowSeconds: number;
  /** Images remembered at most; the least recently confirmed are forgotten first. @default 10000 */
  maxImages?: number;
  /** Callers remembered per image at most. @default 64 */
  maxCallersPerImage?: number;
  now?: () => number;
}

interface Confirmation {
  /** The newest record the origin gave for the image, to any caller. */
  record: ImageRecord;
  /** When that record came, epoch ms. */
  at: number;
  /** Caller (project, else user) → when the origin last showed them the image, epoch ms. */
  callers: Map<string, number>;
}

/** Who a confirmation is for: the caller's project (what Glance's visibility is about), else the user. */
function callerKey(identity: Identity): string | null {
  if (identity.projectId) return `project:${identity.projectId}`;
  if (identity.userId) return `user:${identity.userId}`;
  return null;
}

/**
 * Whether an origin error means "the origin is unreachable" (no answer, a timeout, a 5xx), the only case
 * `stale_if_error` covers. An answer about the caller or the image (401, 403, 404, any other 4xx) never is.
 */
export function isUnreachable(error: unknown): boolean {
  if (!(error instanceof OriginError)) return false;
  return error.originStatus === null || error.originStatus >= 500;
}

/**
 * `stale_if_error` (the edge-site mode): the last image records a glance origin confirmed, per image, with who
 * they were confirmed for. While the origin is unreachable, a caller may be served a cached image only when,
 * within the window, the origin showed that image as `active` to the caller's own project (or user), or showed
 * it as `public` (visible to every authenticated caller in Glance) to anyone. Conservative on purpose: a 401,
 * 403 or 404 forgets the image for that caller (a 404 of a public image, for everyone), and a newer record that
 * is not active blocks it for all. Bounded: at most `maxImages` images and `maxCallersPerImage` callers each.
 */
export class ConfirmedRecords {
  readonly #windowMs: number;
  readonly #maxImages: number;
  readonly #maxCallers: number;
  readonly #now: () => number;
  readonly #images = new Map<string, Confirmation>();

  constructor(options: ConfirmedRecordsOptions) {
    this.#windowMs = options.windowSeconds * 1000;
    this.#maxImages = options.maxImages ?? 10_000;
    this.#maxCallers = options.maxCallersPerImage ?? 64;
    this.#now = options.now ?? Date.now;
  }

  /** Images remembered now. */
  get size(): number {
    return this.#images.size;
  }

  /** The origin just gave `record` to the caller `identity`. */
  confirm(imageId: string, record: ImageRecord, identity: Identity): void {
    const key = callerKey(identity);
    if (key === null) return;
    const at = this.#now();
    const entry = this.#images.get(imageId) ?? { record, at, callers: new Map<string, number>() };
    entry.record = record;
    entry.at = at;
    entry.callers.delete(key); // re-inserted last: Map order is the eviction order
    entry.callers.set(key, at);
    if (entry.callers.size > this.#maxCallers) entry.callers.delete(entry.callers.keys().next().value as string);
    this.#images.delete(imageId);
    this.#images.set(imageId, entry);
    if (this.#images.size > this.#maxImages) this.#images.delete(this.#images.keys().next().value as string);
  }

  /**
   * The origin refused the caller or does not show them the image: forget what it confirmed for them. A 404 of
   * an image last seen `public` means it is gone for everyone (public images are visible to every caller).
   */
  refuted(imageId: string, identity: Identity, error: unknown): void {
    const entry = this.#images.get(imageId);
    if (!entry) return;
    const notFound = error instanceof ImageNotFoundError;
    if (notFound && entry.record.visibility === 'public') {
      this.#images.delete(imageId);
    } else if (notFound || error instanceof UnauthorizedError || error instanceof ForbiddenError) {
      const key = callerKey(identity);
      if (key !== null) entry.callers.delete(key);
    }
  }

  /**
   * The record to serve `identity` from while the origin is unreachable, with its age in seconds; null when
   * nothing recent enough was confirmed for this caller.
   */
  lookup(imageId: string, identity: Identity): { record: ImageRecord; ageSeconds: number } | null {
    const entry = this.#images.get(imageId);
    const key = callerKey(identity);
    if (!entry || key === null || entry.record.status !== 'active') return null;
    const now = this.#now();
    const mine = entry.callers.get(key);
    const confirmedAt = mine !== undefined && now - mine <= this.#windowMs
      ? mine
      : entry.record.visibility === 'public' && now - entry.at <= this.#windowMs
        ? entry.at
        : null;
    if (confirmedAt === null) return null;
    return { record: entry.record, ageSeconds: Math.max(0, Math.round((now - confirmedAt) / 1000)) };
  }
}
