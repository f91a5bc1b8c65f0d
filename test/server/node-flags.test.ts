import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { NODE_FLAGS, withNodeFlags } from '../../src/server/workers/node-flags.js';

/** imgcache's V8 flags are written in three places: the module the owner forks its workers with, and two texts. */
describe("imgcache's V8 flags (src/server/workers/node-flags.ts)", () => {
  it('are the ones bin/imgcache.js starts node with and `npm start` runs', async () => {
    const bin = await readFile(new URL('../../bin/imgcache.js', import.meta.url), 'utf8');
    assert.equal(bin.split('\n')[0], `#!/usr/bin/env -S node ${NODE_FLAGS.join(' ')}`);
    const scripts = (JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> }).scripts;
    assert.ok(scripts.start?.startsWith(`node ${NODE_FLAGS.join(' ')} bin/imgcache.js `), `npm start is ${scripts.start}`);
  });

  it("adds them to a worker's execArgv unless the operator set them, in either spelling", () => {
    assert.deepEqual(withNodeFlags(['--enable-source-maps']), ['--enable-source-maps', ...NODE_FLAGS]);
    assert.deepEqual(withNodeFlags(['--max_semi_space_size=8']), ['--max_semi_space_size=8']);
    assert.deepEqual(withNodeFlags([...NODE_FLAGS]), [...NODE_FLAGS]);
  });
});
