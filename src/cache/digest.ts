import { createHash, getHashes, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { ChecksumMismatchError, ConfigError, SizeMismatchError } from '../errors.js';
import type { ImageDigests } from '../drivers/driver.js';

/** What an image's metadata promises about its bytes (Glance's `size`, `checksum`, `os_hash_*`). */
export interface ExpectedImage {
  /** Byte count, when known. */
  size?: number | null;
  /** MD5 hex digest (Glance's `checksum`), when known. */
  checksum?: string | null;
  /** Multihash algorithm, e.g. `sha512` (Glance's `os_hash_algo`). */
  osHashAlgo?: string | null;
  /** Multihash hex digest (Glance's `os_hash_value`). */
  osHashValue?: string | null;
}

/**
 * Digests computed over bytes actually seen. A digest the fill did not compute (see {@link planDigests}) is null
 * here; {@link recordedDigests} fills it in from the origin's declared value.
 */
export interface ComputedDigests extends ImageDigests {
  size: number;
  checksum: string | null;
  osHashAlgo: string | null;
  osHashValue: string | null;
}

/**
 * `image_cache_verify_digests`: `strongest` verifies the multihash when the origin declares one and MD5 only when it
 * is all there is (python-glanceclient's rule, `allow_md5_fallback`); `all` computes and verifies both.
 */
export type DigestPolicy = 'strongest' | 'all';

/** Which digests a fill computes: MD5, and the multihash with its algorithm (null: not computed). */
export interface DigestPlan {
  md5: boolean;
  multihash: string | null;
}

/** Glance's default multihash algorithm (`hashing_algorithm` option). */
export const DEFAULT_HASH_ALGO = 'sha512';

/** Throws a {@link ConfigError} naming the option when Node's crypto has no such hash. */
export function checkHashAlgorithm(algorithm: string): string {
  const name = algorithm.toLowerCase();
  if (!getHashes().includes(name)) {
    throw new ConfigError(`os_hash_algo ${JSON.stringify(algorithm)} is not a hash this Node.js provides (try sha512)`);
  }
  return name;
}

/**
 * The digests to compute for an image. `strongest` computes one: the multihash when the origin declares it, else
 * MD5 when that is declared. With nothing declared there is nothing to verify, and both are computed, so the cache
 * records a `checksum` and an `os_hash_value` as Glance does. `all` always computes both.
 * @throws ConfigError for a multihash algorithm Node.js does not have
 */
export function planDigests(expected: ExpectedImage, policy: DigestPolicy): DigestPlan {
  const multihash = checkHashAlgorithm(expected.osHashAlgo ?? DEFAULT_HASH_ALGO);
  if (policy === 'strongest' && expected.osHashValue) return { md5: false, multihash };
  if (policy === 'strongest' && expected.checksum) return { md5: true, multihash: null };
  return { md5: true, multihash };
}

/**
 * What the cache records at commit: the digests computed (and verified when declared), and for one not computed,
 * the origin's declared value, so listings still show Glance's `checksum` (it was not checked: the stronger
 * multihash was).
 */
export function recordedDigests(expected: ExpectedImage, found: ComputedDigests): ComputedDigests {
  const declaredMultihash = expected.osHashValue
    ? { osHashAlgo: (expected.osHashAlgo ?? DEFAULT_HASH_ALGO).toLowerCase(), osHashValue: expected.osHashValue.toLowerCase() }
    : { osHashAlgo: null, osHashValue: null };
  return {
    size: found.size,
    checksum: found.checksum ?? expected.checksum?.toLowerCase() ?? null,
    ...(found.osHashValue ? { osHashAlgo: found.osHashAlgo, osHashValue: found.osHashValue } : declaredMultihash),
  };
}

/** MD5 and a multihash (or either, by plan) of a byte sequence, fed chunk by chunk: no second read to verify. */
export class ImageHasher {
  readonly algorithm: string;
  readonly #md5: Hash | null;
  readonly #multihash: Hash | null;
  bytes = 0;

  /** @param plan which digests to compute (default: both) */
  constructor(algorithm: string = DEFAULT_HASH_ALGO, plan: { md5: boolean; multihash: boolean } = { md5: true, multihash: true }) {
    this.algorithm = checkHashAlgorithm(algorithm);
    this.#md5 = plan.md5 ? createHash('md5') : null;
    this.#multihash = plan.multihash ? createHash(this.algorithm) : null;
  }

  update(chunk: Buffer): void {
    this.#md5?.update(chunk);
    this.#multihash?.update(chunk);
    this.bytes += chunk.length;
  }

  /** Final digests; call once, after the last chunk. */
  digests(): ComputedDigests {
    return {
      size: this.bytes,
      checksum: this.#md5?.digest('hex') ?? null,
      osHashAlgo: this.#multihash ? this.algorithm : null,
      osHashValue: this.#multihash?.digest('hex') ?? null,
    };
  }
}

/** A pass-through stream that feeds an {@link ImageHasher}. */
export class DigestStream extends Transform {
  readonly hasher: ImageHasher;

  constructor(algorithm: string = DEFAULT_HASH_ALGO) {
    super();
    this.hasher = new ImageHasher(algorithm);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hasher.update(chunk);
    callback(null, chunk);
  }

  digests(): ComputedDigests {
    return this.hasher.digests();
  }
}

/**
 * Compares what was seen with what was promised; throws {@link SizeMismatchError} or
 * {@link ChecksumMismatchError}. A promise that was not made (null, undefined, empty) is not checked, nor is a
 * digest that was not computed (null in `found`, see {@link planDigests}).
 */
export function verifyDigests(
  imageId: string,
  expected: ExpectedImage,
  found: ComputedDigests,
): void {
  if (expected.size !== undefined && expected.size !== null && expected.size !== found.size) {
    throw new SizeMismatchError(imageId, expected.size, found.size);
  }
  if (expected.checksum && found.checksum !== null && expected.checksum.toLowerCase() !== found.checksum) {
    throw new ChecksumMismatchError(imageId, 'md5', expected.checksum, found.checksum);
  }
  if (expected.osHashValue && found.osHashValue !== null && expected.osHashValue.toLowerCase() !== found.osHashValue) {
    throw new ChecksumMismatchError(imageId, found.osHashAlgo ?? 'multihash', expected.osHashValue, found.osHashValue);
  }
}
