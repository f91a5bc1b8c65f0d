/**
 * Cold-miss benchmark (issue 11, goal 2), the quick loop for work on the miss path: imgcache against nginx
 * proxy_cache (1 h lock), one cold download of a fresh id per system per repetition, interleaved, behind the same
 * private nginx origin as `bench/http.ts`. Per row: MiB/s, server CPU s/GiB, and for imgcache where that CPU went
 * (per thread name, user and system time), so a change to the miss path shows what it moved. `bench/http.ts`
 * stays the judge of the goals; this one answers "did that help" in a minute.
 *
 *   npm run bench:miss                        # 1 GiB, 3 repetitions
 *   npm run bench:miss -- --size-mib 512 --runs 5 --imgcache-arg=--workers=1
 *   npm run bench:miss -- --root ../copy      # another checkout's dist/, side by side with this one's
 *   npm run bench:miss -- --cpu-prof prof/    # node --cpu-prof of imgcache, hot spots printed at the end
 *   npm run bench:miss -- --by-thread         # CPU per thread (`node+N`: N is the thread id's offset), not per name
 *   npm run bench:miss -- --clients 16        # 16 concurrent clients per cold image (coalesced: one origin GET),
 *                                              # with the slowest first byte; MiB/s is then per client
 *   npm run bench:miss -- --no-prime          # the memory as it is (each download primes it by default: lib/pages.ts)
 */
import { spawnSync } from 'node:child_process';
import { chmod, link, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { positiveInt } from './lib/args.js';
import { parallel } from './lib/curl.js';
import { startImgcache } from './lib/imgcache.js';
import { summarizeProfiles } from './lib/profile.js';
import { makeImage } from './lib/image.js';
import { originConf, originCounts, proxyConf, startNginx } from './lib/nginx.js';
import { primeFreePages } from './lib/pages.js';
import { cpuByPid, cpuByThreadName, cpuSince, type ThreadCpu } from './lib/proc.js';
import { median } from './lib/report.js';
import { ensurePackage, freePort, log } from './lib/spawn.js';

const MIB = 1 << 20;
const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    runs: { type: 'string', default: '3' },
    'skip-build': { type: 'boolean', default: false },
    root: { type: 'string', multiple: true, default: [] },
    'imgcache-arg': { type: 'string', multiple: true, default: [] },
    'cpu-prof': { type: 'string' },
    'by-thread': { type: 'boolean', default: false },
    clients: { type: 'string', default: '1' },
    'no-prime': { type: 'boolean', default: false },
  },
});
const sizeMib = positiveInt('size-mib', values['size-mib']);
const runs = positiveInt('runs', values.runs);
const clients = positiveInt('clients', values.clients);
const size = sizeMib * MIB;
const here = fileURLToPath(new URL('..', import.meta.url));
/** imgcache checkouts to compare: this one first, then every --root. */
const roots = [here, ...(values.root ?? []).map((r) => resolve(r))];
const byThread = values['by-thread'] ?? false;
const profileDir = values['cpu-prof'] ? resolve(values['cpu-prof']) : undefined;
const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');

interface Row {
  name: string;
  mibps: number[];
  /** The slowest client's first byte, s. */
  firstByte: number[];
  cpuPerGib: number[];
  threads: ThreadCpu[];
}

