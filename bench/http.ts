/**
 * HTTP benchmark: `imgcache serve` (a child process, as deployed) against nginx serving the same file, measured
 * side by side in one run. These machines are shared and noisy: compare the ratios, not the absolute numbers.
 *
 *   npm run bench:http                          # 1 GiB image, 3 runs per row (median)
 *   npm run bench:http -- --size-mib 256 --runs 5 --clients 8 --misses 16
 *   npm run bench:http -- --cpu-prof prof/      # also profile the server (node --cpu-prof) and print its hot spots
 *   npm run bench:http -- --root ../copy        # build and run another checkout (to try a change side by side)
 *
 * Builds dist/ first (`npm run build`; `--skip-build` to use the dist/ you have). Installs the Debian package
 * nginx-light when `nginx` is missing (root only) and runs a private instance: its own config and prefix in the
 * temp dir, `worker_processes auto` (one worker per core), `sendfile on`, `access_log off`, 127.0.0.1 only. A
 * third server, bare node:http piping the file (the "floor"), tells what any Node server pays (no sendfile) from
 * what imgcache adds.
 *
 * Rows and goals: hit throughput with 1 and N clients (imgcache/nginx >= 1.0); server CPU seconds per GiB served
 * (<= 1.15x nginx); one miss, a fill verified with MD5 + SHA-512, against nginx sending the origin file (>= 0.9);
 * M concurrent misses (one fill, from /metrics); the server's peak RSS (< 150 MiB), per phase too (VmHWM reset
 * through /proc/PID/clear_refs before each phase, so a phase's peak includes what the one before left for GC).
 *
 * The load generator is this process (node:http, keep-alive agent, bytes counted and discarded): on a small
 * machine it competes with the server for cores, which is why server CPU seconds per GiB served are reported
 * too (utime + stime from /proc/PID/stat; for nginx the master and its workers). Not part of `npm test`.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash, randomFillSync, randomUUID } from 'node:crypto';
import { createReadStream, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, open, readdir, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { createServer } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const MIB = 1 << 20;
const GIB = 1 << 30;

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    runs: { type: 'string', default: '3' },
    clients: { type: 'string', default: '8' },
    misses: { type: 'string', default: '16' },
    'skip-build': { type: 'boolean', default: false },
    'cpu-prof': { type: 'string' },
    root: { type: 'string' },
  },
});
/** The imgcache checkout to build and run: this one, or another (a copy with a change to compare). */
const ROOT = resolve(values.root ?? fileURLToPath(new URL('..', import.meta.url)));
const positiveInt = (name: string, text: string | undefined): number => {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer`);
  return n;
};
const sizeMib = positiveInt('size-mib', values['size-mib']);
const runs = positiveInt('runs', values.runs);
const clients = positiveInt('clients', values.clients);
const misses = positiveInt('misses', values.misses);
const profileDir = values['cpu-prof'] ? resolve(values['cpu-prof']) : undefined;
const size = sizeMib * MIB;
const log = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

// ---- /proc --------------------------------------------------------------------------------------------------

const TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** Fields of a proc(5) stat file after the command name (which may hold spaces): [0] is state, [1] ppid. */
function statFields(path: string): string[] {
  const text = readFileSync(path, 'utf8');
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/** utime + stime (fields 14 and 15 of proc(5)) of a stat file, in seconds. */
function statCpu(path: string): number {
  const fields = statFields(path);
  return (Number(fields[11]) + Number(fields[12])) / TICKS;
}

/** CPU seconds of the processes, every thread included. */
function cpuSeconds(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + statCpu(`/proc/${pid}/stat`), 0);
}

/** CPU seconds of a process's main thread and of all its other threads (GC helpers, libuv pool, workers). */
function cpuByThread(pid: number): { main: number; others: number } {
  let others = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    if (Number(tid) === pid) continue;
    try {
      others += statCpu(`/proc/${pid}/task/${tid}/stat`);
    } catch {
      // a thread that ended while we looked
    }
  }
  return { main: statCpu(`/proc/${pid}/task/${pid}/stat`), others };
}

/** A `Vm...:  N kB` line of /proc/PID/status, in bytes. */
function vm(pid: number, name: 'VmHWM' | 'VmRSS'): number {
  const match = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) * 1024 : 0;
}

/**
 * Runs `task` and returns its value with the peak RSS of `pid` while it ran: writing 5 to clear_refs resets
 * VmHWM (proc(5), Linux 4.0+). Where that is refused, the peak is the process's lifetime peak so far.
 */
async function withPeakRss<T>(pid: number, task: () => Promise<T>): Promise<{ value: T; peak: number }> {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch {
    // the lifetime peak it is
  }
  const value = await task();
  return { value, peak: vm(pid, 'VmHWM') };
}

function childrenOf(parent: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (Number(statFields(`/proc/${entry}/stat`)[1]) === parent) pids.push(Number(entry));
    } catch {
      // exited while we looked
    }
  }
  return pids;
}

// ---- HTTP client --------------------------------------------------------------------------------------------

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

interface Got {
  status: number;
  bytes: number;
  cache: string | undefined;
  body: string;
}

/** One request; the body is counted and dropped (kept as text only when `keepText`, for small answers). */
function request(url: string, method = 'GET', keepText = false, retried = false): Promise<Got> {
  return new Promise((done, fail) => {
    const req = http.request(url, { method, agent, timeout: 300_000 }, (res) => {
      let bytes = 0;
      const texts: Buffer[] = [];
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (keepText) texts.push(chunk);
      });
      res.on('end', () => {
        const cache = res.headers['x-cache-status'];
        done({ status: res.statusCode ?? 0, bytes, cache: Array.isArray(cache) ? cache[0] : cache, body: Buffer.concat(texts).toString() });
      });
      res.on('error', fail);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: timed out`)));
    req.on('error', (error: NodeJS.ErrnoException) => {
      // A kept-alive socket the server closed while idle: retry once on a fresh one.
      if (!retried && req.reusedSocket && error.code === 'ECONNRESET') {
        request(url, method, keepText, true).then(done, fail);
      } else fail(error);
    });
    req.end();
  });
}

