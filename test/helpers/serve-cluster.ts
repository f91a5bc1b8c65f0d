import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { CLI_BIN } from './cli.js';
import { dropSchemas, newSchemaName, PG_URL, pgQuery } from './postgres.js';
import { StormOrigin } from './storm-origin.js';
import { freePort } from './server-extra.js';

/**
 * A cluster of real `imgcache serve` child processes, as an operator runs one: the postgres driver on one schema,
 * peer fetch with a shared secret, each node its own cache dir and port, a clean environment (no inherited
 * `IMGCACHE_*`). Shared by test/cluster/storm*.test.ts, test/cluster/processes.test.ts and bench/cluster.ts,
 * which talk to the nodes over HTTP only, so they measure whatever the built CLI does.
 */

export interface ServeNode {
  name: string;
  /** http://127.0.0.1:PORT, also its IMGCACHE_SELF_URL. */
  url: string;
  dir: string;
  child: ChildProcess;
  /** Exit code or signal name, once the process has exited. */
  exited: Promise<number | string>;
  /** The last ~32-64 KB the process wrote (stdout and stderr). */
  output: () => string;
  /** SIGTERM, SIGKILL after `graceMs`; resolves with the exit code or signal. */
  stop: (graceMs?: number) => Promise<number | string>;
}

/** What every node of a cluster shares: origin, schema, secret, extra environment and arguments. */
export interface ServeNodeCommon {
  /** The `--origin` value. */
  origin: string;
  schema: string;
  secret: string;
  /** More environment for every node (e.g. IMGCACHE_PEER_MAX_READERS). */
  env?: Record<string, string>;
  /** More `serve` arguments for every node (e.g. `--workers 1`). */
  args?: string[];
  /** @default 30000 */
  startTimeoutMs?: number;
}

export interface ServeClusterOptions extends ServeNodeCommon {
  count: number;
  /** Node i caches in `${root}/node${i}`. */
  root: string;
}

/** One node: its name (for messages), its port (a restart reuses it) and its cache dir. */
export interface ServeNodeOptions extends ServeNodeCommon {
  name: string;
  port: number;
  dir: string;
}

const running = (child: ChildProcess) => child.exitCode === null && child.signalCode === null;

/**
 * Starts one node on `port` (http://127.0.0.1:PORT is also its IMGCACHE_SELF_URL) and resolves once it printed
 * "serving on" that URL; a node that exits, or does not serve within `startTimeoutMs`, is stopped and rejects.
 */
