import { type ChildProcess, spawn } from 'node:child_process';
import { get, type IncomingHttpHeaders } from 'node:http';
import type { TestContext } from 'node:test';
import { CLI_BIN } from '../helpers/cli.js';
import { until } from '../helpers/wait.js';

/** A real `imgcache serve` child process, for the fault tests of this folder. */
export interface ServeChild {
  child: ChildProcess;
  url: string;
  /** Everything it wrote to stdout and stderr so far. */
  output: () => string;
  /** Still running (it did not exit, crash or get killed). */
  alive: () => boolean;
}

/**
 * Starts `imgcache serve --port 0 ...args` in a clean environment (no inherited `IMGCACHE_*`; `extraEnv` added)
 * and waits for its "serving on" line (bounded); `url` is https:// when the config gives it `cert_file`. Killed
 * with SIGKILL when the test ends, if it is still running.
 */
export async function startServe(
  t: TestContext,
  args: readonly string[],
  cwd: string,
  nodeArgs: readonly string[] = [],
  extraEnv: Record<string, string> = {},
): Promise<ServeChild> {
  const env = {
    ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('IMGCACHE_'))),
    ...extraEnv,
  };
  const child = spawn(process.execPath, [...nodeArgs, CLI_BIN, 'serve', '--port', '0', ...args], {
    cwd,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  const alive = () => child.exitCode === null && child.signalCode === null;
  await until(
    () => {
      if (!alive()) throw new Error(`imgcache serve exited (${child.exitCode ?? child.signalCode}):\n${output}`);
      return /serving on (https?:\/\/\S+)/.test(output);
    },
    'imgcache serve to start',
    15_000,
    20,
  );
  const url = /serving on (https?:\/\/\S+)/.exec(output)?.[1] as string;
  return { child, url, output: () => output, alive };
}

/** One response, read to the end: a connection that dies first resolves with `error` set. */
export interface Got {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  error: Error | null;
}

/** `GET url` on its own connection, bounded by `timeoutMs` (a hang is a failure, not a stuck test). */
export function httpGet(url: string, timeoutMs = 30_000): Promise<Got> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let status = 0;
    let headers: IncomingHttpHeaders = {};
    const finish = (error: Error | null) => resolve({ status, headers, body: Buffer.concat(chunks), error });
    const req = get(url, { agent: false, timeout: timeoutMs }, (res) => {
      status = res.statusCode ?? 0;
      headers = res.headers;
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('end', () => finish(res.complete ? null : new Error('response ended early')));
      res.once('error', (error) => finish(error));
      res.once('aborted', () => finish(new Error('response aborted')));
    });
    req.once('timeout', () => req.destroy(new Error(`no complete response within ${timeoutMs} ms`)));
    req.once('error', (error) => finish(error));
  });
}

/** The value of one Prometheus sample line of `/metrics` (0 when absent), e.g. `name{reason="x"}`. */
export function metric(text: string, sample: string): number {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
  }
  return 0;
}
