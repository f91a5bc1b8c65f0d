import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ExpectedImage } from '../cache/digest.js';
import type { FetchRequest, FetchResult } from '../cache/image-cache.js';
import type { CachedImage } from '../drivers/driver.js';
import { rangeFromOrigin } from '../cache/range-read.js';
import { ForbiddenError, ImageNotFoundError } from '../errors.js';
import type { ImageRecord, OriginCaller } from '../origin/origin.js';
import type { AppDeps } from './app.js';
import { RangeNotSatisfiableError } from './errors.js';
import { cutRange } from '../streams/slice.js';
import { parseRange } from './range.js';
import { RangeWarmer } from './range-warm.js';
import { FirstOpens, type SharedOpen } from './first-open.js';
import { sendDirect } from './send-direct.js';
import { type ConfirmedRecords, isUnreachable } from './stale.js';

interface ImageParams {
  imageId: string;
}

/** An image as a request may see it; `stale` is set when it comes from a confirmation (`stale_if_error`). */
interface Lookup {
  image: ImageRecord;
  stale: { ageSeconds: number; reason: string } | null;
  /** The GET the record came from, whose body the fill takes ({@link FirstOpens}); release it when done. */
  opened?: SharedOpen;
}

/** Image states with no data to download (Glance answers 204, and never caches: bug 1251055). */
const WITHOUT_DATA = new Set(['queued', 'saving', 'uploading', 'importing']);
/** Image states that are gone for a caller. */
const GONE = new Set(['deleted', 'pending_delete', 'killed']);

/**
 * Who the origin should see, for every origin call made on the caller's behalf: the validated token, or with
 * noauth whatever token the client sent (an upstream Glance still checks it).
 */
export function callerOf(request: FastifyRequest): OriginCaller {
  const sent = request.headers['x-auth-token'];
  const token = request.identity?.token ?? (Array.isArray(sent) ? sent[0] : sent);
  return { ...(token ? { token } : {}), requestId: String(request.id) };
}

/** The policy target of an image: its fields and properties, plus `project_id` (Glance's ImageTarget). */
export function imageTarget(image: ImageRecord): Record<string, unknown> {
  return { ...image, project_id: image.owner ?? null };
}

/**
 * A cached image's record from what the cache recorded at commit (size and digests): what an origin that does
 * not authorize callers (`directory:`, `http:`) would say of it, without asking it.
 */
export function recordOf(entry: CachedImage): ImageRecord {
  return {
    id: entry.imageId,
    status: 'active',
    size: entry.size,
    checksum: entry.checksum,
    os_hash_algo: entry.osHashAlgo,
    os_hash_value: entry.osHashValue,
  };
}

/** What the origin promises about the bytes. A size of 0 means "unknown" in Glance (bug 1686488). */
function expectedOf(image: ImageRecord): ExpectedImage {
  return {
    size: image.size ? image.size : null,
    checksum: image.checksum,
    osHashAlgo: image.os_hash_algo,
    osHashValue: image.os_hash_value,
  };
}

/**
 * `GET|HEAD /v2/images/{id}/file` (spec §4.2, done right): with an origin that authorizes callers, the caller's
 * view of the image decides (a cached file is never served to a caller the origin refuses); then the cache
 * answers: hit, one shared fill, or bypass; byte ranges from the cache too (Glance sends them to the backend,
 * bug 1664709), and a range of an uncached image queues it for the prefetcher ({@link RangeWarmer}).
 */
