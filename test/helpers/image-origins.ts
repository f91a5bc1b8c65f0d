import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { glanceMetadata } from './origin.js';
import { startTestServer, type TestServer, type TestServerOptions } from './server.js';
import { tempDir } from './tmp.js';
import { listenLocal } from './listen.js';

/** The three kinds of origin `--origin` takes. */
export type OriginKind = 'directory' | 'http' | 'glance';
export const ORIGIN_KINDS: readonly OriginKind[] = ['directory', 'http', 'glance'];

/** One image for {@link serveImages}: its bytes, and the fields its origin describes it with. */
export interface TestImage {
  id: string;
  data: Buffer;
  /** Glance fields a directory sidecar or the fake Glance holds (an http store has only headers). */
  fields?: Record<string, unknown>;
}

/**
 * A plain HTTP store on 127.0.0.1 serving `images` at `/images/{id}` with Content-Length, hex Content-MD5 and
 * the `OpenStack-Image-Hash-*` headers; closed when the test ends. Returns the `http:` origin template.
 */
export async function httpStore(t: TestContext, images: readonly TestImage[]): Promise<string> {
  const byId = new Map(images.map((image) => [image.id, image.data]));
  const server = createServer((req, res) => {
    const id = decodeURIComponent(/^\/images\/([^/?]+)/.exec(req.url ?? '')?.[1] ?? '');
    const data = byId.get(id);
    if (!data) return void res.writeHead(404).end();
    const meta = glanceMetadata(data);
    res.writeHead(200, {
      'content-length': data.length,
      'content-md5': meta.checksum,
      'openstack-image-hash-algo': meta.osHashAlgo,
      'openstack-image-hash-value': meta.osHashValue,
    });
    res.end(req.method === 'HEAD' ? undefined : data);
  });
  return `http://127.0.0.1:${await listenLocal(t, server)}/images/{id}`;
}

/** Writes each image and its sidecar (`<id>.json`: the Glance digests and `fields`) into `dir`. */
export async function writeDirectoryImages(dir: string, images: readonly TestImage[]): Promise<void> {
  for (const { id, data, fields } of images) {
    const meta = glanceMetadata(data);
    await writeFile(join(dir, id), data);
    const sidecar = {
      status: 'active',
      size: meta.size,
      checksum: meta.checksum,
      os_hash_algo: meta.osHashAlgo,
      os_hash_value: meta.osHashValue,
      ...fields,
    };
    await writeFile(join(dir, `${id}.json`), JSON.stringify(sidecar));
  }
}

/**
 * An `imgcache serve` whose origin of `kind` holds `images`: a temp directory with sidecars, an HTTP store, or
 * the fake Glance. `originDir` is the directory origin's path (null for the others).
 */
export async function serveImages(
  t: TestContext,
  kind: OriginKind,
  images: readonly TestImage[],
  options: TestServerOptions = {},
): Promise<TestServer & { originDir: string | null }> {
  let origin: string | undefined;
  let originDir: string | null = null;
  if (kind === 'directory') {
    originDir = await tempDir(t);
    await writeDirectoryImages(originDir, images);
    origin = `directory:${originDir}`;
  } else if (kind === 'http') {
    origin = `http:${await httpStore(t, images)}`;
  }
  const server = await startTestServer(t, { ...options, values: { ...(origin ? { origin } : {}), ...options.values } });
  if (kind === 'glance') for (const { id, data, fields } of images) server.glance.addImage({ id, ...fields }, data);
  return { ...server, originDir };
}