export async function startServeNode(options: ServeNodeOptions): Promise<ServeNode> {
  const { name, port, dir } = options;
  const url = `http://127.0.0.1:${port}`;
  const args = [
    'serve',
    '--cache-dir', dir,
    '--driver', 'postgres',
    '--origin', options.origin,
    '--port', String(port),
    '--peer-fetch',
    '--cluster-secret', options.secret,
    ...(options.args ?? []),
  ];
  const env = {
    ...Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('IMGCACHE_'))),
    IMGCACHE_DATABASE_URL: PG_URL,
    IMGCACHE_DATABASE_SCHEMA: options.schema,
    IMGCACHE_SELF_URL: url,
    IMGCACHE_LOG_LEVEL: 'warn',
    ...options.env,
  };
  const child = spawn(process.execPath, [CLI_BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')),
  );
  let output = '';
  const keep = (chunk: Buffer) => {
    output += chunk.toString('utf8');
    if (output.length > 64_000) output = output.slice(-32_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const stop = async (graceMs = 5_000) => {
    if (running(child)) {
      child.kill('SIGTERM');
      const gone = await Promise.race([exited.then(() => true), sleep(graceMs, false, { ref: false })]);
      if (!gone && running(child)) child.kill('SIGKILL');
    }
    return exited;
  };
  const node: ServeNode = { name, url, dir, child, exited, output: () => output, stop };

  const deadline = Date.now() + (options.startTimeoutMs ?? 30_000);
  while (!/serving on http:\/\/\S+/.test(output)) {
    if (!running(child)) throw new Error(`${name} exited (${await exited}) before serving:\n${output}`);
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${name} did not start in time:\n${output}`);
    }
    await sleep(20);
  }
  const served = /serving on (http:\/\/\S+)/.exec(output)?.[1];
  if (served !== url) {
    await stop();
    throw new Error(`${name} serves on ${served}, not on its IMGCACHE_SELF_URL ${url}`);
  }
  return node;
}

/** Starts `count` nodes at once; if one fails, the others are stopped and the error is thrown. */
export async function startServeCluster(options: ServeClusterOptions): Promise<ServeNode[]> {
  const start = async (index: number) =>
    startServeNode({ ...options, name: `node${index}`, port: await freePort(), dir: `${options.root}/node${index}` });
  const started = await Promise.allSettled(Array.from({ length: options.count }, (_, i) => start(i)));
  const nodes = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) {
    await Promise.all(nodes.map((node) => node.stop()));
    throw failed.reason;
  }
  return nodes;
}

/** What one checked download saw. */
export interface Download {
  node: string;
  id: string;
  bytes: number;
  md5: string;
  /** `x-cache-status`, or "none". */
  status: string;
  /** From `startedAt` (the storm's common start) to the last byte. */
  ms: number;
}

/**
 * GETs `/v2/images/{id}/file` from `node` and checks the body while it streams (length and MD5; nothing buffered).
 * Throws on another status, length or MD5.
 */
export async function downloadChecked(
  node: ServeNode,
  image: { id: string; size: number; md5: string },
  startedAt = performance.now(),
  signal?: AbortSignal,
): Promise<Download> {
  const response = await fetch(`${node.url}/v2/images/${image.id}/file`, { signal });
  if (response.status !== 200 || !response.body) {
    throw new Error(`${node.name}: GET ${image.id} answered ${response.status}: ${await response.text()}`);
  }
  const md5 = createHash('md5');
  let bytes = 0;
  for await (const chunk of response.body) {
    md5.update(chunk);
    bytes += chunk.length;
  }
  const download = {
    node: node.name,
    id: image.id,
    bytes,
    md5: md5.digest('hex'),
    status: response.headers.get('x-cache-status') ?? 'none',
    ms: performance.now() - startedAt,
  };
  if (bytes !== image.size || download.md5 !== image.md5) {
    throw new Error(
      `${node.name}: ${image.id} came back with ${bytes} B (md5 ${download.md5}), ` +
        `not ${image.size} B (md5 ${image.md5})`,
    );
  }
  return download;
}

/**
 * The largest sample of metric `name` in the node's GET /metrics (over all label sets), or undefined when the
 * node does not export it.
 */
export async function metricMax(node: ServeNode, name: string): Promise<number | undefined> {
  const response = await fetch(`${node.url}/metrics`);
  const text = await response.text();
  if (response.status !== 200) throw new Error(`${node.name}: GET /metrics answered ${response.status}: ${text}`);
  let max: number | undefined;
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!match || match[1] !== name) continue;
    const value = Number(match[2]);
    if (!Number.isNaN(value)) max = max === undefined ? value : Math.max(max, value);
  }
  return max;
}

/**
 * For a test: a fresh PostgreSQL schema, a {@link StormOrigin} limited to `rateMiB`, and `count` nodes with
 * `--workers 1` (one process per node: 3 owners plus workers on a 2-core CI machine would measure the
 * scheduler) and `env`; everything is undone by `t.after`, last-in first-out (nodes stop before the schema goes).
 */
export async function testCluster(
  t: TestContext,
  options: { count: number; rateMiB: number; secret: string; env?: Record<string, string> },
): Promise<{ origin: StormOrigin; nodes: ServeNode[]; schema: string }> {
  const cleanups: Array<() => Promise<unknown>> = [];
  t.after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
  });
  const root = await mkdtemp(join(tmpdir(), 'imgcache-cluster-'));
  cleanups.push(() => rm(root, { recursive: true, force: true }));
  const schema = newSchemaName();
  await pgQuery(`CREATE SCHEMA "${schema}"`);
  cleanups.push(() => dropSchemas([schema]));
  const origin = new StormOrigin(options.rateMiB);
  const originSpec = await origin.start();
  cleanups.push(() => origin.close());
  const nodes = await startServeCluster({
    count: options.count,
    root,
    origin: originSpec,
    schema,
    secret: options.secret,
    env: options.env ?? {},
    args: ['--workers', '1'],
  });
  cleanups.push(() => Promise.all(nodes.map((node) => node.stop())));
  return { origin, nodes, schema };
}
