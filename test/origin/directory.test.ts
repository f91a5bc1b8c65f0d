import assert from 'node:assert/strict';
import { mkdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { ImageNotFoundError, ImageStateError, OriginError } from '../../src/errors.js';
import { DirectoryOrigin } from '../../src/origin/directory.js';
import { collect, glanceMetadata, imageBytes } from '../helpers/origin.js';
import { tempDir } from '../helpers/tmp.js';

const MIB = 1 << 20;
const ID = '3f6e1a2c-8d4b-4c1e-9a7f-0b5d2e6c8a91';
const never = () => new AbortController().signal;

/** An origin over `<tmp>/images`, with a file beside (outside) it that no id may reach. */
async function newOrigin(t: TestContext): Promise<{ origin: DirectoryOrigin; dir: string; outside: string }> {
  const outside = await tempDir(t);
  const dir = join(outside, 'images');
  await mkdir(dir);
  await writeFile(join(outside, 'x'), 'secret outside the origin');
  await writeFile(join(outside, 'x.json'), JSON.stringify({ status: 'active' }));
  const origin = new DirectoryOrigin(dir);
  t.after(() => origin.close());
  return { origin, dir, outside };
}

describe('directory origin', () => {
  it('describes an image without a sidecar as active, sized by the file, with no checksums', async (t) => {
    const { origin, dir } = await newOrigin(t);
    await writeFile(join(dir, ID), imageBytes(1234));
    const modified = new Date('2026-03-04T05:06:07.890Z');
    await utimes(join(dir, ID), modified, modified);
    assert.deepEqual(await origin.getImage(ID, {}), {
      id: ID,
      status: 'active',
      size: 1234,
      checksum: null,
      os_hash_algo: null,
      os_hash_value: null,
      // Glance's timestamps (isotime: seconds, Z), from the file's modification time.
      created_at: '2026-03-04T05:06:07Z',
      updated_at: '2026-03-04T05:06:07Z',
    });
    assert.equal(origin.kind, 'directory');
    assert.equal(origin.description, `directory:${dir}`);
  });

  it('takes status, size, checksums, visibility, owner and extra properties from the sidecar', async (t) => {
    const { origin, dir } = await newOrigin(t);
    const data = imageBytes(4096);
    const meta = glanceMetadata(data);
    await writeFile(join(dir, ID), data);
    await writeFile(
      join(dir, `${ID}.json`),
      JSON.stringify({
        id: 'ignored-the-file-name-wins',
        status: 'active',
        size: 4096,
        checksum: meta.checksum.toUpperCase(),
        os_hash_algo: 'SHA512',
        os_hash_value: meta.osHashValue,
        visibility: 'private',
        owner: 'project-a',
        x_test_key: 'test_1234',
        min_disk: 1,
        created_at: '2025-01-01T00:00:00Z',
        updated_at: '2025-01-02T00:00:00Z',
      }),
    );
    assert.deepEqual(await origin.getImage(ID, {}), {
      id: ID,
      status: 'active',
      size: 4096,
      checksum: meta.checksum,
      os_hash_algo: 'sha512',
      os_hash_value: meta.osHashValue,
      visibility: 'private',
      owner: 'project-a',
      x_test_key: 'test_1234',
      min_disk: 1,
      created_at: '2025-01-01T00:00:00Z',
      updated_at: '2025-01-02T00:00:00Z',
    });
  });

  it('lists every image: data files and sidecar-only images, never a sidecar, a stray name or a broken sidecar', async (t) => {
    const { origin, dir } = await newOrigin(t);
    const queued = '0a0a0a0a-0000-4000-8000-00000000000a';
    const broken = '0b0b0b0b-0000-4000-8000-00000000000b';
    await writeFile(join(dir, ID), imageBytes(10));
    await writeFile(join(dir, `${ID}.json`), JSON.stringify({ name: 'with-sidecar' }));
    await writeFile(join(dir, `${queued}.json`), JSON.stringify({ status: 'queued' }));
    await writeFile(join(dir, broken), imageBytes(10));
    await writeFile(join(dir, `${broken}.json`), '{not json');
    await writeFile(join(dir, '.hidden'), 'x');
    const listed = (await origin.listImages()).map(({ id, status, name }) => ({ id, status, name }));
    assert.deepEqual(
      listed.sort((a, b) => a.id.localeCompare(b.id)),
      [
        { id: queued, status: 'queued', name: undefined },
        { id: ID, status: 'active', name: 'with-sidecar' },
      ],
    );
  });

  it('describes a queued image from its sidecar alone, and refuses to open it for lack of data', async (t) => {
    const { origin, dir } = await newOrigin(t);
    await writeFile(join(dir, `${ID}.json`), JSON.stringify({ status: 'queued', size: null }));
    const record = await origin.getImage(ID, {});
    assert.equal(record.status, 'queued');
    assert.equal(record.size, null);
    await assert.rejects(origin.openImage(ID, {}, never()), (error: unknown) => {
      assert.ok(error instanceof ImageStateError);
      assert.equal(error.status, 'queued');
      return true;
    });
  });

  it('calls an active sidecar without its data file an origin fault, not a missing image', async (t) => {
    const { origin, dir } = await newOrigin(t);
    await writeFile(join(dir, `${ID}.json`), JSON.stringify({ status: 'active', size: 10 }));
    await assert.rejects(origin.openImage(ID, {}, never()), OriginError);
  });

  it('answers ImageNotFoundError for an id with neither file nor sidecar, or naming a directory', async (t) => {
    const { origin, dir } = await newOrigin(t);
    await mkdir(join(dir, 'subdir'));
    for (const id of [ID, 'subdir']) {
      await assert.rejects(origin.getImage(id, {}), ImageNotFoundError);
      await assert.rejects(origin.openImage(id, {}, never()), ImageNotFoundError);
    }
  });

  it('never reads outside its directory for hostile ids', async (t) => {
    const { origin, dir } = await newOrigin(t);
    await mkdir(join(dir, 'a'));
    await writeFile(join(dir, 'a', 'b'), 'nested');
    await writeFile(join(dir, `${ID}.json`), JSON.stringify({ status: 'queued' }));
    const hostile = ['../x', 'a/b', '%2e%2e', '%2e%2e%2fx', '..', '.', '', '..\\x', '/etc/passwd', 'x\0', '.hidden'];
    hostile.push(`${ID}.json`); // a sidecar is not an image
    for (const id of hostile) {
      await assert.rejects(origin.getImage(id, {}), ImageNotFoundError, `getImage(${JSON.stringify(id)})`);
      await assert.rejects(origin.openImage(id, {}, never()), ImageNotFoundError, `openImage(${JSON.stringify(id)})`);
    }
  });

  it('names the sidecar file when its JSON is malformed', async (t) => {
    const { origin, dir } = await newOrigin(t);
    await writeFile(join(dir, ID), 'data');
    await writeFile(join(dir, `${ID}.json`), '{"status": "active",');
    await assert.rejects(origin.getImage(ID, {}), (error: unknown) => {
      assert.ok(error instanceof OriginError);
      assert.match(error.message, new RegExp(`${ID}\\.json is not valid JSON`));
      assert.equal(error.originStatus, null);
      return true;
    });
  });

  it('rejects sidecars that are not objects or have fields of the wrong type, naming file and field', async (t) => {
    const { origin, dir } = await newOrigin(t);
    await writeFile(join(dir, ID), 'data');
    const cases: Array<[unknown, RegExp]> = [
      [[1, 2], /must hold a JSON object/],
      [null, /must hold a JSON object/],
      [{ size: '12' }, /"size"/],
      [{ size: -1 }, /"size"/],
      [{ status: 7 }, /"status"/],
      [{ checksum: 'not-md5' }, /"checksum"/],
      [{ os_hash_algo: 'sha512' }, /given together/],
      [{ os_hash_algo: 'sha512', os_hash_value: 'xyz' }, /"os_hash_value"/],
    ];
    for (const [content, pattern] of cases) {
      await writeFile(join(dir, `${ID}.json`), JSON.stringify(content));
      await assert.rejects(origin.getImage(ID, {}), (error: unknown) => {
        assert.ok(error instanceof OriginError, String(error));
        assert.match(error.message, new RegExp(`${ID}\\.json`));
        assert.match(error.message, pattern);
        return true;
      });
    }
  });

  it('streams the file in 1 MiB chunks', async (t) => {
    const { origin, dir } = await newOrigin(t);
    const data = imageBytes(3 * MIB + 17, 7);
    await writeFile(join(dir, ID), data);
    const stream = await origin.openImage(ID, {}, never());
    const sizes: number[] = [];
    const chunks: Buffer[] = [];
    for await (const chunk of stream) {
      sizes.push((chunk as Buffer).length);
      chunks.push(chunk as Buffer);
    }
    assert.deepEqual(sizes, [MIB, MIB, MIB, 17]);
    assert.ok(Buffer.concat(chunks).equals(data));
  });

  it('serves a data file whatever status its sidecar gives: the status is for the cache to judge', async (t) => {
    const { origin, dir } = await newOrigin(t);
    await writeFile(join(dir, ID), 'bytes');
    await writeFile(join(dir, `${ID}.json`), JSON.stringify({ status: 'deactivated' }));
    assert.equal((await origin.getImage(ID, {})).status, 'deactivated');
    assert.equal((await collect(await origin.openImage(ID, {}, never()))).toString(), 'bytes');
  });

  it('stops reading when the signal aborts, and refuses to open with an aborted signal', async (t) => {
    const { origin, dir } = await newOrigin(t);
    await writeFile(join(dir, ID), imageBytes(8 * MIB));
    const controller = new AbortController();
    const stream = await origin.openImage(ID, {}, controller.signal);
    let received = 0;
    await assert.rejects(
      (async () => {
        for await (const chunk of stream) {
          received += (chunk as Buffer).length;
          controller.abort();
        }
      })(),
      { name: 'AbortError' },
    );
    assert.ok(received < 8 * MIB, `read ${received} bytes after the abort`);
    assert.ok(stream.destroyed);
    await assert.rejects(origin.openImage(ID, {}, controller.signal), { name: 'AbortError' });
  });

  it('reports a missing directory as an origin fault rather than a missing image', async (t) => {
    const dir = await tempDir(t);
    const origin = new DirectoryOrigin(join(dir, 'nope'));
    await assert.rejects(origin.getImage(ID, {}), (error: unknown) => {
      assert.ok(error instanceof OriginError);
      assert.match(error.message, /is not a directory/);
      return true;
    });
    await assert.rejects(origin.openImage(ID, {}, never()), OriginError);
  });
});
