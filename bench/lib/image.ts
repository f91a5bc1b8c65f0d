/** The benches' random image: written once, its MD5 and SHA-512 computed on the way (what the origin announces). */
import { createHash, randomFillSync } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { Digests } from './nginx.js';

const MIB = 1 << 20;

/** Writes `size` random bytes (a multiple of 1 MiB) to `file`; returns their digests. */
export async function makeImage(file: string, size: number): Promise<Digests> {
  const md5 = createHash('md5');
  const sha512 = createHash('sha512');
  const out = await open(file, 'w', 0o644);
  try {
    const buffer = Buffer.allocUnsafe(MIB);
    for (let written = 0; written < size; written += MIB) {
      randomFillSync(buffer);
      md5.update(buffer);
      sha512.update(buffer);
      await out.write(buffer);
    }
  } finally {
    await out.close();
  }
  return { md5: md5.digest('hex'), sha512: sha512.digest('hex') };
}