/** Downloads the whole image; fails unless the answer is 200 with exactly `size` bytes. */
async function download(url: string): Promise<Got> {
  const got = await request(url);
  if (got.status !== 200 || got.bytes !== size) {
    throw new Error(`GET ${url}: status ${got.status}, ${got.bytes} bytes, expected 200 and ${size}`);
  }
  return got;
}

/** Runs `task` and measures its wall time and the CPU seconds the server processes used meanwhile. */
async function timed<T>(ids: number[], task: () => Promise<T>): Promise<{ s: number; cpu: number; value: T }> {
  const cpu0 = cpuSeconds(ids);
  const t0 = performance.now();
  const value = await task();
  const s = (performance.now() - t0) / 1000;
  return { s, cpu: cpuSeconds(ids) - cpu0, value };
}

const median = (xs: number[]): number => {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

// ---- setup --------------------------------------------------------------------------------------------------

async function makeImage(dir: string, id: string): Promise<void> {
  const md5 = createHash('md5');
  const sha512 = createHash('sha512');
  const out = await open(join(dir, id), 'w');
  const buffer = Buffer.allocUnsafe(MIB);
  for (let written = 0; written < size; written += MIB) {
    randomFillSync(buffer);
    md5.update(buffer);
    sha512.update(buffer);
    await out.write(buffer);
  }
  await out.close();
  const sidecar = { status: 'active', size, checksum: md5.digest('hex'), os_hash_algo: 'sha512', os_hash_value: sha512.digest('hex') };
  await writeFile(join(dir, `${id}.json`), JSON.stringify(sidecar));
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => done(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

function ensureNginx(): string {
  const which = () => spawnSync('sh', ['-c', 'command -v nginx || ls /usr/sbin/nginx'], { encoding: 'utf8' }).stdout.trim().split('\n')[0];
  let binary = which();
  if (binary) return binary;
  if (process.getuid?.() !== 0) throw new Error('nginx is missing: run `apt-get install -y nginx-light` as root');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => spawnSync('apt-get', ['install', '-y', 'nginx-light'], { stdio: 'inherit', env }).status === 0;
  log('nginx is missing: apt-get install -y nginx-light');
  if (!install()) {
    spawnSync('apt-get', ['update'], { stdio: 'inherit', env });
    if (!install()) throw new Error('apt-get install -y nginx-light failed');
  }
  binary = which();
  if (!binary) throw new Error('nginx-light installed, but no nginx binary found');
  return binary;
}

/** Waits for a line matching `pattern` on the child's stdout; rejects if it exits first. */
function waitForLine(child: ChildProcess, pattern: RegExp, what: string): Promise<RegExpExecArray> {
  return new Promise((done, fail) => {
    let out = '';
    let err = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      err += chunk.toString();
      if (err.length > 20_000) err = err.slice(-10_000);
    });
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = pattern.exec(out);
      if (match) done(match);
    });
    child.once('exit', (code, signal) => fail(new Error(`${what} exited (${code ?? signal}) before it was ready:\n${out}${err}`)));
  });
}

