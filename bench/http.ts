/**
 * HTTP benchmark (issue 11, goal 6): imgcache against nginx proxy_cache, Varnish and Glance's own image cache, side
 * by side in one run, on the same random image from the same origin with the same client. These machines are
 * shared and noisy: compare the ratios, and read the load averages printed with the run.
 *
 *   npm run bench:http                                  # 1 GiB image, 3 repetitions (medians)
 *   npm run bench:http -- --size-mib 256 --runs 5 --clients 8 --misses 16
 *   npm run bench:http -- --imgcache-arg=--workers=2    # extra args to `imgcache serve` (repeatable; use the = form)
 *   npm run bench:http -- --cpu-prof prof/              # profile imgcache (node --cpu-prof) and print its hot spots
 *   npm run bench:http -- --root ../copy                # build and run another checkout (to try a change side by side)
 *   npm run bench:http -- --no-prime                    # cold rows on the memory as it is (see lib/pages.ts)
 *   npm run bench:http -- --floors                      # also nginx and Varnish with a SHA-512 beside each cold row
 *   npm run bench:http -- --hit-downloads 8             # downloads summed in the 1-client hit row (default 4)
 *
 * Builds dist/ first (`npm run build`; `--skip-build` to use the dist/ there is). Installs Debian's nginx-light,
 * varnish and python3-glance when missing (root only, quietly; their packaged services never start: a policy-rc.d
 * answering 101 during the install). Without Varnish or Glance, that column is n/a. Everything runs as private
 * instances in one temp dir on random 127.0.0.1 ports, children of this process, stopped by PID at the end, on
 * error and on SIGINT:
 *
 * - the origin: nginx with sendfile serving /img/{id}, every id a hard link to one random file (same bytes, same
 *   page cache, a fresh id for every cold row), the digests as headers imgcache's `http:` origin reads
 *   (Content-MD5, x-image-meta-os_hash_algo/value); ids of the slow rows are sent at 180 MiB/s (limit_rate). Its
 *   access log ($request $status $http_range $body_bytes_sent $request_time) tells each row's origin requests and bytes.
 * - imgcache: `serve --origin http:http://127.0.0.1:PORT/img/{id}` (dist/, as deployed), plus --imgcache-arg.
 * - nginx proxy_cache: `proxy_cache_lock on` with lock timeout and age 1 h, use_temp_path=off, proxy_buffering on,
 *   worker_processes auto, sendfile; and the same with nginx's default 5 s lock (what users hit).
 * - Varnish 7: `-F -n DIR -s file,…`, transient storage capped at 64 MiB, beresp.do_stream, `-j none` as root.
 * - Glance 25.1 (Debian's, OpenStack Zed): glance-api with its image cache (`caching` flavor, sqlite driver), the
 *   images added by location on the same origin with their hashes (lib/glance.ts). It has no X-Cache-Status: a
 *   GET is a HIT when the image's file is in its cache before it. It does not coalesce misses, so the rows of
 *   concurrent misses are not run for it.
 * - With `--floors`, nginx (lock 1 h) and Varnish once more each, with `openssl dgst -sha512` of the image run
 *   beside every cold row (released with the clients; the row ends when both have): not peers but what a peer
 *   would take if it verified what imgcache verifies. A table after the main one says, per cold-row goal, whether
 *   such a peer would meet it.
 *
 * Each repetition runs every system in turn (the order rotates), each from a fresh start and an empty cache that
 * is deleted after its turn (disk use stays about 5× the image). Before each cold row, every system gets the same
 * free memory: a scratch file as big as the image is written and deleted (lib/pages.ts; on a VM with free-page
 * reporting, a miss's time otherwise depends on how recently anything was freed). The rows: warm one hit, hit ×1
 * (--hit-downloads downloads one after another, summed), hit ×N (MiB/s, server and client CPU s/GiB), one cold
 * miss (MiB/s, CPU s/GiB, origin requests), M concurrent cold misses from the fast and from the slow origin
 * (total s, slowest first byte, origin GETs and bytes), peak RSS of all the
 * system's processes per phase (nginx master + workers, Varnish's child, imgcache's serve and its children,
 * glance-api and its workers). Then the machine's limits on the same file: page-cache read, disk write + fsync,
 * openssl md5/sha512, Node md5 + sha512 on one thread, a bare node:http server piping the file. The client is
 * curl, one process per download, body to /dev/null; server CPU is utime + stime from /proc. Prints one table, the
 * limits, and PASS/FAIL per goal of issue 11. Not in `npm test`.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, link, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { positiveInt } from './lib/args.js';
import { makeImage } from './lib/image.js';
import { startImgcache } from './lib/imgcache.js';
import { measureLimits, type Limits } from './lib/limits.js';
import { type RunningServer, originConf, proxyConf, startNginx } from './lib/nginx.js';
import { cpuByThread } from './lib/proc.js';
import { summarizeProfiles } from './lib/profile.js';
import { ALL_SYSTEMS, FLOORS, report, SYSTEMS, type SystemName } from './lib/report.js';
import { runTurn, type Target, type Turn, type TurnIds } from './lib/rows.js';
import { ensurePackage, freePort, log, versionOf } from './lib/spawn.js';
import { GLANCE_MARKER, GLANCE_PYTHON, startGlance } from './lib/glance.js';
import { primeFreePages } from './lib/pages.js';
import { startVarnish } from './lib/varnish.js';

const MIB = 1 << 20;

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    runs: { type: 'string', default: '3' },
    clients: { type: 'string', default: '8' },
    'hit-downloads': { type: 'string', default: '4' },
    misses: { type: 'string', default: '16' },
    'skip-build': { type: 'boolean', default: false },
    'cpu-prof': { type: 'string' },
    root: { type: 'string' },
    'imgcache-arg': { type: 'string', multiple: true, default: [] },
    'no-prime': { type: 'boolean', default: false },
    floors: { type: 'boolean', default: false },
  },
});
/** The imgcache checkout to build and run: this one, or another (a copy with a change to compare). */
const ROOT = resolve(values.root ?? fileURLToPath(new URL('..', import.meta.url)));
const sizeMib = positiveInt('size-mib', values['size-mib']);
const runs = positiveInt('runs', values.runs);
const clients = positiveInt('clients', values.clients);
const hitDownloads = positiveInt('hit-downloads', values['hit-downloads']);
const misses = positiveInt('misses', values.misses);
const profileDir = values['cpu-prof'] ? resolve(values['cpu-prof']) : undefined;
const imgcacheArgs = values['imgcache-arg'] ?? [];
const size = sizeMib * MIB;
const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');

