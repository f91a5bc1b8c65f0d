import { createReadStream } from 'node:fs';
import type { CachedImage, Driver } from '../drivers/driver.js';
import { messageOf } from '../drivers/fs-util.js';
import { CHUNK_SIZE } from '../drivers/file-handles.js';
import { ImageHasher } from './digest.js';

/** The outcome for one cached image. */
export interface VerifyEntry {
  imageId: string;
  /**
   * `ok`: every recorded digest matches; `mismatch`: a digest or the size differs; `unverifiable`: nothing was
   * recorded to check against (adopted or Glance-written files); `missing`: the file vanished; `error`: it could
   * not be read.
   */
  status: 'ok' | 'mismatch' | 'unverifiable' | 'missing' | 'error';
  detail?: string;
  /** With `repair`: the file was moved to `invalid/`. */
  repaired?: boolean;
}

export interface VerifyOptions {
  /** Move mismatching files to `invalid/` and drop their metadata. */
  repair?: boolean;
  /** Verify only these image ids (default: every cached image). */
  only?: readonly string[];
  /** Called as bytes are hashed, with the totals over all images. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
}

/**
 * Re-hashes cached files against the digests recorded at commit. Glance never re-checks a cached file, so a
 * copy corrupted on disk is served until evicted (spec §9.2); this finds it.
 */
export async function verifyCache(driver: Driver, options: VerifyOptions = {}): Promise<VerifyEntry[]> {
  const wanted = options.only ? new Set(options.only) : null;
  const images = (await driver.getCachedImages()).filter((image) => !wanted || wanted.has(image.imageId));
  const total = images.reduce((sum, image) => sum + image.size, 0);
  let done = 0;
  const results: VerifyEntry[] = [];
  for (const image of images) {
    const entry = await verifyOne(driver, image, (bytes) => {
      done += bytes;
      options.onProgress?.(done, total);
    });
    if (entry.status === 'mismatch' && options.repair) {
      await driver.quarantineCachedImage(image.imageId, `verify: ${entry.detail ?? 'mismatch'}`);
      entry.repaired = true;
    }
    results.push(entry);
  }
  return results;
}

async function verifyOne(driver: Driver, image: CachedImage, onBytes: (n: number) => void): Promise<VerifyEntry> {
  const { imageId } = image;
  if (!image.checksum && !image.osHashValue) return { imageId, status: 'unverifiable', detail: 'no digest recorded' };
  const hasher = new ImageHasher(image.osHashAlgo ?? undefined);
  try {
    for await (const chunk of createReadStream(driver.getImageFilepath(imageId), { highWaterMark: CHUNK_SIZE })) {
      hasher.update(chunk as Buffer);
      onBytes((chunk as Buffer).length);
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { imageId, status: 'missing' };
    return { imageId, status: 'error', detail: messageOf(error) };
  }
  const found = hasher.digests();
  if (found.size !== image.size) {
    return { imageId, status: 'mismatch', detail: `size ${found.size}, recorded ${image.size}` };
  }
  // The strongest recorded digest decides, as at fill time: a fill that verified the multihash records the origin's
  // MD5 without checking it (image_cache_verify_digests = strongest), so that MD5 may never have matched.
  const md5Differs = !!image.checksum && image.checksum !== found.checksum;
  const multihashDiffers = !!image.osHashValue && image.osHashValue !== found.osHashValue;
  if (image.osHashValue ? multihashDiffers : md5Differs) {
    const detail = md5Differs
      ? `md5 ${found.checksum}, recorded ${image.checksum}`
      : `${found.osHashAlgo} differs from the recorded value`;
    return { imageId, status: 'mismatch', detail };
  }
  return { imageId, status: 'ok' };
}
