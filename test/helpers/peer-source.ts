import type { Readable } from 'node:stream';
import { openPeer, type PeerClient } from '../../src/cluster/peer.js';
import { resumableStream, type SourceOpener } from '../../src/cluster/resumable.js';

export interface PeerSource extends PeerClient {
  /** Peer base URLs, tried in order. */
  peers: string[];
  /** Opens the origin from byte `offset` (0: the whole image). */
  openOrigin: (offset: number, signal: AbortSignal) => Promise<Readable>;
  onPeerBytes: (bytes: number) => void;
}

/**
 * The peer client's two real parts (src/cluster/peer.ts `openPeer`, src/cluster/resumable.ts) over a fixed list
 * of peers, without the central DB that src/cluster/single-flight.ts asks: the first peer that serves the image,
 * else the origin; a peer that fails mid-stream is replaced by the origin from the byte where it stopped.
 */
export function openFromPeers(imageId: string, source: PeerSource, signal: AbortSignal): Promise<Readable> {
  const next: SourceOpener = async (offset, failedPeer) => {
    if (failedPeer === null) {
      for (const peer of source.peers) {
        const answer = await openPeer(peer, imageId, source, signal);
        if (answer !== null && answer !== 'busy') return { stream: answer, peer, from: 0 };
      }
    }
    return { stream: await source.openOrigin(offset, signal), peer: null, from: offset };
  };
  return resumableStream(imageId, next, { onPeerBytes: source.onPeerBytes, logger: source.logger }, signal);
}
