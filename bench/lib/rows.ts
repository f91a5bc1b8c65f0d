/**
 * One system's turn in one repetition: warm a hit, then hits with 1 and N clients, one cold miss, and M
 * concurrent cold misses from the fast and from the 180 MiB/s origin, each timed with the system's CPU seconds,
 * its peak memory and (for misses) what the origin's log says it was asked for.
 */
import { parallel, type Got } from './curl.js';
import { type OriginCount, originCounts } from './nginx.js';
import { cpuByPid, cpuSince, endedChildrenCpu, type Peak, withPeak } from './proc.js';

/** A system as the rows see it. */
export interface Target {
  name: string;
  url(id: string): string;
  pids(): number[];
  /**
   * For a system that sends no X-Cache-Status header (Glance): whether `id` is cached, asked before each GET;
   * its downloads then count as HIT or MISS by that answer.
   */
  cached?(id: string): boolean;
  /** False for a system without coalescing (Glance): the rows of concurrent misses are left out (n/a). */
  concurrentMisses?: boolean;
  /**
   * Work run beside each cold row, released with its clients; the row ends when both have (the "peer + SHA-512"
   * floors: what a peer would take if it verified as imgcache does).
   */
  alongside?: () => Promise<void>;
}

/** Fresh ids for one turn: each cold row gets an id no system has seen. */
export interface TurnIds {
  hit: string;
  miss: string;
  fast: string;
  slow: string;
}

export interface Timed {
  s: number;
  /** Server CPU seconds. */
  cpu: number;
  /** CPU seconds of the curl clients (the load generator shares the cores). */
  client: number;
}

export interface Misses extends Timed {
  /** The slowest client's first byte, s. */
  firstByte: number;
  origin: OriginCount;
  statuses: string;
}

export interface Turn {
  /** {@link TurnOptions.hitDownloads} downloads one after another: `s`, `cpu` and `client` are their sums. */
  hit1: Timed;
  hitN: Timed;
  miss1: Timed & { origin: OriginCount };
  /** Absent for a system that does not coalesce misses ({@link Target.concurrentMisses}). */
  fast?: Misses;
  slow?: Misses;
  /** Peak memory per phase. */
  peaks: Map<string, Peak>;
}

export interface TurnOptions {
  size: number;
  clients: number;
  misses: number;
  /**
   * Downloads in the 1-client hit row, one after another. One 1 GiB hit is 15-35 ticks of server CPU, and on
   * loopback the kernel charges a varying share of the receiving side's TCP work to the sender: one download's
   * CPU varied 2x between consecutive hits of the same server (0.16-0.35 s), so the row sums several.
   */
  hitDownloads: number;
  originPrefix: string;
  /**
   * Called before each cold row with the bytes it will write (lib/pages.ts): every system's misses then start
   * from the same free memory. Absent: the memory as it is.
   */
  prime?: (bytes: number) => Promise<void>;
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

function statuses(got: Got[]): string {
  const counts = new Map<string, number>();
  for (const g of got) counts.set(g.cache || '-', (counts.get(g.cache || '-') ?? 0) + 1);
  return [...counts].map(([status, n]) => `${n} ${status}`).join(', ');
}

export async function runTurn(target: Target, ids: TurnIds, options: TurnOptions): Promise<Turn> {
  const { size } = options;
  const peaks = new Map<string, Peak>();
  const download = async (id: string, n: number, cold = false) => {
    const cached = target.cached?.(id);
    const alongside = cold ? target.alongside : undefined;
    let beside: Promise<number> | undefined;
    const got = await parallel(target.url(id), n, size, () => {
      if (!alongside) return;
      const t0 = performance.now();
      beside = alongside().then(() => (performance.now() - t0) / 1000);
      beside.catch(() => {}); // awaited below, once the downloads are done
    });
    if (beside) got.s = Math.max(got.s, await beside);
    if (cached !== undefined) for (const g of got.got) g.cache = cached ? 'HIT' : 'MISS';
    return got;
  };
  /**
   * `n` concurrent downloads, `times` such rounds one after another (their seconds summed). `cold`: the row's GETs
   * make the system write a new image once: the memory is primed, the floor's work runs beside.
   */
  const phase = async (name: string, n: number, id: string, cold = false, times = 1) => {
    if (cold) await options.prime?.(size);
    const cpu0 = cpuByPid(target.pids());
    const client0 = endedChildrenCpu();
    const origin0 = await originCounts(options.originPrefix, id);
    const rounds = async () => {
      const all = { s: 0, got: [] as Got[] };
      for (let round = 0; round < times; round++) {
        const got = await download(id, n, cold);
        all.s += got.s;
        all.got.push(...got.got);
      }
      return all;
    };
    const { value, peak } = await withPeak(target.pids, rounds);
    const cpu = cpuSince(cpu0, cpuByPid(target.pids()));
    peaks.set(name, peak);
    return { s: value.s, cpu, client: endedChildrenCpu() - client0, got: value.got, origin0 };
  };
  /**
   * What the origin was asked for `id` since `before` (a system may ask it before the first GET: Glance's HEAD
   * when the bench adds the image). It logs a request when it ends; a proxy may finish its fetch a moment after
   * its last client.
   */
  const origin = async (id: string, before: OriginCount): Promise<OriginCount> => {
    await sleep(300);
    const now = await originCounts(options.originPrefix, id);
    return {
      requests: now.requests - before.requests,
      gets: now.gets - before.gets,
      bytes: now.bytes - before.bytes,
      longest: now.longest,
    };
  };

  const first = await phase('warm-up', 1, ids.hit);
  if (first.got[0]?.cache !== 'MISS') throw new Error(`${target.name}: warm-up was ${first.got[0]?.cache}, not a MISS`);
  for (let attempt = 1; ; attempt++) {
    const again = await download(ids.hit, 1);
    if (again.got[0]?.cache === 'HIT') break;
    if (attempt === 5) throw new Error(`${target.name}: the second GET was ${again.got[0]?.cache}, not a HIT`);
    await sleep(200);
  }
  const hit = async (n: number, times: number) => {
    const got = await phase(`hit x${n}`, n, ids.hit, false, times);
    if (got.got.some((g) => g.cache !== 'HIT')) throw new Error(`${target.name}: hits x${n} were ${statuses(got.got)}`);
    return { s: got.s, cpu: got.cpu, client: got.client };
  };
  const hit1 = await hit(1, options.hitDownloads);
  const hitN = await hit(options.clients, 1);

  const miss = await phase('miss x1', 1, ids.miss, true);
  if (miss.got[0]?.cache !== 'MISS') throw new Error(`${target.name}: a cold GET was ${miss.got[0]?.cache}, not a MISS`);
  const miss1 = { s: miss.s, cpu: miss.cpu, client: miss.client, origin: await origin(ids.miss, miss.origin0) };
  if (target.concurrentMisses === false) return { hit1, hitN, miss1, peaks };

  const many = async (name: string, id: string): Promise<Misses> => {
    const got = await phase(name, options.misses, id, true);
    const firstByte = Math.max(...got.got.map((g) => g.firstByte));
    const counted = await origin(id, got.origin0);
    return { s: got.s, cpu: got.cpu, client: got.client, firstByte, origin: counted, statuses: statuses(got.got) };
  };
  const fast = await many(`misses x${options.misses}`, ids.fast);
  const slow = await many(`misses x${options.misses}, slow origin`, ids.slow);
  return { hit1, hitN, miss1, fast, slow, peaks };
}