async function waitForHttp(url: string, what: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      await request(url, 'HEAD');
      return;
    } catch {
      await new Promise((done) => setTimeout(done, 100));
    }
  }
  throw new Error(`${what} did not answer ${url}`);
}

/** SIGTERM (graceful: a CPU profile gets written), SIGKILL if it is still running after `graceMs`. */
async function stop(child: ChildProcess | undefined, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

function nginxConf(prefix: string, root: string, port: number): string {
  // As root, workers drop to nobody (the temp dirs are made world-readable for them).
  const user = process.getuid?.() === 0 ? 'user nobody nogroup;\n' : '';
  return `${user}daemon off;
worker_processes auto;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 300s;
  keepalive_requests 100000;
  default_type application/octet-stream;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  server {
    listen 127.0.0.1:${port};
    location / { root ${root}; }
  }
}
`;
}

// ---- CPU profile summary ------------------------------------------------------------------------------------

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

/** Self time per function of the newest `.cpuprofile` in `dir`, top 25. */
async function summarizeProfile(dir: string): Promise<void> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile')).sort();
  const file = files.at(-1);
  if (!file) return log(`no .cpuprofile in ${dir} (did the server exit gracefully?)`);
  const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as {
    nodes: ProfileNode[];
    samples: number[];
    timeDeltas: number[];
  };
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map<string, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const frame = byId.get(id)?.callFrame;
    const where = frame?.url ? ` ${frame.url.replace(`file://${ROOT}`, '')}:${frame.lineNumber + 1}` : '';
    const key = `${frame?.functionName || '(anonymous)'}${where}`;
    const dt = profile.timeDeltas[i] ?? 0;
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  });
  // Samples are wall-clock time of the main thread: on a loaded machine, preemption inflates whatever was running.
  log(`\nserver CPU profile ${join(dir, file)}: main-thread self time, top 25 of ${(total / 1e6).toFixed(1)} s\n`);
  log('| self ms | % | function |\n|---:|---:|---|');
  for (const [key, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
    log(`| ${(us / 1000).toFixed(0)} | ${((100 * us) / total).toFixed(1)} | \`${key}\` |`);
  }
}

// ---- the run ------------------------------------------------------------------------------------------------

/**
 * The floor for any Node server: bare node:http piping the file in 1 MiB chunks, as a child process like the
 * others. What imgcache spends above it is imgcache's; what it spends above nginx is partly Node's (no sendfile).
 */
const FLOOR_SERVER = `
const http = require('node:http');
const { createReadStream, statSync } = require('node:fs');
const { pipeline } = require('node:stream');
const file = process.argv[1];
const size = statSync(file).size;
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
  pipeline(createReadStream(file, { highWaterMark: 1 << 20 }), res, () => {});
});
server.keepAliveTimeout = 300000;
server.listen(0, '127.0.0.1', () => console.log('floor on http://127.0.0.1:' + server.address().port));
process.on('SIGTERM', () => server.close(() => process.exit(0)).closeAllConnections());
`;

