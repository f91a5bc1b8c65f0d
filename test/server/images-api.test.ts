import assert from 'node:assert/strict';
import { rename, rm } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { serveImages, type TestImage } from '../helpers/image-origins.js';
import { glanceMetadata, imageBytes } from '../helpers/origin.js';
import { request } from '../helpers/server.js';
import { until } from '../helpers/wait.js';

/** The Images API imgcache serves itself for directory and http origins (issue 13). */

const id = (n: number) => `1a6e0000-0000-4000-8000-${String(n).padStart(12, '0')}`;
const images = (count: number): TestImage[] =>
  Array.from({ length: count }, (_, i) => ({
    id: id(i + 1),
    data: imageBytes(1000 + i, i + 1),
    fields: { name: `image-${String.fromCharCode(101 - i)}`, disk_format: 'raw', container_format: 'bare' },
  }));

type Json = Record<string, unknown>;

describe('Images API for origins that are not one', () => {
  it('serves the image, images and metadefs schemas glanceclient fetches, in Glance\'s shapes', async (t) => {
    const server = await serveImages(t, 'directory', []);
    const image = (await request(`${server.url}/v2/schemas/image`)).json() as Json;
    assert.equal(image.name, 'image');
    assert.deepEqual(image.additionalProperties, { type: 'string' });
    assert.deepEqual(
      Object.keys(image.properties as Json).sort(),
      ['checksum', 'container_format', 'created_at', 'direct_url', 'disk_format', 'file', 'id', 'locations',
        'min_disk', 'min_ram', 'name', 'os_hash_algo', 'os_hash_value', 'os_hidden', 'owner', 'protected', 'schema',
        'self', 'size', 'status', 'tags', 'updated_at', 'virtual_size', 'visibility'],
    );
    const list = (await request(`${server.url}/v2/schemas/images`)).json() as { properties: { images: { items: unknown } } };
    assert.deepEqual(list.properties.images.items, image);
    for (const [path, name] of [['metadefs/namespace', 'namespace'], ['metadefs/resource_type', 'resource_type_association']]) {
      const response = await request(`${server.url}/v2/schemas/${path}`);
      assert.equal(response.status, 200, path);
      assert.equal((response.json() as Json).name, name);
    }
    assert.equal((await request(`${server.url}/v2/schemas/nonsense`)).status, 404);
  });

  it('shows a directory image with every Glance attribute, from its sidecar and file, and 404 for an unknown one', async (t) => {
    const [one] = images(1);
    const server = await serveImages(t, 'directory', [{ ...one!, fields: { ...one!.fields, hw_disk_bus: 'scsi', min_ram: 512 } }]);
    const response = await request(`${server.url}/v2/images/${id(1)}`);
    assert.equal(response.status, 200);
    const view = response.json() as Json;
    const meta = glanceMetadata(one!.data);
    assert.deepEqual(
      { ...view, created_at: typeof view.created_at, updated_at: typeof view.updated_at },
      {
        id: id(1), name: 'image-e', status: 'active', size: meta.size, checksum: meta.checksum,
        os_hash_algo: 'sha512', os_hash_value: meta.osHashValue, disk_format: 'raw', container_format: 'bare',
        visibility: 'public', owner: null, protected: false, os_hidden: false, min_ram: 512, min_disk: 0,
        virtual_size: null, tags: [], hw_disk_bus: 'scsi', created_at: 'string', updated_at: 'string',
        self: `/v2/images/${id(1)}`, file: `/v2/images/${id(1)}/file`, schema: '/v2/schemas/image',
      },
    );
    assert.match(String(view.created_at), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const unknown = await request(`${server.url}/v2/images/${id(99)}`);
    assert.equal(unknown.status, 404);
  });

  it('pages the list with limit and marker, and follows Glance\'s next links to every image exactly once', async (t) => {
    const server = await serveImages(t, 'directory', images(5));
    const seen: string[] = [];
    let next: string | undefined = '/v2/images?limit=2&sort_key=name&sort_dir=asc';
    const pages: number[] = [];
    while (next !== undefined && pages.length < 10) {
      const body = (await request(`${server.url}${next}`)).json() as { images: Json[]; next?: string; first: string };
      assert.equal(body.first, '/v2/images?limit=2&sort_key=name&sort_dir=asc');
      pages.push(body.images.length);
      seen.push(...body.images.map((image) => String(image.name)));
      next = body.next;
    }
    assert.deepEqual(pages, [2, 2, 1]);
    assert.deepEqual(seen, ['image-a', 'image-b', 'image-c', 'image-d', 'image-e']);
    const all = (await request(`${server.url}/v2/images`)).json() as { images: Json[]; next?: string };
    assert.equal(all.images.length, 5);
    assert.equal(all.next, undefined);
    const byName = (await request(`${server.url}/v2/images?name=image-c`)).json() as { images: Json[] };
    assert.deepEqual(byName.images.map((image) => image.id), [id(3)]);
  });

  it('answers 400 as Glance does for an unknown sort key, a bad direction or limit, and an unknown marker', async (t) => {
    const server = await serveImages(t, 'directory', images(2));
    for (const query of ['sort_key=checksum', 'sort_dir=up', 'limit=-1', 'limit=x', `marker=${id(42)}`, 'size_min=1']) {
      const response = await request(`${server.url}/v2/images?${query}`);
      assert.equal(response.status, 400, query);
    }
  });

  it('refuses every write with 403 "Read-only access" and leaves the image as it was', async (t) => {
    const server = await serveImages(t, 'directory', images(1));
    const writes: Array<[string, string]> = [
      ['POST', '/v2/images'],
      ['PATCH', `/v2/images/${id(1)}`],
      ['DELETE', `/v2/images/${id(1)}`],
      ['PUT', `/v2/images/${id(1)}/file`],
      ['POST', `/v2/images/${id(1)}/actions/deactivate`],
    ];
    for (const [method, path] of writes) {
      const response = await request(`${server.url}${path}`, { method, body: method === 'DELETE' ? null : '{}' });
      assert.equal(response.status, 403, `${method} ${path}`);
      assert.match(response.text, /Read-only access/);
    }
    assert.equal((await request(`${server.url}/v2/images/${id(1)}`)).status, 200);
    assert.equal((await request(`${server.url}/v2/images/${id(1)}/file`)).status, 200);
  });

  it('shows a cached image from what the cache recorded while the origin cannot be read, and nothing else', async (t) => {
    const server = await serveImages(t, 'directory', images(2));
    assert.equal((await request(`${server.url}/v2/images/${id(1)}/file`)).status, 200);
    await until(async () => (await request(`${server.url}/v2/cache`)).text.includes(id(1)), 'the download to be cached');
    await rename(server.originDir ?? '', `${server.originDir}.gone`); // the origin is now a missing directory
    t.after(() => rm(`${server.originDir}.gone`, { recursive: true, force: true }));
    const shown = await request(`${server.url}/v2/images/${id(1)}`);
    assert.equal(shown.status, 200);
    const view = shown.json() as Json;
    assert.equal(view.checksum, glanceMetadata(images(2)[0]!.data).checksum);
    assert.equal(view.size, images(2)[0]!.data.length);
    assert.equal((await request(`${server.url}/v2/images/${id(2)}`)).status, 502, 'an uncached image needs the origin');
  });

  it('applies the get_image and get_images policies', async (t) => {
    const server = await serveImages(t, 'directory', images(1), {
      policy: { get_image: 'role:admin', get_images: 'role:admin' },
    });
    const member = { headers: { 'x-roles': 'member', 'x-project-id': 'p1' } };
    assert.equal((await request(`${server.url}/v2/images/${id(1)}`, member)).status, 403);
    assert.equal((await request(`${server.url}/v2/images`, member)).status, 403);
    assert.equal((await request(`${server.url}/v2/images/${id(1)}`)).status, 200, 'an admin is allowed');
    assert.equal((await request(`${server.url}/v2/images`)).status, 200);
  });

  it('lists what an http origin is known to hold: cached, queued and shown images', async (t) => {
    const server = await serveImages(t, 'http', images(4));
    const list = async () =>
      ((await request(`${server.url}/v2/images?sort_key=id&sort_dir=asc`)).json() as { images: Json[] }).images.map(
        (image) => image.id,
      );
    assert.deepEqual(await list(), []);
    assert.equal((await request(`${server.url}/v2/images/${id(1)}/file`)).status, 200);
    await until(async () => (await request(`${server.url}/v2/cache`)).text.includes(id(1)), 'the download to be cached');
    assert.equal((await request(`${server.url}/v2/images/${id(2)}`)).status, 200);
    assert.equal((await request(`${server.url}/v2/cache/${id(3)}`, { method: 'PUT' })).status, 202);
    assert.deepEqual(await list(), [id(1), id(2), id(3)]);
    const shown = (await request(`${server.url}/v2/images/${id(1)}`)).json() as Json;
    assert.equal(shown.checksum, glanceMetadata(images(4)[0]!.data).checksum);
  });

  it('lists an http image downloaded without being cached (too big for the cache) as seen', async (t) => {
    const server = await serveImages(t, 'http', images(2), { values: { image_cache_max_size: '100' } });
    const download = await request(`${server.url}/v2/images/${id(2)}/file`);
    assert.equal(download.status, 200);
    assert.equal(download.headers.get('x-cache-status'), 'BYPASS');
    const listed = (await request(`${server.url}/v2/images`)).json() as { images: Json[] };
    assert.deepEqual(listed.images.map((image) => [image.id, image.size]), [[id(2), images(2)[1]!.data.length]]);
  });
});
