/**
 * `imgcache serve` as deployed: a child process running the built dist/ of a checkout, its misses from the
 * bench's nginx origin through the `http:` origin, a private cache dir, a random port.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { NODE_FLAGS } from '../../src/server/workers/node-flags.js';
import { processTree } from './proc.js';
import { killLeftovers } from './server-child.js';
import { stop, waitForLine } from './spawn.js';

export interface Imgcache {
  /** http://127.0.0.1:PORT */
  base: string;
  pid: number;
  /** The serve process and all its descendants (workers, if any). */
  pids(): number[];
  stop(): Promise<void>;
}

export interface ImgcacheOptions {
  root: string;
  cacheDir: string;
  originPort: number;
  maxSize: number;
  /** Extra arguments to `serve` (--imgcache-arg). */
  extraArgs: string[];
  /** Where node --cpu-prof writes the profile (written on a graceful exit). */
  profileDir: string | undefined;
}

export async function startImgcache(options: ImgcacheOptions): Promise<Imgcache> {
  await mkdir(options.cacheDir, { recursive: true });
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !name.startsWith('IMGCACHE_')) env[name] = value;
  }
  Object.assign(env, { IMGCACHE_LOG_LEVEL: 'warn', IMGCACHE_SHUTDOWN_TIMEOUT: '5' });
  // As bin/imgcache.js's shebang starts it (NODE_FLAGS), with the profiler's flags when asked.
  const nodeFlags = [...NODE_FLAGS, ...(options.profileDir ? ['--cpu-prof', '--cpu-prof-dir', options.profileDir] : [])];
  const args = [
    ...nodeFlags,
    'bin/imgcache.js',
    'serve',
    '--cache-dir', options.cacheDir,
    '--origin', `http:http://127.0.0.1:${options.originPort}/img/{id}`,
    '--port', '0',
    '--max-size', `${Math.ceil(options.maxSize / (1 << 20))}M`,
    ...options.extraArgs,
  ];
  const child: ChildProcess = spawn(process.execPath, args, { cwd: options.root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let base: string | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    [, base] = await Promise.race([
      waitForLine(child, /serving on (http:\/\/\S+)/, 'imgcache serve'),
      new Promise<never>((_, fail) => (timer = setTimeout(() => fail(new Error('imgcache serve did not start in 60 s')), 60_000))),
    ]);
  } catch (error) {
    await stop(child, 'SIGTERM', 5_000); // one that does not start is still ours to end
    throw error;
  } finally {
    clearTimeout(timer);
  }
  child.stderr?.on('data', (chunk: Buffer) => process.stderr.write(`[imgcache] ${chunk.toString()}`));
  const pid = child.pid!;
  return {
    base: base!,
    pid,
    pids: () => processTree(pid),
    stop: async () => {
      const all = processTree(pid);
      await stop(child, 'SIGTERM', 15_000);
      killLeftovers(all);
    },
  };
}
