import {
  type ComputedDigests,
  type DigestPlan,
  type DigestPolicy,
  type ExpectedImage,
  planDigests,
  recordedDigests,
  verifyDigests,
} from './digest.js';
import { type HashPool, inlineHasher, type SlotTee, type StreamHasher } from './hash-pool.js';

/**
 * A fill's digests: the ones it computes over the origin's bytes ({@link planDigests}: by default only the
 * strongest the origin declares), on hash threads when the cache has a pool, and their check once the last byte
 * is in.
 */
export class DigestSession {
  readonly #imageId: string;
  readonly #expected: ExpectedImage;
  readonly #plan: DigestPlan;
  readonly #hasher: StreamHasher;
  /** The hash threads' answer for the last chunk handed over; awaited before the next one (bounded memory). */
  #pending: Promise<void> | null = null;

  /** @throws ConfigError for a multihash algorithm Node.js does not have */
  constructor(imageId: string, expected: ExpectedImage, policy: DigestPolicy, hashPool: HashPool | null) {
    this.#imageId = imageId;
    this.#expected = expected;
    this.#plan = planDigests(expected, policy);
    this.#hasher = hashPool ? hashPool.open(this.#plan) : inlineHasher(this.#plan);
  }

  /** Declared digests this session does not check (the stronger one is checked instead), for the log. */
  get unchecked(): string[] {
    const unchecked: string[] = [];
    if (this.#expected.checksum && !this.#plan.md5) unchecked.push('md5');
    if (this.#expected.osHashValue && !this.#plan.multihash) unchecked.push(this.#expected.osHashAlgo ?? 'multihash');
    return unchecked;
  }

  /**
   * Hands a chunk over (copied, or hashed at once: the caller's buffer stays its own). The caller must
   * {@link settle} before the next one; a hash thread failing meanwhile is reported there, never as an unhandled
   * rejection. Throws the HashWorkerError of a thread that already died.
   */
  update(chunk: Buffer): void {
    const hashing = this.#hasher.update(chunk);
    if (hashing) hashing.catch(() => {});
    this.#pending = hashing ?? null;
  }

  /** The hash ring's slots as the file's write buffers, when the session hashes on threads (else null). */
  get tee(): SlotTee | null {
    return this.#hasher.tee;
  }

  /** True when the hash threads still owe room for the last chunk (the caller may stop its idle clock). */
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
   * Checks the digests of every byte handed over against the origin's promises, and returns what the cache
   * records ({@link recordedDigests}: the computed digests, plus the declared value of one not computed).
   * @throws SizeMismatchError, ChecksumMismatchError (verification), HashWorkerError
   */
  async verify(): Promise<ComputedDigests> {
    const found = await this.#hasher.digests();
    verifyDigests(this.#imageId, this.#expected, found);
    return recordedDigests(this.#expected, found);
  }

  /** Forgets the session (the fill failed or stopped). */
  discard(): void {
    this.#hasher.discard();
  }
}
