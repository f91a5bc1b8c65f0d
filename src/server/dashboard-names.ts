import type { Origin, OriginCaller } from '../origin/origin.js';

/** Names remembered, at most (oldest forgotten first). */
const NAMES_KEPT = 2000;
/** New lookups per dashboard poll, at most: a page of unknown images fills in over a few polls, never a burst. */
const LOOKUPS_PER_READ = 10;
/** An image whose lookup failed (origin down, image gone) is asked again after this long. */
const RETRY_MS = 5 * 60_000;

/**
 * Image names for the dashboard. The cache records ids only; the name is the origin's, looked up with the
 * dashboard caller's credentials (so the origin's access checks apply) and remembered. A failed lookup never
 * fails the dashboard: the image is shown by id until a later poll learns its name.
 */
export class ImageNames {
  readonly #origin: Origin;
  readonly #known = new Map<string, { name: string | null; at: number }>();

  constructor(origin: Origin) {
    this.#origin = origin;
  }

  /** The names known for `ids`, after looking up a few that are not known yet. */
  async of(ids: readonly string[], caller: OriginCaller): Promise<Record<string, string>> {
    const now = Date.now();
    const unknown = ids.filter((id) => {
      const entry = this.#known.get(id);
      return !entry || (entry.name === null && now - entry.at > RETRY_MS);
    });
    await Promise.allSettled(
      unknown.slice(0, LOOKUPS_PER_READ).map(async (id) => {
        let name: string | null = null;
        try {
          const record = await this.#origin.getImage(id, caller);
          name = typeof record.name === 'string' && record.name !== '' ? record.name : null;
        } finally {
          this.#remember(id, name);
        }
      }),
    );
    const names: Record<string, string> = {};
    for (const id of ids) {
      const name = this.#known.get(id)?.name;
      if (name) names[id] = name;
    }
    return names;
  }

  #remember(id: string, name: string | null): void {
    this.#known.delete(id);
    this.#known.set(id, { name, at: Date.now() });
    if (this.#known.size > NAMES_KEPT) {
      const oldest = this.#known.keys().next().value;
      if (oldest !== undefined) this.#known.delete(oldest);
    }
  }
}
