import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { ApiVersion, Origin } from '../origin/origin.js';

/**
 * Images API minor versions whose additions imgcache serves completely itself: 2.14 (the cache API), 2.16 (its
 * PUT answers 202) and 2.18 (clean and prune). Every other minor version adds APIs only Glance has (import,
 * multi-store, locations, ...), and 2.0 is the image download.
 */
const OWN_MINORS = [14, 16, 18] as const;

/** What imgcache advertises without an Images API behind it: what it implements, and nothing else. */
export const OWN_VERSIONS: readonly ApiVersion[] = Object.freeze([
  { id: 'v2.18', status: 'CURRENT' },
  { id: 'v2.16', status: 'SUPPORTED' },
  { id: 'v2.14', status: 'SUPPORTED' },
  { id: 'v2.0', status: 'SUPPORTED' },
]);

/** Options of {@link AdvertisedVersions}. */
export interface AdvertisedVersionsOptions {
  /** How long the origin's list is trusted before it is fetched again (in the background). @default 300000 */
  refreshMs?: number;
  /** After a failed fetch, how long until the next try. @default 30000 */
  retryMs?: number;
  now?: () => number;
}

const minorOf = (id: string): number | null => {
  const match = /^v2\.(\d{1,3})$/.exec(id);
  return match ? Number(match[1]) : null;
};

/**
 * The versions to advertise in front of an origin that lists its own (a Glance): the origin's v2 entries with
 * their statuses (its CURRENT stays CURRENT), plus imgcache's own cache API versions that the origin lacks and
 * that lie below its CURRENT (Glance lists them only with `image_cache_dir` set, spec §4.4). A version above the
 * origin's CURRENT is never added: it would promise every API up to it, and the origin has not got them.
 * Returns null when the list has no v2 version at all.
 */
export function mergeVersions(origin: readonly ApiVersion[]): ApiVersion[] | null {
  const v2 = origin.filter((entry) => minorOf(entry.id) !== null);
  if (v2.length === 0) return null;
  const minors = v2.map((entry) => minorOf(entry.id) ?? 0);
  const current = v2.find((entry) => entry.status === 'CURRENT');
  const currentMinor = current ? (minorOf(current.id) ?? 0) : Math.max(...minors);
  const listed = new Set(v2.map((entry) => entry.id));
  const added = OWN_MINORS.filter((minor) => minor < currentMinor && !listed.has(`v2.${minor}`)).map((minor) => ({
    id: `v2.${minor}`,
    status: 'SUPPORTED',
  }));
  return [...v2.map((entry) => ({ id: entry.id, status: entry.status })), ...added].sort(
    (a, b) => (minorOf(b.id) ?? 0) - (minorOf(a.id) ?? 0),
  );
}

/**
 * What `/versions` lists and which `/v2.x/` URLs are accepted. Without an origin that lists versions: imgcache's
 * own ({@link OWN_VERSIONS}). With one (a Glance): the origin's list merged by {@link mergeVersions}, fetched on
 * first use and again after `refreshMs` (the old list is served meanwhile); when the origin cannot be reached,
 * the last list it gave, or imgcache's own before it ever answered, with a warning, and a new try after
 * `retryMs`.
 */
export class AdvertisedVersions {
  readonly #origin: Origin;
  readonly #logger: Logger;
  readonly #refreshMs: number;
  readonly #retryMs: number;
  readonly #now: () => number;
  #list: readonly ApiVersion[] | null = null;
  #fromOrigin = false;
  #expiresAt = 0;
  #pending: Promise<void> | null = null;

  constructor(origin: Origin, logger: Logger, options: AdvertisedVersionsOptions = {}) {
    this.#origin = origin;
    this.#logger = logger;
    this.#refreshMs = options.refreshMs ?? 300_000;
    this.#retryMs = options.retryMs ?? 30_000;
    this.#now = options.now ?? Date.now;
  }

  /** The versions to advertise, newest first. Never rejects. */
  async list(): Promise<readonly ApiVersion[]> {
    if (!this.#origin.apiVersions) return OWN_VERSIONS;
    if (this.#list === null) {
      await this.#refresh();
    } else if (this.#now() >= this.#expiresAt) {
      // Stale while revalidating: nobody waits for the origin once a list is known. #refresh never rejects.
      this.#refresh().catch(() => {});
    }
    return this.#list ?? OWN_VERSIONS;
  }

  /** Whether `/vID/...` URLs are accepted (`id` like `v2.16`). */
  async advertises(id: string): Promise<boolean> {
    return (await this.list()).some((entry) => entry.id === id);
  }

  #refresh(): Promise<void> {
    this.#pending ??= this.#fetch().finally(() => {
      this.#pending = null;
    });
    return this.#pending;
  }

  async #fetch(): Promise<void> {
    try {
      const merged = mergeVersions((await this.#origin.apiVersions?.()) ?? []);
      if (merged === null) throw new Error('the origin lists no v2 version');
      this.#list = merged;
      this.#fromOrigin = true;
      this.#expiresAt = this.#now() + this.#refreshMs;
    } catch (error) {
      this.#expiresAt = this.#now() + this.#retryMs;
      const keeping = this.#fromOrigin ? "the origin's last list" : "imgcache's own list";
      this.#logger.warn({ err: error, retryInMs: this.#retryMs }, `cannot read the origin's API versions; advertising ${keeping}`);
      this.#list ??= OWN_VERSIONS;
    }
  }
}

/** `{"versions": [...]}` as Glance lists them, each linking to this server's `/v2/`. */
export function versionsBody(
  request: FastifyRequest,
  versions: readonly ApiVersion[],
): { versions: Array<Record<string, unknown>> } {
  const host = request.headers.host ?? `${request.hostname}`;
  const href = `${request.protocol}://${host}/v2/`;
  return { versions: versions.map(({ id, status }) => ({ id, status, links: [{ rel: 'self', href }] })) };
}

/** `/v2.14/cache` is `/v2/cache`; the onRequest check refuses the versions that are not advertised. */
export function rewriteVersionedUrl(url: string): string {
  return url.replace(/^\/v2\.\d+(?=\/|$|\?)/, '/v2');
}

/**
 * Glance's version negotiation for a versioned URL (`/v2.16/...`): a version that is not advertised is answered
 * with 300 Multiple Choices and the versions body, before authentication, as Glance's middleware does. Returns
 * true when it answered.
 */
export async function refuseUnadvertised(
  request: FastifyRequest,
  reply: FastifyReply,
  versions: AdvertisedVersions,
): Promise<boolean> {
  const match = /^\/(v2\.\d+)(?=\/|$|\?)/.exec(request.originalUrl);
  if (!match?.[1] || (await versions.advertises(match[1]))) return false;
  const body = versionsBody(request, await versions.list());
  void reply.code(300).send(body); // the reply's promise settles when it is sent; it does not reject
  return true;
}

/**
 * `GET /versions` (200) and `GET /` (300 Multiple Choices), as Glance's version negotiation answers them;
 * python-glanceclient reads them before it sends any cache command (it needs v2.14 listed).
 */
export function registerVersions(app: FastifyInstance, versions: AdvertisedVersions): void {
  app.get('/versions', async (request) => versionsBody(request, await versions.list()));
  app.get('/', async (request, reply) => reply.code(300).send(versionsBody(request, await versions.list())));
}
