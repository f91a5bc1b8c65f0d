/** What a node's serving side of the cluster shows (`/metrics`, the dashboard). */
export interface PeerServing {
  /** Peer streams this node sends now, all images together. */
  readonly active: number;
  /** The most peer streams of one image this node sent at once (never above `peer_max_readers`). */
  readonly peak: number;
  /** Peer streams this node started, since it started. */
  readonly copies: number;
}

/**
 * Fan-out, not a star: at most `limit` (`peer_max_readers`) peer streams of one image at a time from this node,
 * so no uplink carries more than that many copies; a node refused here reads from a node that is itself receiving
 * the image (src/cluster/single-flight.ts).
 */
export class PeerSlots implements PeerServing {
  readonly limit: number;
  readonly #byImage = new Map<string, number>();
  #active = 0;
  #peak = 0;
  #copies = 0;

  constructor(limit: number) {
    this.limit = limit;
  }

  get active(): number {
    return this.#active;
  }

  get peak(): number {
    return this.#peak;
  }

  get copies(): number {
    return this.#copies;
  }

  /** A slot to send the image to a peer, with the function that gives it back (once); null when at the limit. */
  take(imageId: string): (() => void) | null {
    const used = this.#byImage.get(imageId) ?? 0;
    if (used >= this.limit) return null;
    this.#byImage.set(imageId, used + 1);
    this.#active += 1;
    this.#copies += 1;
    this.#peak = Math.max(this.#peak, used + 1);
    let given = false;
    return () => {
      if (given) return;
      given = true;
      this.#active -= 1;
      const left = (this.#byImage.get(imageId) ?? 1) - 1;
      if (left === 0) this.#byImage.delete(imageId);
      else this.#byImage.set(imageId, left);
    };
  }
}
