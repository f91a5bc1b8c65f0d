import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';

/** The real executable, as an operator runs it (it loads dist/, which `npm test` builds first). */
export const CLI_BIN = fileURLToPath(new URL('../../bin/imgcache.js', import.meta.url));

/** What one run of the CLI did. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Variables added to a clean environment (no inherited `IMGCACHE_*`). */
  env?: Record<string, string>;
  cwd?: string;
}

/** Runs `node bin/imgcache.js ...args` and resolves with its exit code and output, whatever the code. */
export function runCli(args: readonly string[], options: RunOptions = {}): Promise<CliResult> {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('IMGCACHE_')));
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [CLI_BIN, ...args],
      { env: { ...inherited, ...options.env }, cwd: options.cwd, timeout: 30_000, encoding: 'utf8' },
      (error, stdout, stderr) => {
        if (error && typeof error.code !== 'number') {
          reject(error);
          return;
        }
        resolve({ code: error ? Number(error.code) : 0, stdout, stderr });
      },
    );
  });
}

export { tempDir } from './tmp.js';

/** A file of `size` deterministic bytes, with the digests Glance would record for it. */
export async function writeImageFile(
  path: string,
  size: number,
  seed = 1,
): Promise<{ path: string; size: number; md5: string; sha512: string }> {
  const bytes = Buffer.alloc(size);
  for (let i = 0; i < size; i += 1) bytes[i] = (i * 31 + seed * 17) & 0xff;
  await writeFile(path, bytes);
  return {
    path,
    size,
    md5: createHash('md5').update(bytes).digest('hex'),
    sha512: createHash('sha512').update(bytes).digest('hex'),
  };
}

/** Every file below `root` as sorted relative paths (directories end in `/`); [] when `root` does not exist. */
export async function listTree(root: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(dir: string): Promise<void> {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      out.push(entry.isDirectory() ? `${relative(root, path)}/` : relative(root, path));
      if (entry.isDirectory()) await walk(path);
    }
  }
  if (await exists(root)) await walk(root);
  return out.sort();
}

export async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Glance's `GET /v2/cache` body, as `imgcache list --json` prints it. */
export interface CacheListing {
  cached_images: Array<{ image_id: string; hits: number; last_accessed: number; last_modified: number; size: number }>;
  queued_images: string[];
}

/** Runs `list --json` with `args` (e.g. `--cache-dir`) and parses it; fails loudly on a non-zero exit. */
export async function listJson(args: readonly string[], options: RunOptions = {}): Promise<CacheListing> {
  const result = await runCli(['list', '--json', ...args], options);
  if (result.code !== 0) throw new Error(`list --json exited ${result.code}: ${result.stderr}`);
  return JSON.parse(result.stdout) as CacheListing;
}

/** The lines a run wrote to stderr, without pino's JSON log lines. */
export function errorLines(result: CliResult): string[] {
  return result.stderr.split('\n').filter((line) => line !== '' && !line.startsWith('{'));
}

/** A failed run must say so in exactly one `imgcache: ...` line matching `pattern`, never with a stack trace. */
export function assertOneErrorLine(result: CliResult, pattern: RegExp): void {
  const lines = errorLines(result);
  assert.equal(lines.length, 1, `expected one error line, got:\n${result.stderr}`);
  assert.match(lines[0] ?? '', /^imgcache: /);
  assert.match(lines[0] ?? '', pattern);
  assert.doesNotMatch(result.stderr, /\n\s+at /);
}

/** A stream that keeps what is written to it, for running `main` in-process; `isTTY` fakes a terminal. */
export function captureStream(options: { isTTY?: boolean; columns?: number } = {}): {
  stream: PassThrough & { isTTY?: boolean; columns?: number };
  text: () => string;
} {
  const stream = Object.assign(new PassThrough(), options);
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}
