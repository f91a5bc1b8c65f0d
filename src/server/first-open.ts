import type { Readable } from 'node:stream';
import type { ImageRecord } from '../origin/origin.js';

/** One origin GET whose response is both the record and the body (`Origin.openImageWithRecord`). */
export type OpenWithRecord = (signal: AbortSignal) => Promise<{ record: ImageRecord; body: Readable }>;

/**
 * The first GET of an uncached image, shared. With an origin whose download response carries the metadata
 * (`http:`), a miss used to cost two origin requests, a HEAD for the record and a GET for the fill, and 16
 * clients missing at once cost 16 HEADs. Here every request that misses the image while its first GET is open
 * takes the record from that GET's headers, and the fill takes its body: one origin request for all of them.
 *
 * Each request {@link join}s and {@link SharedOpen.release}s when its `fetch` has settled (by then the fill, if
 * one started, has claimed the body). The last release destroys a body nobody claimed (every request turned out
 * to be a hit, or was refused by policy), which closes that origin connection.
 */
export class FirstOpens {
  readonly #pending = new Map<string, SharedOpen>();

  join(imageId: string, open: OpenWithRecord): SharedOpen {
    let shared = this.#pending.get(imageId);
    if (!shared) {
      shared = new SharedOpen(open, () => this.#pending.delete(imageId));
      this.#pending.set(imageId, shared);
    }
    shared.retain();
    return shared;
  }
}

export class SharedOpen {
  /** The origin's record of the image; rejects as `getImage` would (not found, forbidden, unreachable). */
  readonly record: Promise<ImageRecord>;
  readonly #controller = new AbortController();
  readonly #forget: () => void;
  #body: Readable | null = null;
  #claimed = false;
  #refs = 0;

  constructor(open: OpenWithRecord, forget: () => void) {
    this.#forget = forget;
    this.record = open(this.#controller.signal).then(({ record, body }) => {
      this.#body = body;
      return record;
    });
    this.record.catch(() => {}); // every joined request awaits it and gets the error there
  }

  retain(): void {
    this.#refs += 1;
  }

  /**
   * The open body for the first fill that asks, tied to that fill's `signal`; null afterwards (another fill, say
   * a retry after the first failed, opens the origin itself) or when the GET failed.
   */
  claim(signal: AbortSignal): Readable | null {
    if (this.#claimed || !this.#body) return null;
    this.#claimed = true;
    const body = this.#body;
    this.#body = null;
    if (signal.aborted) {
      body.destroy();
      return null;
    }
    signal.addEventListener('abort', () => body.destroy(), { once: true });
    return body;
  }

  release(): void {
    if (--this.#refs > 0) return;
    this.#forget();
    if (this.#claimed) return;
    this.#claimed = true;
    this.#controller.abort();
    this.#body?.destroy();
    this.#body = null;
  }
}
