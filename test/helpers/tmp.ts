import { mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import type { TestContext } from 'node:test';

/**
 * A fresh directory under the OS temp dir, removed when the test ends. The removal retries: `t.after` hooks run in
 * the order they were added, so it may run before the cache's close, while a fill whose body was already released
 * (once verified) still commits into the tree (ENOTEMPTY).
 */
export async function tempDir(t: Pick<TestContext, 'after'>, prefix = 'imgcache-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 }));
  return dir;
}

/** Every file and directory below `root` with its size, as sorted `relative/path:size` lines. */
export async function snapshotTree(root: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(dir: string): Promise<void> {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        out.push(`${relative(root, path)}/`);
        await walk(path);
      } else {
        out.push(`${relative(root, path)}:${(await stat(path)).size}`);
      }
    }
  }
  await walk(root);
  return out.sort();
}

/** Writes `content` to `path` and sets its mtime `ageSeconds` in the past. */
export async function writeAged(path: string, content: string | Buffer, ageSeconds: number): Promise<void> {
  await writeFile(path, content);
  const when = new Date(Date.now() - ageSeconds * 1000);
  await utimes(path, when, when);
}

/** A clock for drivers that moves forward one second per reading, so LRU order is exact and repeatable. */
export function steppingClock(startMs = Date.UTC(2026, 0, 1)): () => number {
  let now = startMs;
  return () => {
    now += 1000;
    return now;
  };
}