export function registerImageRoutes(app: FastifyInstance, deps: AppDeps): void {
  const { cache, origin, policy } = deps;
  const stale = deps.staleRecords ?? null;
  const warmer = new RangeWarmer(cache, deps.prefetcher, deps.logger);
  const firstOpens = new FirstOpens();
  // Peers come before the origin in a cluster: opening the origin up front would defeat them.
  const openWithRecord = origin.openImageWithRecord && !deps.cluster ? origin.openImageWithRecord.bind(origin) : null;

  /**
   * The image as the caller may see it, and whether it comes from a stale confirmation (its age in seconds).
   * - An origin that does not authorize callers (`directory:`, `http:`) is not asked about a cached image: the
   *   record is what the cache recorded at commit (size and digests), so a hit needs no origin round trip.
   * - A glance origin is asked every time (the caller's token decides). With `stale_if_error`, when it is
   *   unreachable, a caller imgcache authenticated itself gets a cached image it was recently shown
   *   ({@link ConfirmedRecords}).
   */
  async function lookUp(
    request: FastifyRequest<{ Params: ImageParams }>,
    imageId: string,
    download: boolean,
  ): Promise<Lookup> {
    if (!origin.authorizesCallers) {
      const known = (await recordedImage(imageId)) ?? recordOfRunningFill(imageId);
      if (known) return { image: known, stale: null };
      if (download && openWithRecord) {
        const caller = callerOf(request);
        const opened = firstOpens.join(imageId, (signal) => openWithRecord(imageId, caller, signal));
        try {
          return { image: await opened.record, stale: null, opened };
        } catch (error) {
          opened.release();
          throw error;
        }
      }
      return { image: await origin.getImage(imageId, callerOf(request)), stale: null };
    }
    try {
      const image = await origin.getImage(imageId, callerOf(request));
      stale?.confirm(imageId, image, request.identity);
      return { image, stale: null };
    } catch (error) {
      if (!stale) throw error;
      if (!isUnreachable(error)) {
        stale.refuted(imageId, request.identity, error);
        throw error;
      }
      // noauth identities are whatever the client claims: never good enough to skip the origin's check.
      if (deps.auth.strategy === 'noauth') throw error;
      const found = stale.lookup(imageId, request.identity);
      if (!found || !(await cache.driver.isCached(imageId))) throw error;
      return { image: found.record, stale: { ageSeconds: found.ageSeconds, reason: (error as Error).message } };
    }
  }

  /** What a running fill of the image was told by the origin when it opened it: as fresh as a HEAD now. */
  function recordOfRunningFill(imageId: string): ImageRecord | null {
    const fill = cache.runningFills().find((running) => running.imageId === imageId && !running.error);
    if (!fill) return null;
    const { expected } = fill;
    return {
      id: imageId,
      status: 'active',
      size: expected.size ?? null,
      checksum: expected.checksum ?? null,
      os_hash_algo: expected.osHashAlgo ?? null,
      os_hash_value: expected.osHashValue ?? null,
    };
  }

  /** A cached image's record from what the cache recorded at commit; null when it is not cached. */
  async function recordedImage(imageId: string): Promise<ImageRecord | null> {
    const entry = await cache.driver.getCachedImage(imageId);
    return entry ? recordOf(entry) : null;
  }

  /**
   * Looks the image up as the caller and applies Glance's status and policy rules. With `download`, the record may
   * come from a GET that the fill then reads (`found.opened`): the caller must release it when its fetch settled.
   */
  async function authorize(request: FastifyRequest<{ Params: ImageParams }>, download = false): Promise<Lookup | 'no-data'> {
    const { imageId } = request.params;
    cache.driver.getImageFilepath(imageId); // a hostile id stops here, before any lookup
    const found = await lookUp(request, imageId, download);
    try {
      return checkLookup(request, found);
    } catch (error) {
      found.opened?.release();
      throw error;
    }
  }

  function checkLookup(request: FastifyRequest<{ Params: ImageParams }>, found: Lookup): Lookup | 'no-data' {
    const { imageId } = request.params;
    const { image } = found;
    if (GONE.has(image.status)) throw new ImageNotFoundError(imageId);
    policy.enforce('download_image', request.identity, imageTarget(image));
    if (image.status === 'deactivated' && !request.identity.isAdmin) {
      throw new ForbiddenError(`image ${imageId} is deactivated: only an admin can download it`);
    }
    if (WITHOUT_DATA.has(image.status)) {
      found.opened?.release();
      return 'no-data';
    }
    if (found.stale) {
      // Counted once the record passed every check above: this request is served from it.
      request.log.warn(
        { imageId, ageSeconds: found.stale.ageSeconds, reason: found.stale.reason },
        'origin unreachable: serving the cached image from a recent confirmation (stale_if_error)',
      );
      deps.metrics.staleServed.inc();
    }
    return found;
  }

  function fetchRequest(request: FastifyRequest<{ Params: ImageParams }>, found: Lookup): FetchRequest {
    const { image, opened } = found;
    const caller = callerOf(request);
    /** The origin from a byte offset: where a peer that died mid-stream stopped. */
    const fromOffset = (offset: number, signal: AbortSignal) => {
      if (offset === 0) return origin.openImage(image.id, caller, signal);
      const end = (image.size || 0) - 1;
      if (origin.openImageRange && end >= offset) {
        return origin.openImageRange(image.id, caller, { start: offset, end }, signal);
      }
      return origin.openImage(image.id, caller, signal).then((whole) => cutRange(whole, { start: offset, end: Infinity }));
    };
    return {
      imageId: image.id,
      expected: expectedOf(image),
      openOrigin: async (signal) =>
        opened?.claim(signal) ??
        (deps.cluster ? deps.cluster.open(image.id, fromOffset, signal) : origin.openImage(image.id, caller, signal)),
      ...(origin.openImageRange
        ? { openOriginRange: (range, signal) => origin.openImageRange!(image.id, caller, range, signal) }
        : {}),
    };
  }

  function sendImage(reply: FastifyReply, found: Lookup, result: FetchResult): FastifyReply {
    const { image, stale: confirmation } = found;
    reply.type('application/octet-stream').header('accept-ranges', 'bytes');
    reply.header('x-cache-status', confirmation ? 'STALE' : result.status);
    // RFC 9111 §5.1: how long ago the origin last vouched for what is served.
    if (confirmation) reply.header('age', confirmation.ageSeconds);
    const length = result.size ?? (image.size || null);
    if (length !== null) reply.header('content-length', length);
    // Glance's header: the hex MD5 of the whole image, only when there is one (bug 1591004), never on a 206.
    if (image.checksum && reply.statusCode !== 206) reply.header('content-md5', image.checksum);
    return result.body ? sendDirect(reply, result.body) : reply.send(result.stream);
  }

  app.get<{ Params: ImageParams }>('/v2/images/:imageId/file', async (request, reply) => {
    // A whole download may take its record from the GET its fill reads (one origin request per miss).
    const found = await authorize(request, header(request, 'range') === undefined);
    if (found === 'no-data') return reply.code(204).send();
    try {
      return await download(request, reply, found);
    } finally {
      found.opened?.release();
    }
  });

  async function download(
    request: FastifyRequest<{ Params: ImageParams }>,
    reply: FastifyReply,
    found: Lookup,
  ): Promise<FastifyReply> {
    const { image } = found;
    const fetch = fetchRequest(request, found);
    // 0 is a size here: Glance answers 416 to any range of an empty image. Only an unknown size ignores ranges.
    const total = image.size;
    const range = total === null ? null : parseRange(header(request, 'range'), total);
    if (range === 'unsatisfiable') throw new RangeNotSatisfiableError(total ?? 0);
    if (image.status === 'deactivated') {
      // Admins still get a deactivated image, from the origin: the cache never serves it (Kilo b000c85b7).
      // Ranges too (Glance answers 206), straight from the origin.
      const signal = abortOnClose(reply);
      if (range) {
        const stream = await rangeFromOrigin(range, signal, fetch.openOriginRange, fetch.openOrigin);
        reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${total}`);
        return sendImage(reply, found, { status: 'BYPASS', size: range.end - range.start + 1, stream });
      }
      const stream = await fetch.openOrigin(signal);
      return sendImage(reply, found, { status: 'BYPASS', size: image.size || null, stream });
    }
    if (range) {
      // A range of an uncached image also queues it for the prefetcher (range-warm.ts): the next reads hit.
      const result = await cache.fetchRange({ ...fetch, onColdRange: () => warmer.warm(image.id) }, range);
      reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${total}`);
      return sendImage(reply, found, result);
    }
    return sendImage(reply, found, await cache.fetch(fetch));
  }

  app.head<{ Params: ImageParams }>('/v2/images/:imageId/file', async (request, reply) => {
    const found = await authorize(request);
    if (found === 'no-data') return reply.code(204).send();
    const { image } = found;
    const cached = await cache.driver.isCached(image.id);
    const size = image.size || (cached ? await cache.driver.getImageSize(image.id) : null);
    reply
      .type('application/octet-stream')
      .header('accept-ranges', 'bytes')
      .header('x-cache-status', cached ? 'HIT' : 'MISS');
    if (size !== null) reply.header('content-length', size);
    if (image.checksum) reply.header('content-md5', image.checksum);
    return reply.send();
  });
}

/** A signal that aborts when the client goes away, for origin transfers made on its behalf. */
function abortOnClose(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => controller.abort());
  return controller.signal;
}

function header(request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value[0] : value;
}
