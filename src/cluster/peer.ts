import { createHash, timingSafeEqual } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import { discard, httpRequest, isCertificateError } from '../http-client.js';
import { drainedOrClosed } from '../streams/drained.js';

/** Header carrying the shared cluster secret on intra-cluster requests. */
export const CLUSTER_SECRET_HEADER = 'x-imgcache-cluster-secret';
/** Path prefix of the intra-cluster API: never reachable without the secret. */
export const PEER_IMAGE_PATH = '/cluster/v1/images';

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

export interface PeerSource {
  /** Peer base URLs that hold the image (live, not this node), best first. */
  peers: string[];
  secret: string;
  /** Opens the origin from byte `offset` (0: the whole image). */
  openOrigin: (offset: number, signal: AbortSignal) => Promise<Readable>;
  /** Counts bytes that came from a peer (the rest came from the origin). */
  onPeerBytes: (bytes: number) => void;
  logger: Logger;
  /** The agent for https peers (`peer_ca_file`, `peer_insecure`, this node's certificate). @default global agent */
  dispatcher?: Dispatcher | null;
}

/**
 * The image from a peer that holds it, else from the origin. A peer that refuses, errors or does not answer
 * within {@link PEER_HEADERS_TIMEOUT_MS} is skipped; a peer that fails mid-stream is replaced by the origin from
 * the byte where it stopped, so the fill (which verifies every byte) never notices.
 */
export async function openFromPeers(imageId: string, source: PeerSource, signal: AbortSignal): Promise<Readable> {
  for (const peer of source.peers) {
    const body = await openPeer(peer, imageId, source, signal);
    if (body) return resumeOnFailure(body, imageId, source, signal);
  }
  return source.openOrigin(0, signal);
}

async function openPeer(peer: string, imageId: string, source: PeerSource, signal: AbortSignal): Promise<Readable | null> {
  const url = `${peer.replace(/\/+$/, '')}${PEER_IMAGE_PATH}/${encodeURIComponent(imageId)}`;
  try {
    // The caller's signal stays in charge of the whole transfer; the 2 s bound is undici's, on the headers only.
    const response = await httpRequest(url, {
      method: 'GET',
      headers: { [CLUSTER_SECRET_HEADER]: source.secret },
      signal,
      headersTimeout: PEER_HEADERS_TIMEOUT_MS,
      bodyTimeout: PEER_BODY_TIMEOUT_MS,
      ...(source.dispatcher ? { dispatcher: source.dispatcher } : {}),
    });
    if (response.statusCode !== 200) {
      // A redirect too: a peer is asked for its own copy, never sent elsewhere with the cluster secret.
      discard(response.body);
      source.logger.info({ imageId, peer, status: response.statusCode }, 'peer cannot serve the image');
      return null;
    }
    return response.body;
  } catch (error) {
    if (signal.aborted) throw error;
    if (isCertificateError(error)) {
      source.logger.warn(
        { imageId, peer, err: error },
        "peer's TLS certificate is not trusted (set [imgcache] peer_ca_file, or peer_insecure = true); trying the next source",
      );
      return null;
    }
    source.logger.warn({ imageId, peer, err: error }, 'peer failed or was slow; trying the next source');
    return null;
  }
}

/** Passes the peer's bytes on; if the peer dies, continues with the origin from the same offset. */
function resumeOnFailure(body: Readable, imageId: string, source: PeerSource, signal: AbortSignal): Readable {
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  let offset = 0;
  const pump = async (stream: Readable, fromPeer: boolean): Promise<void> => {
    for await (const chunk of stream) {
      const buffer = chunk as Buffer;
      offset += buffer.length;
      if (fromPeer) source.onPeerBytes(buffer.length);
      if (out.destroyed) return;
      // 'close' too: a reader that goes away never drains, and the loop (and the peer's socket) would wait forever.
      if (!out.write(buffer)) await drainedOrClosed(out);
      if (out.destroyed) return;
    }
  };
  void (async () => {
    try {
      try {
        await pump(body, true);
      } catch (error) {
        if (signal.aborted || out.destroyed) throw error;
        source.logger.warn({ imageId, offset, err: error }, 'peer failed mid-stream; continuing from the origin');
        await pump(await source.openOrigin(offset, signal), false);
      }
      out.end();
    } catch (error) {
      out.destroy(error as Error);
    }
  })();
  out.once('close', () => body.destroy());
  return out;
}
