import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, posix, sep } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

/**
 * The layer order of ARCHITECTURE.md, checked on every relative import in src/ (static `import`/`export ... from`
 * and dynamic `import('...')`): a module may import its own group and any layer below it, never a layer above it
 * and never a sibling group of its own layer (origin must not reach into cache, cluster not into workers).
 */

const SRC = join(dirname(fileURLToPath(import.meta.url)), '..', 'src');

/** A file over this many lines fails (the house style says ~400 is a signal to split). */
const MAX_LINES = 450;

/** Lowest first. `match` is tried on the path relative to src/, with `/` separators. */
const LAYERS: ReadonlyArray<{ rank: number; group: string; match: RegExp }> = [
  { rank: 0, group: 'errors', match: /^errors\.ts$/ },
  { rank: 1, group: 'image-id', match: /^image-id\.ts$/ },
  { rank: 1, group: 'streams', match: /^streams\// },
  { rank: 1, group: 'http-client', match: /^http-client\.ts$/ },
  { rank: 2, group: 'drivers', match: /^drivers\// },
  { rank: 3, group: 'cache', match: /^cache\// },
  { rank: 3, group: 'origin', match: /^origin\// },
  { rank: 3, group: 'auth', match: /^auth\// },
  { rank: 4, group: 'cluster', match: /^cluster\// },
  { rank: 4, group: 'workers', match: /^workers\// },
  { rank: 5, group: 'compose', match: /^(open-cache|config|config-ini)\.ts$/ },
  { rank: 6, group: 'server', match: /^server\// },
  { rank: 7, group: 'cli', match: /^cli\// },
  { rank: 8, group: 'api', match: /^index\.ts$/ },
];

/**
 * Imports that break the order and are someone else's to fix, each naming the issue that removes it. Temporary:
 * delete the entry with the fix. Format: `from -> to` (paths relative to src/).
 */
const ALLOWED: ReadonlyMap<string, string> = new Map<string, string>([]);

interface Import {
  from: string;
  to: string;
}

function layerOf(path: string) {
  return LAYERS.find((layer) => layer.match.test(path));
}

/** Relative specifiers in `source`, in order: `from '...'`, `import '...'` and `import('...')`. */
function relativeSpecifiers(source: string): string[] {
  const out: string[] = [];
  const patterns = [
    /\bfrom\s+['"](\.{1,2}\/[^'"]+)['"]/g,
    /\bimport\s+['"](\.{1,2}\/[^'"]+)['"]/g,
    /\bimport\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g,
  ];
  for (const pattern of patterns) {
    for (const match of source.matchAll(pattern)) out.push(match[1] as string);
  }
  return out;
}

/** The module a specifier of `from` names, relative to src/ (`.js` is the compiled name of a `.ts`). */
function resolveSpecifier(from: string, specifier: string): string {
  const target = posix.normalize(posix.join(posix.dirname(from), specifier));
  return target.replace(/\.js$/, '.ts');
}

/** Every rule an import breaks, as messages naming the file and the import. */
function violations(imports: readonly Import[]): string[] {
  const problems: string[] = [];
  for (const { from, to } of imports) {
    const source = layerOf(from);
    const target = layerOf(to);
    if (!source || !target) continue; // reported by the "every file has a layer" test
    const sideways = source.rank === target.rank && source.group !== target.group;
    if (target.rank <= source.rank && !sideways) continue;
    if (ALLOWED.has(`${from} -> ${to}`)) continue;
    const how = sideways ? 'a sibling of its own layer' : 'a layer above it';
    problems.push(`src/${from} (${source.group}) imports src/${to} (${target.group}), ${how}`);
  }
  return problems;
}

async function sourceFiles(): Promise<string[]> {
  const entries = await readdir(SRC, { recursive: true });
  return entries
    .map((entry) => entry.split(sep).join('/'))
    .filter((entry) => entry.endsWith('.ts'))
    .sort();
}

async function allImports(files: readonly string[]): Promise<Import[]> {
  const imports: Import[] = [];
  for (const file of files) {
    const source = await readFile(join(SRC, file), 'utf8');
    for (const specifier of relativeSpecifiers(source)) imports.push({ from: file, to: resolveSpecifier(file, specifier) });
  }
  return imports;
}

describe('the layers of src/', () => {
  it('put every source file in a layer of ARCHITECTURE.md', async () => {
    const homeless = (await sourceFiles()).filter((file) => !layerOf(file));
    assert.deepEqual(homeless, [], 'add these files to LAYERS here and to ARCHITECTURE.md');
  });

  it('never let a module import from a layer above it or from a sibling of its layer', async () => {
    const files = await sourceFiles();
    const imports = await allImports(files);
    assert.ok(imports.length > 100, `only ${imports.length} imports found: is the parser broken?`);
    assert.deepEqual(violations(imports), []);
  });

  it('only allow-list imports that still exist', async () => {
    const imports = new Set((await allImports(await sourceFiles())).map(({ from, to }) => `${from} -> ${to}`));
    const stale = [...ALLOWED.keys()].filter((entry) => !imports.has(entry));
    assert.deepEqual(stale, [], 'these allow-list entries are fixed: delete them');
  });

  it('resolve every relative import to a file in src/', async () => {
    const files = new Set(await sourceFiles());
    const missing = (await allImports([...files])).filter(({ to }) => !files.has(to));
    assert.deepEqual(missing, [], 'an import this test cannot map to a file would escape the layer check');
  });

  it(`keep every source file at ${MAX_LINES} lines or fewer`, async () => {
    const long: string[] = [];
    for (const file of await sourceFiles()) {
      const lines = (await readFile(join(SRC, file), 'utf8')).split('\n').length - 1;
      if (lines > MAX_LINES) long.push(`src/${file}: ${lines} lines`);
    }
    assert.deepEqual(long, [], 'split these along a real seam');
  });

  it('names the file and the import of a violation, upward and sideways', () => {
    const source = "import type { X } from '../cache/x.js';\nconst m = await import('../server/app.js');\nexport { y } from './y.js';";
    assert.deepEqual(relativeSpecifiers(source), ['../cache/x.js', './y.js', '../server/app.js']);
    assert.deepEqual(
      violations([
        { from: 'drivers/file-driver.ts', to: resolveSpecifier('drivers/file-driver.ts', '../cache/layout.js') },
        { from: 'origin/record.ts', to: 'cache/layout.ts' },
        { from: 'cache/fill.ts', to: 'drivers/driver.ts' },
        { from: 'cli/main.ts', to: 'errors.ts' },
      ]),
      [
        'src/drivers/file-driver.ts (drivers) imports src/cache/layout.ts (cache), a layer above it',
        'src/origin/record.ts (origin) imports src/cache/layout.ts (cache), a sibling of its own layer',
      ],
    );
  });
});
