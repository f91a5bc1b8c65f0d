/**
 * Fan-out, not a star: at most `limit` (`peer_max_readers`) peer streams of one image at a time from this node,
 * so no uplink carries more than that many copies; a node refused here reads from a node that is itself receiving
 * the image (src/cluster/single-flight.ts).
 */
export class PeerSlots {
  readonly limit: number;
  readonly #byImage = new Map<string, number>();
  #active = 0;
  #peak = 0;
  #copies = 0;

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Peer streams this node sends now, all images together. */
  get active(): number {
    return this.#active;
  }

  /** The most peer streams of one image this node sent at once (never above `limit`). */
  get peak(): number {
    return this.#peak;
  }

  /** Peer streams this node started, since it started. */
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
