import type { Socket } from 'node:net';
import type { Driver } from '../../drivers/driver.js';
import { looksLikeImageId } from '../../image-id.js';
import { peekRequest } from '../../streams/sendfile.js';

/** The request line of an image download, as a client sends it first on a connection. */
const DOWNLOAD = /^GET \/v2\/images\/([^/?# ]+)\/file HTTP\/1\.[01]\r\n/;
/** How long the owner waits for a new connection's first bytes before it leaves the decision to a worker. */
const PEEK_WAIT_MS = 20;
/** Enough for a request line and its headers; one buffer for every connection (it is read synchronously). */
const PEEKED = Buffer.allocUnsafe(4096);

/**
 * Whether the owner should answer a new plain-HTTP connection itself instead of a worker: when its first request
 * downloads an image that is not a hit a worker could serve (not cached, or an origin that authorizes callers).
 * Such a download is a fill here anyway; answered here, its consumers get the fill's file by sendfile(2) straight
 * to their socket. Through a worker every byte would cross the owner's socket and the worker's JavaScript once
 * more (16 coalesced misses of 1 GiB took 2.5x as long). The bytes are peeked (MSG_PEEK), never read, so whoever
 * gets the connection parses the request from its first byte. Later requests on a kept-alive connection stay
 * with whoever took it.
 */
export async function ownerTakes(socket: Socket, driver: Driver, authorizesCallers: boolean): Promise<boolean> {
  const head = await peekRequest(socket, PEEKED, PEEK_WAIT_MS);
  if (!head) return false;
  const text = head.toString('latin1');
  const id = DOWNLOAD.exec(text)?.[1];
  if (id === undefined || !looksLikeImageId(id)) return false;
  if (authorizesCallers) return true; // a glance origin's downloads are never a worker's
  try {
    return !(await driver.isCached(id));
  } catch {
    return false; // the worker's path asks again, and answers with the app's error
  }
}
