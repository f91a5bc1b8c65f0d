import type { TestContext } from 'node:test';
import type { Driver, ImageDigests, ImageWriter } from '../../src/drivers/driver.js';
import { createSqliteDriver } from '../../src/drivers/sqlite.js';
import { tempDir } from './tmp.js';

/** Runs in place of a write handle's commit; `real` is the driver's own commit of that handle. */
export type CommitHook = (
  real: (digests?: ImageDigests) => Promise<void>,
  digests: ImageDigests | undefined,
  writer: ImageWriter,
) => Promise<void>;

/**
 * A real sqlite driver in a fresh directory whose write handles commit through `hook`: a test holds the window
 * between a fill's verification and the end of its commit open, or makes the commit fail, at a chosen point.
 */
export async function sqliteDriverWithCommitHook(t: TestContext, hook: CommitHook): Promise<{ driver: Driver; dir: string }> {
  const dir = await tempDir(t);
  const inner = createSqliteDriver({ cacheDir: dir });
  await inner.configure();
  const driver = new Proxy(inner, {
    get(target, property) {
      if (property !== 'openForWrite') {
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? value.bind(target) : value; // the driver's own `this` (private fields)
      }
      return async (imageId: string) => {
        const writer = await target.openForWrite(imageId);
        const real = writer.commit.bind(writer);
        writer.commit = (digests) => hook(real, digests, writer);
        return writer;
      };
    },
  }) as Driver;
  return { driver, dir };
}
