/**
 * The bench's output: one markdown table of the systems side by side (medians over the repetitions; counts,
 * first bytes and memory as the worst repetition), the limits table, and one PASS/FAIL line per goal of issue 11.
 * Every verdict is computed from this run's numbers; what the run did not measure says so.
 */
import type { Limits } from './limits.js';
import type { Turn } from './rows.js';
import { log } from './spawn.js';

const MIB = 1 << 20;
const GIB = 1 << 30;

export const SYSTEMS = ['imgcache', 'nginx', 'nginx-5s', 'varnish', 'glance'] as const;
/**
 * The verifying floors (`--floors`): nginx (lock 1 h) and Varnish with a SHA-512 of the image beside each cold
 * row, on the same cores. Not peers: what a peer would take if it verified what imgcache verifies.
 */
export const FLOORS = ['nginx+sha512', 'varnish+sha512'] as const;
export type SystemName = (typeof SYSTEMS)[number] | (typeof FLOORS)[number];
/** Every system a run can have: the peers' table, then the floors'. */
export const ALL_SYSTEMS: readonly SystemName[] = [...SYSTEMS, ...FLOORS];
const HEADERS: Record<SystemName, string> = {
  imgcache: 'imgcache',
  nginx: 'nginx proxy_cache (lock 1 h)',
  'nginx-5s': 'nginx proxy_cache (default 5 s lock)',
  varnish: 'Varnish 7 (file, streaming)',
  glance: "Glance 25.1's own cache (sqlite driver)",
  'nginx+sha512': 'nginx (lock 1 h) + SHA-512 alongside',
  'varnish+sha512': 'Varnish + SHA-512 alongside',
};

export interface ReportInput {
  size: number;
  clients: number;
  /** Downloads summed in each 1-client hit row. */
  hitDownloads: number;
  misses: number;
  turns: Record<SystemName, Turn[]>;
  /** Why a peer (Varnish, Glance) has no numbers, for each one that has none. */
  missing: Partial<Record<SystemName, string>>;
  limits: Limits[];
}

type Verdict = 'PASS' | 'FAIL' | 'n/a';
const combine = (verdicts: Verdict[]): Verdict =>
  verdicts.includes('FAIL') ? 'FAIL' : verdicts.includes('n/a') ? 'n/a' : 'PASS';

