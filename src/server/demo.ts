import { createHash } from 'node:crypto';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** The demo image's id: a UUID, as Glance would give it. */
export const DEMO_IMAGE_ID = 'c1a55e5e-0000-4000-8000-000000000001';
/** Big enough that a miss and a hit are visibly different; small enough to generate in a blink. */
const DEMO_SIZE = 8 << 20;

/**
 * Seeds a directory origin with a generated demo image and its Glance-style sidecar (`<id>.json` with size,
 * MD5 `checksum` and SHA-512 multihash), unless it is there already. Returns the image id.
 */
export async function seedDemoOrigin(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, DEMO_IMAGE_ID);
  if (await stat(path).then((info) => info.size === DEMO_SIZE, () => false)) return DEMO_IMAGE_ID;
  // Deterministic, incompressible-looking bytes: SHA-256 in counter mode.
  const data = Buffer.allocUnsafe(DEMO_SIZE);
  for (let offset = 0, counter = 0; offset < DEMO_SIZE; offset += 32, counter += 1) {
    createHash('sha256').update(`imgcache-demo-${counter}`).digest().copy(data, offset);
  }
  await writeFile(path, data);
  const sidecar = {
    id: DEMO_IMAGE_ID,
    name: 'imgcache-demo',
    status: 'active',
    visibility: 'public',
    size: DEMO_SIZE,
    checksum: createHash('md5').update(data).digest('hex'),
    os_hash_algo: 'sha512',
    os_hash_value: createHash('sha512').update(data).digest('hex'),
  };
  await writeFile(join(dir, `${DEMO_IMAGE_ID}.json`), `${JSON.stringify(sidecar, null, 2)}\n`);
  return DEMO_IMAGE_ID;
}
