import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

/**
 * What an HTTP worker of `workers = N` loads: the CLI (it runs `imgcache serve` too) and the worker's modules,
 * through their static imports (dynamic ones run only where they are reached). Each package below is megabytes
 * of heap per process (measured on Node 20: fastify 11.6, undici 9.0, pg 5.7, prom-client 4.7 MiB), which a
 * worker never uses: the owner runs the app, the drivers, the metrics and every upstream request.
 */
const SRC = join(dirname(fileURLToPath(import.meta.url)), '..', 'src');
const ENTRIES = ['cli/main.ts', 'server/workers/worker.ts'];
const NOT_IN_A_WORKER = ['fastify', 'undici', 'pg', 'prom-client', 'better-sqlite3', 'fs-xattr'];

/** Static value imports of `source` (not `import type`, not `import()`), as written. */
function staticImports(source: string): string[] {
  const out: string[] = [];
  for (const match of source.matchAll(/^(?:import|export)\s+(type\s+)?[^;'"]*?\bfrom\s+['"]([^'"]+)['"]/gm)) {
    if (!match[1]) out.push(match[2] as string);
  }
  for (const match of source.matchAll(/^import\s+['"]([^'"]+)['"]/gm)) out.push(match[1] as string);
  return out;
}

/** Every package reached from `entries` by static imports, with the chain of modules that reaches it first. */
async function packagesReached(entries: readonly string[]): Promise<Map<string, string>> {
  const packages = new Map<string, string>();
  const seen = new Set<string>();
  const visit = async (file: string, chain: string): Promise<void> => {
    if (seen.has(file)) return;
    seen.add(file);
    const source = await readFile(join(SRC, file), 'utf8');
    for (const specifier of staticImports(source)) {
      if (specifier.startsWith('.')) {
        const target = posix.normalize(posix.join(posix.dirname(file), specifier)).replace(/\.js$/, '.ts');
        await visit(target, `${chain} -> ${target}`);
      } else if (!specifier.startsWith('node:')) {
        const name = specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]!;
        if (!packages.has(name)) packages.set(name, chain);
      }
    }
  };
  for (const entry of entries) await visit(entry, entry);
  return packages;
}

describe('what a workers process loads', () => {
  it('reads static imports and skips type-only and dynamic ones', () => {
    const source = "import type { A } from 'undici';\nimport {\n  b,\n} from './b.js';\nconst c = await import('pg');\nimport 'x';";
    assert.deepEqual(staticImports(source), ['./b.js', 'x']);
  });

  it('reaches none of the packages only the owner needs', async () => {
    const reached = await packagesReached(ENTRIES);
    assert.ok(reached.has('commander') && reached.has('pino'), `is the parser broken? ${[...reached.keys()].join(', ')}`);
    const loaded = NOT_IN_A_WORKER.filter((name) => reached.has(name)).map((name) => `${name}: ${reached.get(name)}`);
    assert.deepEqual(loaded, [], 'import these where they are used (await import) instead');
  });
});