type Sample = { s: number; cpu: number };
const SIDES = ['imgcache', 'nginx', 'floor'] as const;
type Side = (typeof SIDES)[number];

async function main(): Promise<void> {
  if (!values['skip-build']) {
    log('npm run build');
    const built = spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
    if (built.status !== 0) {
      if (!existsSync(join(ROOT, 'dist/cli/main.js'))) throw new Error('npm run build failed and there is no dist/');
      log('warning: npm run build failed; using the dist/ there is');
    }
  }
  const nginxBin = ensureNginx();
  const nginxVersion = spawnSync(nginxBin, ['-v'], { encoding: 'utf8' }).stderr.trim().replace('nginx version: ', '');

  const dir = await mkdtemp(join(tmpdir(), 'imgcache-bench-http-'));
  let server: ChildProcess | undefined;
  let nginx: ChildProcess | undefined;
  let floor: ChildProcess | undefined;
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      agent.destroy(); // idle keep-alive sockets would hold up the servers' graceful stops
      await Promise.all([stop(server, 'SIGTERM', 15_000), stop(nginx, 'SIGQUIT', 5_000), stop(floor, 'SIGTERM', 5_000)]);
      await rm(dir, { recursive: true, force: true });
    })());
  const interrupted = () => {
    interruptedBy = 'signal';
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    const originDir = join(dir, 'origin');
    const cacheDir = join(dir, 'cache');
    const prefix = join(dir, 'nginx');
    await Promise.all([mkdir(originDir), mkdir(cacheDir), mkdir(prefix)]);
    await Promise.all([chmod(dir, 0o755), chmod(originDir, 0o755)]);
    const id = randomUUID();
    const originFile = join(originDir, id);
    log(`preparing a ${sizeMib} MiB image, its md5 and sha512 in ${originDir}...`);
    await makeImage(originDir, id);

    // imgcache serve, as a child process whose CPU and RSS /proc can tell.
    const env: Record<string, string> = {};
    for (const [name, value] of Object.entries(process.env)) {
      if (value !== undefined && !name.startsWith('IMGCACHE_')) env[name] = value;
    }
    Object.assign(env, { IMGCACHE_LOG_LEVEL: 'warn', IMGCACHE_SHUTDOWN_TIMEOUT: '5' });
    if (profileDir) await mkdir(profileDir, { recursive: true });
    const nodeFlags = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
    const serve = ['serve', '--cache-dir', cacheDir, '--origin', `directory:${originDir}`, '--port', '0'];
    server = spawn(process.execPath, [...nodeFlags, 'bin/imgcache.js', ...serve, '--max-size', `${4 * sizeMib}M`], {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const [, base] = await waitForLine(server, /serving on (http:\/\/\S+)/, 'imgcache serve');
    server.stderr?.on('data', (chunk: Buffer) => process.stderr.write(`[imgcache] ${chunk.toString()}`));
    const serverPid = server.pid!;
    const rssAtStart = vm(serverPid, 'VmRSS');
    const threadsAtStart = cpuByThread(serverPid);

    // nginx and the node:http floor on the same file.
    const nginxPort = await freePort();
    await writeFile(join(prefix, 'nginx.conf'), nginxConf(prefix, originDir, nginxPort));
    nginx = spawn(nginxBin, ['-c', join(prefix, 'nginx.conf'), '-p', prefix, '-e', join(prefix, 'error.log')], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    nginx.once('exit', (code, signal) => {
      if (code !== 0 && signal !== 'SIGQUIT') process.stderr.write(`nginx exited (${code ?? signal}); see ${prefix}/error.log\n`);
    });
    floor = spawn(process.execPath, ['-e', FLOOR_SERVER, originFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    const [, floorBase] = await waitForLine(floor, /floor on (http:\/\/\S+)/, 'the node:http floor');
    const urls: Record<Side, string> = {
      imgcache: `${base}/v2/images/${id}/file`,
      nginx: `http://127.0.0.1:${nginxPort}/${id}`,
      floor: `${floorBase}/${id}`,
    };
    await waitForHttp(urls.nginx, 'nginx');
    const nginxPids = [nginx.pid!, ...childrenOf(nginx.pid!)];
    const pids: Record<Side, number[]> = { imgcache: [serverPid], nginx: nginxPids, floor: [floor.pid!] };

    const fillsStarted = async () => {
      const { body } = await request(`${base}/metrics`, 'GET', true);
      const match = /^imgcache_fills_total\{outcome="started"\} (\d+)/m.exec(body);
      if (!match) throw new Error('/metrics has no imgcache_fills_total{outcome="started"}');
      return Number(match[1]);
    };
    const evict = async () => {
      const got = await request(`${base}/v2/cache/${id}`, 'DELETE');
      if (got.status >= 300) throw new Error(`DELETE /v2/cache/${id}: ${got.status}`);
    };

    log('warming: one miss (fills the cache) and one hit on imgcache, one GET on nginx and on the floor');
    const warmUp = await withPeakRss(serverPid, async () => [await download(urls.imgcache), await download(urls.imgcache)]);
    const [first, warm] = warmUp.value;
    if (first?.cache !== 'MISS' || warm?.cache !== 'HIT') throw new Error(`warm-up: ${first?.cache}, then ${warm?.cache}`);
    await download(urls.nginx);
    await download(urls.floor);

    const peaks = new Map<string, number>([['warm-up', warmUp.peak]]);
    /** Runs an imgcache phase, keeping the server's peak RSS during it (the largest over the runs). */
    const phase = async <T>(name: string, task: () => Promise<T>): Promise<T> => {
      const { value, peak } = await withPeakRss(serverPid, task);
      peaks.set(name, Math.max(peaks.get(name) ?? 0, peak));
      return value;
    };
    /** `n` parallel downloads from one side, timed; imgcache's are checked to have been `status`. */
    const parallel = async (side: Side, n: number, status = 'HIT') => {
      const run = () => timed(pids[side], () => Promise.all(Array.from({ length: n }, () => download(urls[side]))));
      if (side !== 'imgcache') return run();
      const result = await phase(`${status === 'HIT' ? 'hit' : 'miss'} x${n}`, run);
      if (status === 'HIT' && result.value.some((got) => got.cache !== 'HIT')) throw new Error('expected hits');
      return result;
    };
    const samples = () => ({ imgcache: [] as Sample[], nginx: [] as Sample[], floor: [] as Sample[] });
    const hit1 = samples();
    const hitN = samples();
    const miss1: Sample[] = [];
    const missNginx: Sample[] = [];
    const plainRead: number[] = [];
    const hashed: number[] = [];
    const missN: Array<Sample & { fills: number; statuses: string }> = [];
    const missNNginx: Sample[] = [];
    const clientCpu = { s: 0, bytes: 0 };

    for (let run = 1; run <= runs; run++) {
      // Rotate who goes first, so a drift in the machine's load does not always favour one side.
      const order = SIDES.map((_, i) => SIDES[(i + run - 1) % SIDES.length]!);
      const cpu0 = process.cpuUsage();
      for (const side of order) hit1[side].push(await parallel(side, 1));
      for (const side of order) hitN[side].push(await parallel(side, clients));
      const used = process.cpuUsage(cpu0);
      clientCpu.s += (used.user + used.system) / 1e6;
      clientCpu.bytes += SIDES.length * (1 + clients) * size;

      await evict();
      const miss = await parallel('imgcache', 1, 'MISS');
      if (miss.value[0]?.cache !== 'MISS') throw new Error(`expected a miss, got ${miss.value[0]?.cache}`);
      miss1.push(miss);
      missNginx.push(await parallel('nginx', 1));
      plainRead.push(await fileTime(originFile, null));
      hashed.push(await fileTime(originFile, ['md5', 'sha512']));

      await evict();
      const before = await fillsStarted();
      const many = await parallel('imgcache', misses, 'MISS');
      const counts = new Map<string, number>();
      for (const got of many.value) counts.set(String(got.cache), (counts.get(String(got.cache)) ?? 0) + 1);
      const statuses = [...counts].map(([status, n]) => `${n} ${status}`).join(', ');
      missN.push({ s: many.s, cpu: many.cpu, fills: (await fillsStarted()) - before, statuses });
      missNNginx.push(await parallel('nginx', misses));

      const mibps = (n: number, sample: Sample | undefined) => ((n * sizeMib) / (sample?.s ?? NaN)).toFixed(0);
      const each = (n: number, of: Record<Side, Sample[]>) => SIDES.map((side) => mibps(n, of[side].at(-1))).join('/');
      log(
        `run ${run}/${runs}: hit x1 ${each(1, hit1)}, hit x${clients} ${each(clients, hitN)} MiB/s (imgcache/nginx/floor); ` +
          `miss ${mibps(1, miss)} MiB/s (nginx ${mibps(1, missNginx.at(-1))}, read ${(sizeMib / plainRead.at(-1)!).toFixed(0)}, ` +
          `md5+sha512 ${(sizeMib / hashed.at(-1)!).toFixed(0)}); ${misses} misses ${many.s.toFixed(2)} s, ` +
          `fills ${missN.at(-1)!.fills} (${statuses})`,
      );
    }

    const peakRss = Math.max(vm(serverPid, 'VmHWM'), ...peaks.values());
    const threads = cpuByThread(serverPid);
    const nginxPeakRss = Math.max(...nginxPids.map((pid) => vm(pid, 'VmHWM')));
    const floorPeakRss = vm(floor.pid!, 'VmHWM');

    // ---- the table ----
    const speed = (xs: Sample[], n: number) => median(xs.map((x) => (n * sizeMib) / x.s));
    const cpuPerGib = (xs: Sample[], n: number) => median(xs.map((x) => x.cpu / ((n * size) / GIB)));
    type Goal = { at: string; pass: (ratio: number) => boolean } | null;
    const rows: string[] = [];
    const row = (name: string, a: number, b: number | null, digits: number, goal: Goal, floorValue?: number) => {
      const f = (x: number) => x.toFixed(digits);
      const ratio = b ? a / b : NaN;
      // A ratio over 0 CPU ticks (10 ms each) is no measurement: the image is too small for this machine.
      const verdict = !goal ? 'info' : Number.isNaN(ratio) ? 'n/a' : goal.pass(ratio) ? 'PASS' : 'FAIL';
      const floorCells = floorValue === undefined ? '— | —' : `${f(floorValue)} | ${(a / floorValue).toFixed(2)}`;
      rows.push(
        `| ${name} | ${f(a)} | ${b === null ? '—' : f(b)} | ${Number.isNaN(ratio) ? '—' : ratio.toFixed(2)} | ` +
          `${goal?.at ?? '—'} | ${verdict} | ${floorCells} |`,
      );
    };
    const atLeast = (x: number): Goal => ({ at: `≥ ${x.toFixed(2)}`, pass: (r) => r >= x });
    const atMost = (x: number): Goal => ({ at: `≤ ${x.toFixed(2)}`, pass: (r) => r <= x });
    const hitRow = (name: string, of: Record<Side, Sample[]>, n: number) => {
      row(`hit, ${name}: MiB/s`, speed(of.imgcache, n), speed(of.nginx, n), 0, atLeast(1), speed(of.floor, n));
    };
    const cpuRow = (name: string, of: Record<Side, Sample[]>, n: number) => {
      const [a, b, c] = SIDES.map((side) => cpuPerGib(of[side], n)) as [number, number, number];
      row(`server CPU s/GiB, hits, ${name}`, a, b, 3, atMost(1.15), c);
    };
    hitRow('1 client', hit1, 1);
    hitRow(`${clients} clients, total`, hitN, clients);
    cpuRow('1 client', hit1, 1);
    cpuRow(`${clients} clients`, hitN, clients);
    row('miss (fill: md5 + sha512, fsync) vs nginx GET of the origin file: MiB/s', speed(miss1, 1), speed(missNginx, 1), 0, atLeast(0.9));
    row('miss vs plain read of the origin file (no HTTP): MiB/s', speed(miss1, 1), median(plainRead.map((s) => sizeMib / s)), 0, null);
    row('miss vs md5 + sha512 of the origin file on one thread: MiB/s', speed(miss1, 1), median(hashed.map((s) => sizeMib / s)), 0, null);
    row('server CPU s/GiB, miss vs nginx GET', cpuPerGib(miss1, 1), cpuPerGib(missNginx, 1), 3, null);
    const fills = Math.max(...missN.map((m) => m.fills));
    rows.push(`| ${misses} concurrent misses: fills started (max of runs) | ${fills} | — | — | = 1 | ${fills === 1 ? 'PASS' : 'FAIL'} | — | — |`);
    const missNWall = median(missN.map((m) => m.s));
    row(`${misses} concurrent misses: wall s vs 1 client miss`, missNWall, median(miss1.map((m) => m.s)), 2, null);
    row(`${misses} concurrent misses vs ${misses} nginx clients: wall s`, missNWall, median(missNNginx.map((m) => m.s)), 2, null);
    row(`server CPU s/GiB sent, ${misses} misses vs ${misses} nginx clients`, cpuPerGib(missN, misses), cpuPerGib(missNNginx, misses), 3, null);
    const mib = (bytes: number) => (bytes / MIB).toFixed(0);
    rows.push(
      `| server peak RSS (VmHWM) MiB; nginx: its largest process | ${mib(peakRss)} | ${mib(nginxPeakRss)} | — | < 150 | ` +
        `${peakRss < 150 * MIB ? 'PASS' : 'FAIL'} | ${mib(floorPeakRss)} | ${(peakRss / floorPeakRss).toFixed(2)} |`,
    );

    const cpu = cpus()[0]?.model ?? 'unknown CPU';
    log(
      `\nimage ${sizeMib} MiB, median of ${runs} runs; ${cpu}, ${cpus().length} cores; node ${process.version}; ` +
        `nginx ${nginxVersion} (worker_processes auto = ${nginxPids.length - 1} workers, sendfile on); ` +
        `load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}\n` +
        `imgcache RSS at start ${mib(rssAtStart)} MiB; the bench client spent ` +
        `${(clientCpu.s / (clientCpu.bytes / GIB)).toFixed(3)} CPU s/GiB received (hits), on the same cores; ` +
        `imgcache CPU over the run: main thread ${(threads.main - threadsAtStart.main).toFixed(1)} s, other threads ` +
        `(GC helpers, libuv pool, hash workers) ${(threads.others - threadsAtStart.others).toFixed(1)} s\n`,
    );
    log('| row | imgcache | nginx / baseline | ratio | goal | result | node:http floor | imgcache / floor |');
    log('|---|---:|---:|---:|---|---|---:|---:|');
    for (const line of rows) log(line);
    log(`\nserver peak RSS per phase, MiB: ${[...peaks].map(([name, peak]) => `${name} ${mib(peak)}`).join(', ')}`);
    log(`${misses} concurrent misses, statuses per run: ${missN.map((m) => m.statuses).join('; ')}`);
  } finally {
    await cleanup();
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
  }
  if (profileDir) await summarizeProfile(profileDir);
}

/** Seconds to read the file in 1 MiB chunks in this process, hashing it with `algorithms` if given. */
async function fileTime(file: string, algorithms: string[] | null): Promise<number> {
  const hashes = (algorithms ?? []).map((algorithm) => createHash(algorithm));
  const t0 = performance.now();
  let read = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: MIB })) {
    read += (chunk as Buffer).length;
    for (const hash of hashes) hash.update(chunk as Buffer);
  }
  for (const hash of hashes) hash.digest();
  if (read !== size) throw new Error(`read ${read} bytes of ${file}`);
  return (performance.now() - t0) / 1000;
}

/** Set on SIGINT/SIGTERM: the requests then cut short are not errors worth a stack trace. */
let interruptedBy: 'signal' | undefined;
await main().catch((error: unknown) => {
  if (!interruptedBy) throw error;
});
