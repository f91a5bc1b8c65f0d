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

/** Digests computed over bytes actually seen. */
export interface ComputedDigests extends ImageDigests {
  size: number;
  checksum: string;
  osHashAlgo: string;
  osHashValue: string;
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

/** MD5 and a multihash of a byte sequence, fed chunk by chunk, so verification needs no second read. */
export class ImageHasher {
  readonly algorithm: string;
  readonly #md5: Hash = createHash('md5');
  readonly #multihash: Hash;
  bytes = 0;

  constructor(algorithm: string = DEFAULT_HASH_ALGO) {
    this.algorithm = checkHashAlgorithm(algorithm);
    this.#multihash = createHash(this.algorithm);
  }

  update(chunk: Buffer): void {
    this.#md5.update(chunk);
    this.#multihash.update(chunk);
    this.bytes += chunk.length;
  }

  /** Final digests; call once, after the last chunk. */
  digests(): ComputedDigests {
    return {
      size: this.bytes,
      checksum: this.#md5.digest('hex'),
      osHashAlgo: this.algorithm,
      osHashValue: this.#multihash.digest('hex'),
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
 * {@link ChecksumMismatchError}. A promise that was not made (null, undefined, empty) is not checked.
 */
export function verifyDigests(
  imageId: string,
  expected: ExpectedImage,
  found: ComputedDigests,
): void {
  if (expected.size !== undefined && expected.size !== null && expected.size !== found.size) {
    throw new SizeMismatchError(imageId, expected.size, found.size);
  }
  if (expected.checksum && expected.checksum.toLowerCase() !== found.checksum) {
    throw new ChecksumMismatchError(imageId, 'md5', expected.checksum, found.checksum);
  }
  if (expected.osHashValue && expected.osHashValue.toLowerCase() !== found.osHashValue) {
    throw new ChecksumMismatchError(imageId, found.osHashAlgo, expected.osHashValue, found.osHashValue);
  }
}
