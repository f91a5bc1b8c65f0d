// A process that fills one image and is meant to be killed part-way by crash.test.ts.
// argv: cacheDir driver imageId sizeBytes
import { randomFillSync } from 'node:crypto';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DEFAULTS } from '../../src/config.js';
import { ImageCache } from '../../src/open-cache.js';
import { glanceMetadata, TestOrigin } from '../helpers/origin.js';

const [cacheDir, driver, imageId, size] = process.argv.slice(2);
const data = randomFillSync(Buffer.allocUnsafe(Number(size)));
const expected = glanceMetadata(data);
const cache = await ImageCache.open({ ...DEFAULTS, image_cache_dir: cacheDir, image_cache_driver: driver ?? 'sqlite' }, { reconcile: true });
process.send?.('filling');
const origin = new TestOrigin(data, { chunkSize: 1 << 20, delayMs: 2 });
const result = await cache.fetch({ imageId: imageId ?? 'x', expected, openOrigin: origin.open });
await pipeline(result.stream, new Writable({ write: (_chunk, _encoding, callback) => callback() }));
await cache.close();
process.send?.('done');
