import { type FileHandle, open } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { CacheHit, type HitReader } from '../../cache/hit.js';
import { CHUNK_SIZE } from '../../drivers/file-handles.js';
import { looksLikeImageId } from '../../image-id.js';
import type { LeaseGrant } from './ipc.js';
import type { OwnerLink } from './owner-link.js';

/** The one request a worker may answer itself: a whole image (no query: anything else is the app's). */
const HIT_PATH = /^\/v2\/images\/([^/?#]+)\/file$/;

/** The image id of a request a worker may serve from the cache itself, or null: forward it to the owner. */
export function hitCandidate(req: IncomingMessage): string | null {
  if (req.method !== 'GET' || req.headers.range !== undefined) return null;
  const id = HIT_PATH.exec(req.url ?? '')?.[1];
  return id !== undefined && looksLikeImageId(id) ? id : null;
}

/**
 * Serves `GET /v2/images/{id}/file` of a cached image from this worker: the owner checks the caller and leases
 * the image (`leases.ts`), this process opens the committed file and sends it with `hit.ts`'s rules (sendfile(2)
 * on a plain socket; the hit recorded before the last chunk goes out; an aborted read records none), and the owner is told when the file
 * is done with. The headers are those of the app's hit (`images.ts` sendImage). Resolves false, having sent
 * nothing, when the owner did not grant it (not cached, refused, an error): the caller forwards the request, so
 * the answer is the app's.
 */
export async function serveHit(
  imageId: string,
  req: IncomingMessage,
  res: ServerResponse,
  link: OwnerLink,
  logger: Logger,
): Promise<boolean> {
  const answer = await link.call({ type: 'lease', imageId, headers: req.headers });
  const grant = answer.type === 'lease' ? answer.grant : null;
  if (!grant) return false;
  const file = await openLeased(grant);
  if (!file) {
    link.notify({ type: 'end', lease: grant.lease, bytesRead: 0 });
    return false;
  }
  let closed: Promise<void> | undefined;
  const close = () => (closed ??= file.close());
  const reader: HitReader = {
    imageId,
    size: grant.size,
    fd: file.fd,
    read: async (buffer, length, position) => (await file.read(buffer, 0, length, position)).bytesRead,
    // autoClose off: the fd is closed by complete()/close(), exactly once, as the driver's reader does.
    createReadStream: () => file.createReadStream({ highWaterMark: CHUNK_SIZE, autoClose: false }),
    complete: async () => {
      await close();
      await link.call({ type: 'record', lease: grant.lease });
    },
    close,
  };
  const tally = {
    acquire: () => {}, // the owner's lease keeps the image in use
    release: (_id: string, bytesSent: number) => link.notify({ type: 'end', lease: grant.lease, bytesRead: bytesSent }),
  };
  const hit = new CacheHit(reader, tally, logger);
  res.writeHead(200, {
    'content-type': 'application/octet-stream',
    'accept-ranges': 'bytes',
    'x-cache-status': 'HIT',
    'content-length': grant.size,
    ...(grant.checksum ? { 'content-md5': grant.checksum } : {}),
  });
  // writeTo never rejects: a failure destroys `res` (a short body or a reset, never a complete wrong one).
  hit.writeTo(res).then((complete) => {
    if (complete) res.end();
  }, () => res.destroy());
  return true;
}

/** The leased file, checked to be the one leased (its size); null when it cannot be opened (then forward). */
async function openLeased(grant: LeaseGrant): Promise<FileHandle | null> {
  let file: FileHandle;
  try {
    file = await open(grant.path, 'r');
  } catch {
    return null;
  }
  try {
    const info = await file.stat();
    if (info.isFile() && info.size === grant.size) return file;
  } catch {
    // fall through: closed below, and the owner answers instead
  }
  await file.close().catch(() => {});
  return null;
}