export const median = (xs: number[]): number => {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

/** imgcache's ratios to a peer's value; NaN where the peer has none. */
interface Ratios {
  nginx: number;
  varnish: number;
  glance: number;
}

interface Goal {
  text: string;
  /** imgcache's value and its ratios to nginx (lock 1 h), Varnish and Glance. */
  check(value: number, vs: Ratios): Verdict;
}

interface Row {
  name: string;
  /** The row's value for one system's repetitions; NaN when it has none. */
  of(turns: Turn[]): number;
  digits: number;
  goal?: Goal;
  /** The goal (1–4) the row counts for. */
  counts?: number;
}

const ok = (condition: boolean, ...inputs: number[]): Verdict =>
  inputs.some((x) => !Number.isFinite(x)) ? 'n/a' : condition ? 'PASS' : 'FAIL';

function rows(input: ReportInput): Row[] {
  const { size, clients, hitDownloads, misses } = input;
  const mib = size / MIB;
  const gib = size / GIB;
  const med = (f: (t: Turn) => number) => (turns: Turn[]) => (turns.length ? median(turns.map(f)) : NaN);
  const max = (f: (t: Turn) => number) => (turns: Turn[]) => (turns.length ? Math.max(...turns.map(f)) : NaN);
  const vsNginx = (at: number, atLeast: boolean): Goal => ({
    text: `${atLeast ? '≥' : '≤'} ${at.toFixed(2)}× nginx`,
    check: (_, vs) => ok(atLeast ? vs.nginx >= at : vs.nginx <= at, vs.nginx),
  });
  /** At least `at`× nginx and at least 1.0× Glance (goals 1 and 2). */
  const fasterThan = (at: number): Goal => ({
    text: `≥ ${at.toFixed(2)}× nginx, ≥ 1.00× Glance`,
    check: (_, vs) => combine([ok(vs.nginx >= at, vs.nginx), ok(vs.glance >= 1, vs.glance)]),
  });
  const atMost = (limit: number, unit: string): Goal => ({
    text: `≤ ${limit} ${unit}`,
    check: (v) => ok(v <= limit, v),
  });
  const exactly = (n: number): Goal => ({ text: `= ${n}`, check: (v) => ok(v === n, v) });
  /** A system without the concurrent-miss rows (Glance) shows n/a in them. */
  const missRows = (label: string, pick: (t: Turn) => Turn['fast'], totalGoal: Goal): Row[] => {
    const of = (f: (m: NonNullable<Turn['fast']>) => number) => (t: Turn) => {
      const m = pick(t);
      return m ? f(m) : NaN;
    };
    return [
      { name: `${misses} concurrent cold misses, ${label}: total s`, of: med(of((m) => m.s)), digits: 2, goal: totalGoal, counts: 3 },
      { name: `… slowest first byte s (worst run)`, of: max(of((m) => m.firstByte)), digits: 3, goal: atMost(0.05, 's'), counts: 3 },
      { name: `… origin GETs (worst run)`, of: max(of((m) => m.origin.gets)), digits: 0, goal: exactly(1), counts: 3 },
      { name: `… origin MiB (worst run)`, of: max(of((m) => m.origin.bytes / MIB)), digits: 0 },
    ];
  };
  return [
    {
      name: 'hit, 1 client, MiB/s',
      of: med((t) => (hitDownloads * mib) / t.hit1.s),
      digits: 0,
      goal: fasterThan(1),
      counts: 1,
    },
    { name: `hit, ${clients} clients, MiB/s`, of: med((t) => (clients * mib) / t.hitN.s), digits: 0, goal: fasterThan(1), counts: 1 },
    {
      name: 'hit, 1 client, server CPU s/GiB',
      of: med((t) => t.hit1.cpu / (hitDownloads * gib)),
      digits: 3,
      goal: vsNginx(1.5, false),
      counts: 1,
    },
    { name: 'hit, 1 client, client (curl) CPU s/GiB', of: med((t) => t.hit1.client / (hitDownloads * gib)), digits: 3 },
    {
      name: `hit, ${clients} clients, server CPU s/GiB`,
      of: med((t) => t.hitN.cpu / (clients * gib)),
      digits: 3,
      goal: vsNginx(1.5, false),
      counts: 1,
    },
    { name: `hit, ${clients} clients, client (curl) CPU s/GiB`, of: med((t) => t.hitN.client / (clients * gib)), digits: 3 },
    { name: 'cold miss, 1 client, MiB/s', of: med((t) => mib / t.miss1.s), digits: 0, goal: fasterThan(0.9), counts: 2 },
    { name: 'cold miss, server CPU s/GiB', of: med((t) => t.miss1.cpu / gib), digits: 3 },
    { name: 'cold miss, origin requests (worst run)', of: max((t) => t.miss1.origin.requests), digits: 0 },
    ...missRows('fast origin', (t) => t.fast, {
      text: '≤ 1.00× nginx, ≤ 1.20× Varnish',
      check: (_, vs) => combine([ok(vs.nginx <= 1, vs.nginx), ok(vs.varnish <= 1.2, vs.varnish)]),
    }),
    ...missRows('origin at 180 MiB/s', (t) => t.slow, {
      text: '≤ 1.05× Varnish',
      check: (_, vs) => ok(vs.varnish <= 1.05, vs.varnish),
    }),
    {
      name: 'peak RSS MiB, all processes, worst phase',
      of: max((t) => Math.max(...[...t.peaks.values()].map((p) => p.rss)) / MIB),
      digits: 0,
      goal: { text: '< 150 MiB', check: (v) => ok(v < 150, v) },
      counts: 4,
    },
    {
      name: 'peak anonymous RSS MiB, worst phase',
      of: max((t) => Math.max(...[...t.peaks.values()].map((p) => p.anon)) / MIB),
      digits: 0,
    },
    {
      name: 'peak PSS MiB (shared pages split between the processes), worst phase',
      of: max((t) => Math.max(...[...t.peaks.values()].map((p) => p.pss)) / MIB),
      digits: 0,
    },
    {
      name: 'peak resident MiB, each page counted once (the processes as one), worst phase',
      of: max((t) => Math.max(...[...t.peaks.values()].map((p) => p.once)) / MIB || NaN), // 0: not root
      digits: 0,
      goal: { text: '< 150 MiB', check: (v) => ok(v < 150, v) },
      counts: 4,
    },
  ];
}

const cell = (x: number, digits: number) => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');

export function report(input: ReportInput): void {
  const verdicts = new Map<number, Array<{ name: string; verdict: Verdict }>>();
  log(`| row | ${SYSTEMS.map((s) => HEADERS[s]).join(' | ')} | ratio vs nginx | ratio vs Varnish | ratio vs Glance | goal | result |`);
  log(`|---|${SYSTEMS.map(() => '---:').join('|')}|---:|---:|---:|---|---|`);
  for (const row of rows(input)) {
    const values = SYSTEMS.map((s) => row.of(input.turns[s]));
    const of = (s: (typeof SYSTEMS)[number]) => values[SYSTEMS.indexOf(s)]!;
    const mine = of('imgcache');
    const vs: Ratios = { nginx: mine / of('nginx'), varnish: mine / of('varnish'), glance: mine / of('glance') };
    const verdict = row.goal ? row.goal.check(mine, vs) : undefined;
    if (row.counts && verdict) {
      verdicts.set(row.counts, [...(verdicts.get(row.counts) ?? []), { name: row.name, verdict }]);
    }
    log(
      `| ${row.name} | ${values.map((v) => cell(v, row.digits)).join(' | ')} | ${cell(vs.nginx, 2)} | ${cell(vs.varnish, 2)} | ` +
        `${cell(vs.glance, 2)} | ` +
        `${row.goal?.text ?? '—'} | ${verdict ?? 'info'} |`,
    );
  }
  for (const [system, why] of Object.entries(input.missing)) log(`\n${HEADERS[system as SystemName]}: n/a (${why})`);
  if (input.turns.glance.length) {
    log(`\n${HEADERS.glance}: its ${input.misses} concurrent misses are not run: Glance does not coalesce (each would be an origin GET)`);
  }

  if (FLOORS.some((f) => input.turns[f].length)) floors(input);

  log('\n| limit (same run, same file) | MiB/s |\n|---|---:|');
  const names = Object.keys(input.limits[0] ?? {}) as Array<keyof Limits>;
  for (const name of names) {
    const label = name.replace('N clients', `${input.clients} clients`);
    log(`| ${label} | ${median(input.limits.map((l) => l[name])).toFixed(0)} |`);
  }

  log('');
  const goals: Record<number, string> = {
    1: `hits ≥ 1.0× nginx and ≥ 1.0× Glance 25.1 at 1 and ${input.clients} clients, server CPU/GiB ≤ 1.5× nginx`,
    2: 'cold miss ≥ 0.9× nginx proxy_cache and ≥ 1.0× Glance 25.1',
    3:
      `${input.misses} cold misses: total ≤ 1.0× nginx and ≤ 1.2× Varnish (fast origin), ≤ 1.05× Varnish ` +
      '(180 MiB/s), every first byte ≤ 50 ms, one origin GET',
    4: 'peak RSS < 150 MiB in every phase (summed over the processes, and with each page counted once)',
  };
  for (const [n, text] of Object.entries(goals)) {
    const of = verdicts.get(Number(n)) ?? [];
    const verdict = combine(of.map((v) => v.verdict));
    const misses = of.filter((v) => v.verdict !== 'PASS').map((v) => `${v.name}: ${v.verdict}`);
    log(`goal ${n}: ${verdict} — ${text}${misses.length ? ` [${misses.join('; ')}]` : ''}`);
  }

  log('');
  for (const system of ALL_SYSTEMS) {
    const turns = input.turns[system];
    if (!turns.length) continue;
    const phases = new Map<string, number>();
    for (const turn of turns) {
      for (const [name, peak] of turn.peaks) phases.set(name, Math.max(phases.get(name) ?? 0, peak.rss));
    }
    const shown = [...phases].map(([name, rss]) => `${name} ${(rss / MIB).toFixed(0)}`).join(', ');
    const statuses = turns.map((t) => (t.fast && t.slow ? `${t.fast.statuses} / ${t.slow.statuses}` : 'not run')).join('; ');
    log(`${system}: peak RSS MiB per phase: ${shown}; ${input.misses} misses' statuses per run (fast / slow): ${statuses}`);
  }
}

/**
 * The table that says whether a goal of issue 11 is reachable on this machine by a cache that verifies: each
 * cold row's goal is a ratio to a peer that does not hash; the same peer with the SHA-512 beside it shows what
 * that ratio is when only the hashing is added (its own ratio to the peer), and imgcache's ratio to it shows
 * what is imgcache's own.
 */
function floors(input: ReportInput): void {
  const mib = input.size / MIB;
  const med = (system: SystemName, f: (t: Turn) => number | undefined) => {
    const values = input.turns[system].map(f).filter((v): v is number => v !== undefined);
    return values.length ? median(values) : NaN;
  };
  const rows: Array<{ name: string; f: (t: Turn) => number | undefined; peer: 'nginx' | 'varnish'; goal: number; higher: boolean; digits: number }> = [
    { name: 'cold miss, 1 client, MiB/s', f: (t) => mib / t.miss1.s, peer: 'nginx', goal: 0.9, higher: true, digits: 0 },
    { name: `${input.misses} cold misses, fast origin, total s`, f: (t) => t.fast?.s, peer: 'nginx', goal: 1, higher: false, digits: 2 },
    { name: `${input.misses} cold misses, fast origin, total s`, f: (t) => t.fast?.s, peer: 'varnish', goal: 1.2, higher: false, digits: 2 },
    { name: `${input.misses} cold misses, origin at 180 MiB/s, total s`, f: (t) => t.slow?.s, peer: 'varnish', goal: 1.05, higher: false, digits: 2 },
  ];
  log('\nVerifying floors: each peer again, with `openssl dgst -sha512` of the image run beside every cold row (released');
  log('with the clients; the row ends when both have). "peer + SHA-512 / peer" is the goal\'s ratio for a peer that');
  log('added only the hashing imgcache must do; where it misses the goal, the goal is out of reach for any verifying');
  log('cache on this machine.\n');
  log('| row | imgcache | peer | peer + SHA-512 | goal (imgcache / peer) | imgcache / peer | (peer + SHA-512) / peer | imgcache / (peer + SHA-512) |');
  log('|---|---:|---:|---:|---|---:|---:|---:|');
  for (const row of rows) {
    const mine = med('imgcache', row.f);
    const peer = med(row.peer, row.f);
    const floor = med(`${row.peer}+sha512`, row.f);
    const name = row.peer === 'nginx' ? 'nginx' : 'Varnish';
    log(
      `| ${row.name} (${name}) | ${cell(mine, row.digits)} | ${cell(peer, row.digits)} | ${cell(floor, row.digits)} | ` +
        `${row.higher ? '≥' : '≤'} ${row.goal.toFixed(2)}× | ${cell(mine / peer, 2)} | ${cell(floor / peer, 2)} | ${cell(mine / floor, 2)} |`,
    );
  }
}
