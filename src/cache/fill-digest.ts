import { type ComputedDigests, DEFAULT_HASH_ALGO, type ExpectedImage, verifyDigests } from './digest.js';
import { type HashPool, inlineHasher, type StreamHasher } from './hash-pool.js';

/**
 * A fill's digests: the hashes it computes over the origin's bytes, on hash threads when the cache has a pool,
 * and their check against what the origin promised once the last byte is in.
 */
export class DigestSession {
  readonly #imageId: string;
  readonly #expected: ExpectedImage;
  readonly #hasher: StreamHasher;
  /** The hash threads' answer for the last chunk handed over; awaited before the next one (bounded queue). */
  #pending: Promise<void> | null = null;

  /** @throws ConfigError for a multihash algorithm Node.js does not have, or the pool's HashWorkerError */
  constructor(imageId: string, expected: ExpectedImage, hashPool: HashPool | null) {
    this.#imageId = imageId;
    this.#expected = expected;
    const algorithm = expected.osHashAlgo ?? DEFAULT_HASH_ALGO;
    this.#hasher = hashPool ? hashPool.open(algorithm) : inlineHasher(algorithm);
  }

  /**
   * Hands a chunk over. The caller must {@link settle} before the next one; a hash thread failing meanwhile
   * is reported there, never as an unhandled rejection.
   */
  update(chunk: Buffer): void {
    const hashing = this.#hasher.update(chunk);
    if (hashing) hashing.catch(() => {});
    this.#pending = hashing ?? null;
  }

  /** True when the hash threads still owe an answer for the last chunk (the caller may stop its idle clock). */
  get busy(): boolean {
    return this.#pending !== null;
  }

  /** Waits until the hash threads may take another chunk; rejects with a HashWorkerError if one died. */
  async settle(): Promise<void> {
    const pending = this.#pending;
    this.#pending = null;
    await pending;
  }

  /**
   * The digests of every byte handed over, checked against the origin's promises.
   * @throws SizeMismatchError, ChecksumMismatchError (verification), HashWorkerError
   */
  async verify(): Promise<ComputedDigests> {
    const found = await this.#hasher.digests();
    verifyDigests(this.#imageId, this.#expected, found);
    return found;
  }

  /** Forgets the session (the fill failed or stopped). */
  discard(): void {
    this.#hasher.discard();
  }
}