/** A running system for one turn. */
type Running = Target & { stop(): Promise<void>; describe?: () => string };

async function main(): Promise<void> {
  if (!values['skip-build']) {
    log('npm run build');
    const built = spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
    if (built.status !== 0) {
      if (!existsSync(join(ROOT, 'dist/cli/main.js'))) throw new Error('npm run build failed and there is no dist/');
      log('warning: npm run build failed; using the dist/ there is');
    }
  }
  const nginxBin = ensurePackage('nginx-light', ['/usr/sbin/nginx'], ['nginx']);
  if (!nginxBin.path) throw new Error(nginxBin.why);
  const varnishBin = ensurePackage('varnish', ['/usr/sbin/varnishd'], ['varnish', 'varnishncsa']);
  if (!varnishBin.path) log(`Varnish: n/a (${varnishBin.why}); its column shows n/a`);
  const glanceModule = ensurePackage('python3-glance', [GLANCE_MARKER], []);
  if (!glanceModule.path) log(`Glance: n/a (${glanceModule.why}); its column shows n/a`);
  const missing: Partial<Record<SystemName, string>> = {};
  if (varnishBin.why) missing.varnish = varnishBin.why;
  if (glanceModule.why) missing.glance = glanceModule.why;
  const floorOf = (s: SystemName) => (s === 'nginx+sha512' ? 'nginx' : s === 'varnish+sha512' ? 'varnish' : s);
  const systems = [...SYSTEMS, ...(values.floors ? FLOORS : [])].filter((s) => !missing[floorOf(s)]);
  const glanceVersion = glanceModule.path
    ? `Glance ${versionOf(GLANCE_PYTHON, ['-c', "import importlib.metadata as m; print(m.version('glance'))"])}`
    : 'no Glance';

  log(
    `load average at start ${load()}; ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores; node ${process.version}; ` +
      `${versionOf(nginxBin.path, ['-v'])}; ${varnishBin.path ? versionOf(varnishBin.path, ['-V']) : 'no varnishd'}; ` +
      `${glanceVersion}; ${versionOf('curl', ['--version']).split(' ').slice(0, 2).join(' ')}; ${versionOf('openssl', ['version'])}`,
  );
  log(
    `image ${sizeMib} MiB, ${runs} repetitions, ${hitDownloads} downloads in the 1-client hit row, ${clients} hit ` +
      `clients, ${misses} concurrent misses` +
      (imgcacheArgs.length ? `; imgcache serve ${imgcacheArgs.join(' ')}` : ''),
  );

  const dir = await mkdtemp(join(tmpdir(), 'imgcache-bench-http-'));
  const running = new Set<{ stop(): Promise<void> }>();
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      await Promise.allSettled([...running].map((r) => r.stop()));
      await rm(dir, { recursive: true, force: true });
    })());
  const interrupted = () => {
    interruptedBy = 'signal';
    cleanup().finally(() => process.exit(130)).catch(() => process.exit(130));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  const profilesBefore = new Set<string>();
  if (profileDir) {
    await mkdir(profileDir, { recursive: true });
    for (const f of readdirSync(profileDir)) profilesBefore.add(f);
  }
  try {
    await chmod(dir, 0o755); // nginx's workers run as nobody
    const originDir = join(dir, 'origin');
    await mkdir(originDir);
    const imageFile = join(dir, 'image.bin');
    log(`preparing a ${sizeMib} MiB random image, its md5 and sha512 in ${dir}...`);
    const digests = await makeImage(imageFile, size);
    const ids: Array<Record<SystemName, TurnIds>> = [];
    for (let run = 0; run < runs; run++) {
      const perSystem = {} as Record<SystemName, TurnIds>;
      for (const system of ALL_SYSTEMS) {
        perSystem[system] = { hit: randomUUID(), miss: randomUUID(), fast: randomUUID(), slow: randomUUID() };
        for (const id of Object.values(perSystem[system])) await link(imageFile, join(originDir, id));
      }
      ids.push(perSystem);
    }
    const allIds = ids.flatMap((perSystem) => Object.values(perSystem).flatMap((turn) => Object.values(turn)));
    const images = new Map(allIds.map((id) => [id, digests] as const));
    const slowIds = ids.flatMap((perSystem) => Object.values(perSystem).map((turn) => turn.slow));
    const originPrefix = join(dir, 'origin-nginx');
    const originPort = await freePort();
    const origin = await startNginx(nginxBin.path, originPrefix, originPort, originConf(originPrefix, originPort, originDir, images, slowIds));
    running.add(origin);

    const start = async (system: SystemName, turnDir: string, turnIds: TurnIds): Promise<Running> => {
      const port = await freePort();
      if (system === 'imgcache') {
        const server = await startImgcache({
          root: ROOT,
          cacheDir: join(turnDir, 'cache'),
          originPort,
          maxSize: 6 * size,
          extraArgs: imgcacheArgs,
          profileDir,
        });
        const cpu0 = cpuByThread(server.pid);
        return {
          name: system,
          url: (id) => `${server.base}/v2/images/${id}/file`,
          pids: server.pids,
          stop: server.stop,
          describe: () => {
            const cpu = cpuByThread(server.pid);
            return `imgcache serve CPU this turn: main thread ${(cpu.main - cpu0.main).toFixed(1)} s, other threads ` +
              `${(cpu.others - cpu0.others).toFixed(1)} s; ${server.pids().length} process(es)`;
          },
        };
      }
      if (system === 'glance') {
        const glance = await startGlance(turnDir, port, originPort, 6 * size);
        try {
          for (const id of [turnIds.hit, turnIds.miss]) {
            await glance.addImage(id, `http://127.0.0.1:${originPort}/img/${id}`, size, digests);
          }
        } catch (error) {
          await glance.stop(); // not yet in `running`: ours to end here
          throw error;
        }
        return {
          name: system,
          url: (id) => `http://127.0.0.1:${port}/v2/images/${id}/file`,
          pids: glance.pids,
          stop: glance.stop,
          cached: glance.cached,
          concurrentMisses: false,
          describe: () => `${glance.pids().length} process(es)`,
        };
      }
      // A floor is its peer with the image's SHA-512 computed beside each cold row (lib/report.ts, FLOORS).
      const base = floorOf(system);
      const alongside = base === system ? undefined : () => hashBeside(imageFile);
      let peer: RunningServer;
      if (base === 'varnish') peer = await startVarnish(varnishBin.path!, turnDir, port, originPort, 5 * size + 256 * MIB);
      else {
        const lock = base === 'nginx' ? '1h' : undefined;
        peer = await startNginx(nginxBin.path!, turnDir, port, proxyConf(turnDir, port, originPort, lock, 8 * size));
      }
      return { name: system, url: (id) => `http://127.0.0.1:${port}/${id}`, pids: peer.pids, stop: peer.stop, alongside };
    };

    const turns = Object.fromEntries(ALL_SYSTEMS.map((s) => [s, [] as Turn[]])) as Record<SystemName, Turn[]>;
    const limits: Limits[] = [];
    for (let run = 0; run < runs; run++) {
      log(`\nrepetition ${run + 1}/${runs}: load average ${load()}`);
      // Rotate who goes first, so a drift in the machine's load does not always favour one system.
      const order = systems.map((_, i) => systems[(i + run) % systems.length]!);
      for (const system of order) {
        const turnDir = join(dir, `run${run + 1}-${system}`);
        const target = await start(system, turnDir, ids[run]![system]);
        running.add(target);
        try {
          const prime = values['no-prime'] ? undefined : (bytes: number) => primeFreePages(dir, bytes);
          const options = { size, clients, hitDownloads, misses, originPrefix, prime };
          const turn = await runTurn(target, ids[run]![system], options);
          turns[system].push(turn);
          const mibps = (n: number, s: number) => ((n * sizeMib) / s).toFixed(0);
          const { fast, slow } = turn;
          log(
            `  ${system}: hit x1 ${mibps(hitDownloads, turn.hit1.s)}, ` +
              `x${clients} ${mibps(clients, turn.hitN.s)} MiB/s; miss ` +
              `${mibps(1, turn.miss1.s)} MiB/s (${turn.miss1.origin.requests} origin requests); ${misses} misses ` +
              (fast && slow
                ? `${fast.s.toFixed(2)} s (first byte ≤ ${fast.firstByte.toFixed(3)}, ${fast.origin.gets} GETs), ` +
                  `slow origin ${slow.s.toFixed(2)} s (≤ ${slow.firstByte.toFixed(3)}, ${slow.origin.gets} GETs, ` +
                  `origin sent for ${slow.origin.longest.toFixed(2)} s)`
                : 'not run') +
              (target.describe ? `; ${target.describe()}` : ''),
          );
        } finally {
          await target.stop();
          running.delete(target);
          await rm(turnDir, { recursive: true, force: true });
        }
      }
      limits.push(await measureLimits(imageFile, size, join(dir, 'scratch.bin'), clients));
    }
    log(`\nload average at the end ${load()}\n`);
    report({ size, clients, hitDownloads, misses, turns, missing, limits });
  } finally {
    await cleanup();
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
  }
  if (profileDir) await summarizeProfiles(profileDir, profilesBefore, ROOT);
}

/** `openssl dgst -sha512` of `file` (in the page cache): the hashing a verifying cache adds to a miss. */
function hashBeside(file: string): Promise<void> {
  return new Promise((done, fail) => {
    const child = spawn('openssl', ['dgst', '-sha512', file], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    child.once('error', fail);
    child.once('close', (code) => (code === 0 ? done() : fail(new Error(`openssl dgst -sha512 ${file}: exit ${code}: ${err}`))));
  });
}

/** Set on SIGINT/SIGTERM: the requests then cut short are not errors worth a stack trace. */
let interruptedBy: 'signal' | undefined;
await main().catch((error: unknown) => {
  if (!interruptedBy) throw error;
});
