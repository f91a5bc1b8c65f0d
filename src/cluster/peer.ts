import { createHash, timingSafeEqual } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { type ClientTls, isCertificateError } from '../http-client.js';
import { directGet } from '../origin/direct-get.js';

/** Header carrying the shared cluster secret on intra-cluster requests. */
export const CLUSTER_SECRET_HEADER = 'x-imgcache-cluster-secret';
/** Path prefix of the intra-cluster API: never reachable without the secret. */
export const PEER_IMAGE_PATH = '/cluster/v1/images';
/** Set on the 503 of a peer that already sends `peer_max_readers` copies of the image (fan-out, not a fault). */
export const PEER_BUSY_HEADER = 'x-imgcache-peer-busy';

/**
 * How long a peer may take to connect, and then to answer with headers, before we go to the origin instead
 * ("slow"). It bounds those only: a large image from a busy peer takes longer than 2 s to arrive, and a peer
 * silent mid-stream is the stall timer's (`peerStallMs`, src/cluster/resumable.ts).
 */
const PEER_HEADERS_TIMEOUT_MS = 2000;

/** Compares a presented secret with the configured one in constant time (hashes first: lengths differ). */
export function secretMatches(presented: string | undefined, secret: string): boolean {
  if (!presented) return false;
  const digest = (value: string) => createHash('sha256').update(value, 'utf8').digest();
  return timingSafeEqual(digest(presented), digest(secret));
}

/** How this node talks to its peers' intra-cluster API. */
export interface PeerClient {
  secret: string;
  logger: Logger;
  /** How https peers are verified (`peer_ca_file`, `peer_insecure`) and this node's certificate. @default Node's roots */
  tls?: ClientTls;
}

/** A peer's answer: the image from byte 0, `'busy'` (it sends `peer_max_readers` copies already), or null (failed). */
export type PeerAnswer = Readable | 'busy' | null;

/**
 * Asks one peer for the image. A peer that refuses, errors, redirects or does not answer within
 * {@link PEER_HEADERS_TIMEOUT_MS} gives null (logged); one at its fan-out limit gives `'busy'`.
 */
export async function openPeer(peer: string, imageId: string, client: PeerClient, signal: AbortSignal): Promise<PeerAnswer> {
  const url = new URL(`${peer.replace(/\/+$/, '')}${PEER_IMAGE_PATH}/${encodeURIComponent(imageId)}`);
  try {
    // The image GET of the origins' direct client: the body's reads land in the fill's hash ring, no buffer per
    // read. The caller's signal stays in charge of the whole transfer; the 2 s bounds are on connect and headers.
    const response = await directGet({
      url,
      headers: { [CLUSTER_SECRET_HEADER]: client.secret },
      timeoutMs: PEER_HEADERS_TIMEOUT_MS,
      tls: client.tls ?? {},
      signal,
    });
    if (response.statusCode === 503 && response.headers[PEER_BUSY_HEADER] !== undefined) {
      response.body.destroy();
      return 'busy';
    }
    if (response.statusCode !== 200) {
      // A redirect too: a peer is asked for its own copy, never sent elsewhere with the cluster secret.
      response.body.destroy();
      client.logger.info({ imageId, peer, status: response.statusCode }, 'peer cannot serve the image');
      return null;
    }
    return response.body;
  } catch (error) {
    if (signal.aborted) throw error;
    if (isCertificateError(error)) {
      client.logger.warn(
        { imageId, peer, err: error },
        "peer's TLS certificate is not trusted (set [imgcache] peer_ca_file, or peer_insecure = true); trying the next source",
      );
      return null;
    }
    client.logger.warn({ imageId, peer, err: error }, 'peer failed or was slow; trying the next source');
    return null;
  }
}
