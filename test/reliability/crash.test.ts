import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { DEFAULTS } from '../../src/config.js';
import { ImageCache } from '../../src/open-cache.js';
import { looksLikeImageId } from '../../src/image-id.js';
import { tempDir } from '../helpers/tmp.js';
import { seededRandom } from '../helpers/random.js';

const CHILD = fileURLToPath(new URL('./fill-child.ts', import.meta.url));
const SIZE = 64 << 20;
const KILLS = 20;
/** Replay a failing run with the seed it printed: `IMGCACHE_CRASH_SEED=123 node --test ...`. */
const SEED = Number(process.env.IMGCACHE_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 32));

/** Starts a child that fills `imageId`; resolves once it is filling, with a promise for its exit. */
async function startFill(dir: string, driver: string, imageId: string) {
  const child = fork(CHILD, [dir, driver, imageId, String(SIZE)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    child.on('message', (message) => message === 'filling' && resolve());
    child.on('exit', () => reject(new Error('child exited before filling')));
  });
  return { child, exited };
}

describe('crash safety', () => {
  for (const driver of ['sqlite', 'xattr']) {
    it(`${driver}: SIGKILL at random points of a 64 MiB fill never leaves a torn or orphan entry (${KILLS / 2} kills)`, async (t) => {
      const dir = await tempDir(t);
      const random = seededRandom(SEED);
      // Printed first, so a failing run always shows how to replay it (the kill points are fractions of the
      // calibrated fill time, so a replay on the same machine lands at the same stages).
      t.diagnostic(`IMGCACHE_CRASH_SEED=${SEED}`);
      console.log(`# crash test ${driver}: IMGCACHE_CRASH_SEED=${SEED}`);
      // One undisturbed fill tells how long a fill takes here; kills then land anywhere in it, commit included.
      const calibration = await startFill(dir, driver, 'calibration');
      const started = performance.now();
      assert.equal(await calibration.exited, 0);
      const fillMs = performance.now() - started;
      let completed = 0;
      const verified = new Set<string>(); // each surviving image is re-hashed once, the round it appears
      for (let i = 0; i < KILLS / 2; i++) {
        const imageId = `image-${i}`;
        const { child, exited } = await startFill(dir, driver, imageId);
        // The kill lands at a random moment of the fill (this wait is the point of the test, not a stand-in).
        await sleep(Math.floor(random() * fillMs * 1.1));
        child.kill('SIGKILL');
        if ((await exited) === 0) completed += 1;

        const cache = await ImageCache.open({ ...DEFAULTS, image_cache_dir: dir, image_cache_driver: driver }, { reconcile: true });
        try {
          assert.deepEqual(await readdir(join(dir, 'incomplete')), [], 'reconcile empties incomplete/');
          const images = await cache.driver.getCachedImages();
          const files = (await readdir(dir, { withFileTypes: true }))
            .filter((entry) => entry.isFile() && looksLikeImageId(entry.name) && !entry.name.startsWith('cache.db'))
            .map((entry) => entry.name);
          assert.deepEqual(images.map((image) => image.imageId).sort(), files.sort(), 'no orphan rows, no stray files');
          const fresh = images.map((image) => image.imageId).filter((id) => !verified.has(id));
          for (const entry of await cache.verify({ only: fresh })) {
            assert.equal(entry.status, 'ok', `${entry.imageId}: ${entry.detail ?? ''}`);
            verified.add(entry.imageId);
          }
          for (const image of images) assert.equal(image.size, SIZE);
        } finally {
          await cache.close();
        }
      }
      t.diagnostic(`fill takes ~${Math.round(fillMs)} ms; ${completed} of ${KILLS / 2} fills finished before the kill`);
    });
  }
});