async function main(): Promise<void> {
  for (const root of values['skip-build'] ? [] : roots) {
    if (spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' }).status !== 0) throw new Error(`build failed in ${root}`);
  }
  const nginxBin = ensurePackage('nginx-light', ['/usr/sbin/nginx'], ['nginx']);
  if (!nginxBin.path) throw new Error(nginxBin.why);
  log(`load average at start ${load()}; ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores; node ${process.version}`);
  log(`image ${sizeMib} MiB, ${runs} repetitions` + (values['imgcache-arg']?.length ? `; imgcache serve ${values['imgcache-arg'].join(' ')}` : ''));
  const profilesBefore = new Set(profileDir ? await mkdir(profileDir, { recursive: true }).then(() => readdir(profileDir)) : []);
  const dir = await mkdtemp(join(tmpdir(), 'imgcache-bench-miss-'));
  const stoppers = new Set<() => Promise<void>>();
  try {
    await chmod(dir, 0o755); // nginx's workers run as nobody
    const originDir = join(dir, 'origin');
    await mkdir(originDir);
    const imageFile = join(dir, 'image.bin');
    const digests = await makeImage(imageFile, size);
    const systems = [...roots.map((_, i) => `imgcache${roots.length > 1 ? `#${i}` : ''}`), 'nginx'];
    const ids = Array.from({ length: runs }, () => systems.map(() => randomUUID()));
    for (const id of ids.flat()) await link(imageFile, join(originDir, id));
    const originPrefix = join(dir, 'origin-nginx');
    const originPort = await freePort();
    const images = new Map(ids.flat().map((id) => [id, digests] as const));
    const origin = await startNginx(nginxBin.path, originPrefix, originPort, originConf(originPrefix, originPort, originDir, images, []));
    stoppers.add(origin.stop);
    const rows: Row[] = systems.map((name) => ({ name, mibps: [], firstByte: [], cpuPerGib: [], threads: [] }));
    for (let run = 0; run < runs; run++) {
      log(`repetition ${run + 1}/${runs}: load average ${load()}`);
      for (let k = 0; k < systems.length; k++) {
        const s = (k + run) % systems.length;
        const row = rows[s]!;
        const turnDir = join(dir, `run${run}-${s}`);
        const isImgcache = s < roots.length;
        const port = await freePort();
        const server = isImgcache
          ? await startImgcache({ root: roots[s]!, cacheDir: join(turnDir, 'cache'), originPort, maxSize: 3 * size,
            extraArgs: values['imgcache-arg'] ?? [], profileDir })
          : await startNginx(nginxBin.path, turnDir, port, proxyConf(turnDir, port, originPort, '1h', 3 * size));
        stoppers.add(server.stop);
        try {
          const url = isImgcache ? `${(server as { base: string }).base}/v2/images/${ids[run]![s]}/file` : `http://127.0.0.1:${port}/${ids[run]![s]}`;
          if (!values['no-prime']) await primeFreePages(dir, size); // before the server's CPU is read, as in bench:http
          const pids = server.pids();
          const cpu0 = cpuByPid(pids);
          const threads0 = isImgcache ? cpuByThreadName(pids, undefined, byThread) : undefined;
          const got = await parallel(url, clients, size);
          const firstByte = Math.max(...got.got.map((g) => g.firstByte));
          if (clients > 1) {
            const each = got.got.map((g) => `${g.cache || '-'} ${(g.firstByte * 1000).toFixed(0)}`).join(', ');
            log(`  ${row.name}: first byte per client, ms: ${each}`);
          }
          const cpu = cpuSince(cpu0, cpuByPid(server.pids()));
          if (threads0) row.threads.push(cpuByThreadName(server.pids(), threads0, byThread));
          const requests = (await originCounts(originPrefix, ids[run]![s]!)).requests;
          row.mibps.push(sizeMib / got.s);
          row.firstByte.push(firstByte);
          row.cpuPerGib.push(cpu / (size / (1 << 30)));
          log(`  ${row.name}: ${(sizeMib / got.s).toFixed(0)} MiB/s, ${(cpu / (size / (1 << 30))).toFixed(2)} CPU s/GiB, ` +
            `${requests} origin request(s), slowest first byte ${firstByte.toFixed(3)} s, ${statusCounts(got.got)}`);
        } finally {
          await server.stop();
          stoppers.delete(server.stop);
          await rm(turnDir, { recursive: true, force: true });
        }
      }
    }
    log(`load average at the end ${load()}\n`);
    const nginx = rows[rows.length - 1]!;
    log(`${clients} client(s) per cold image`);
    log('| system | miss MiB/s (median) | ratio vs nginx | server CPU s/GiB | ratio vs nginx | slowest first byte s (worst) |');
    log('|---|---:|---:|---:|---:|---:|');
    for (const row of rows) {
      log(`| ${row.name} | ${median(row.mibps).toFixed(0)} | ${(median(row.mibps) / median(nginx.mibps)).toFixed(2)} | ` +
        `${median(row.cpuPerGib).toFixed(2)} | ${(median(row.cpuPerGib) / median(nginx.cpuPerGib)).toFixed(2)} | ` +
        `${Math.max(...row.firstByte).toFixed(3)} |`);
    }
    for (const row of rows.filter((r) => r.threads.length)) {
      log(`\n${row.name}: CPU s per GiB by thread (median of ${row.threads.length}; user + system)`);
      const names = [...new Set(row.threads.flatMap((t) => [...t.keys()]))].sort();
      for (const name of names) {
        const user = median(row.threads.map((t) => t.get(name)?.user ?? 0)) / (size / (1 << 30));
        const system = median(row.threads.map((t) => t.get(name)?.system ?? 0)) / (size / (1 << 30));
        if (user + system >= 0.01) log(`  ${name.padEnd(18)} ${user.toFixed(2)} + ${system.toFixed(2)}`);
      }
    }
  } finally {
    await Promise.allSettled([...stoppers].map((stop) => stop()));
    await rm(dir, { recursive: true, force: true });
  }
  if (profileDir) await summarizeProfiles(profileDir, profilesBefore, here);
}

/** `15 COALESCED, 1 MISS`: the cache statuses the clients saw. */
function statusCounts(got: Array<{ cache: string }>): string {
  const counts = new Map<string, number>();
  for (const { cache } of got) counts.set(cache || '-', (counts.get(cache || '-') ?? 0) + 1);
  return [...counts].map(([status, n]) => `${n} ${status}`).join(', ');
}

await main();
