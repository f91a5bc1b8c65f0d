import { createHash, timingSafeEqual } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import { discard, httpRequest, isCertificateError } from '../http-client.js';

/** Header carrying the shared cluster secret on intra-cluster requests. */
export const CLUSTER_SECRET_HEADER = 'x-imgcache-cluster-secret';
/** Path prefix of the intra-cluster API: never reachable without the secret. */
export const PEER_IMAGE_PATH = '/cluster/v1/images';
/** Set on the 503 of a peer that already sends `peer_max_readers` copies of the image (fan-out, not a fault). */
export const PEER_BUSY_HEADER = 'x-imgcache-peer-busy';

/**
 * How long a peer may take to answer with headers before we go to the origin instead ("slow"). It bounds the
 * headers only (undici's `headersTimeout`): a large image from a busy peer takes longer than 2 s to arrive.
 */
const PEER_HEADERS_TIMEOUT_MS = 2000;

/**
 * How long a peer's body may stay silent between two chunks (undici's `bodyTimeout`; not the whole transfer)
 * before the origin takes over from the byte where the peer stopped. 300 s, what the global fetch applied: the
 * fill's own idle timeout (`image_cache_fill_idle_timeout`, 60 s by default) normally gives up first.
 */
const PEER_BODY_TIMEOUT_MS = 300_000;

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
  /** The agent for https peers (`peer_ca_file`, `peer_insecure`, this node's certificate). @default global agent */
  dispatcher?: Dispatcher | null;
}

/** A peer's answer: the image from byte 0, `'busy'` (it sends `peer_max_readers` copies already), or null (failed). */
export type PeerAnswer = Readable | 'busy' | null;

/**
 * Asks one peer for the image. A peer that refuses, errors, redirects or does not answer within
 * {@link PEER_HEADERS_TIMEOUT_MS} gives null (logged); one at its fan-out limit gives `'busy'`.
 */
export async function openPeer(peer: string, imageId: string, client: PeerClient, signal: AbortSignal): Promise<PeerAnswer> {
  const url = `${peer.replace(/\/+$/, '')}${PEER_IMAGE_PATH}/${encodeURIComponent(imageId)}`;
  try {
    // The caller's signal stays in charge of the whole transfer; the 2 s bound is undici's, on the headers only.
    const response = await httpRequest(url, {
      method: 'GET',
      headers: { [CLUSTER_SECRET_HEADER]: client.secret },
      signal,
      headersTimeout: PEER_HEADERS_TIMEOUT_MS,
      bodyTimeout: PEER_BODY_TIMEOUT_MS,
      ...(client.dispatcher ? { dispatcher: client.dispatcher } : {}),
    });
    if (response.statusCode === 503 && response.headers[PEER_BUSY_HEADER] !== undefined) {
      discard(response.body);
      return 'busy';
    }
    if (response.statusCode !== 200) {
      // A redirect too: a peer is asked for its own copy, never sent elsewhere with the cluster secret.
      discard(response.body);
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
