/**
 * What /proc tells about the systems under test: their process trees, CPU seconds and resident memory. Every
 * reader tolerates a process that exits while it looks (a worker replaced, a short-lived helper).
 */
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, readSync, writeFileSync } from 'node:fs';

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

/** Direct children of `parent`: /proc/PID/task/TID/children where the kernel has it, else a scan of ppids. */
export function childrenOf(parent: number): number[] {
  try {
    const pids: number[] = [];
    for (const tid of readdirSync(`/proc/${parent}/task`)) {
      const text = readFileSync(`/proc/${parent}/task/${tid}/children`, 'utf8').trim();
      if (text) pids.push(...text.split(' ').map(Number));
    }
    return pids;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
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

/** `root` and all its descendants that are alive now. */
export function processTree(root: number): number[] {
  const pids = [root];
  for (let i = 0; i < pids.length; i++) {
    try {
      pids.push(...childrenOf(pids[i]!));
    } catch {
      // exited while we looked
    }
  }
  return pids;
}

/** CPU seconds (every thread) per process; a process that is gone is left out. */
export function cpuByPid(pids: number[]): Map<number, number> {
  const cpu = new Map<number, number>();
  for (const pid of pids) {
    try {
      cpu.set(pid, statCpu(`/proc/${pid}/stat`));
    } catch {
      // gone
    }
  }
  return cpu;
}

/** CPU seconds used between two readings: a process that appeared meanwhile counts from zero. */
export function cpuSince(before: Map<number, number>, after: Map<number, number>): number {
  let sum = 0;
  for (const [pid, s] of after) sum += s - (before.get(pid) ?? 0);
  return sum;
}

/** CPU seconds of this process's children that have ended and been waited for (cutime + cstime): the curls. */
export function endedChildrenCpu(): number {
  const fields = statFields('/proc/self/stat');
  return (Number(fields[13]) + Number(fields[14])) / TICKS;
}

/** CPU seconds of a process's main thread and of all its other threads (GC helpers, libuv pool, workers). */
export function cpuByThread(pid: number): { main: number; others: number } {
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

/** User and system CPU seconds of one group of threads. */
export interface UserSystem {
  user: number;
  system: number;
}
/** CPU per thread name (`main` for each process's main thread), summed over processes. */
export type ThreadCpu = Map<string, UserSystem>;

/**
 * CPU seconds by thread name (comm) over `pids`, or the change since `before`: whether a miss's time went to the
 * main thread, the hash threads, the fs pool or GC. Node names all its other threads `node`; `byThread` tells
 * them apart by their id's offset from the process's (V8's platform threads come first, then libuv's pool, then
 * worker threads such as the hash threads).
 */
export function cpuByThreadName(pids: number[], before?: ThreadCpu, byThread = false): ThreadCpu {
  const out: ThreadCpu = new Map();
  for (const pid of pids) {
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue; // gone
    }
    for (const tid of tids) {
      try {
        const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
        const name = Number(tid) === pid ? 'main' : byThread ? `${comm}+${Number(tid) - pid}` : comm;
        const fields = statFields(`/proc/${pid}/task/${tid}/stat`);
        const sum = out.get(name) ?? { user: 0, system: 0 };
        sum.user += Number(fields[11]) / TICKS;
        sum.system += Number(fields[12]) / TICKS;
        out.set(name, sum);
      } catch {
        // a thread that ended while we looked
      }
    }
  }
  if (before) {
    for (const [name, sum] of out) {
      const was = before.get(name);
      if (was) out.set(name, { user: sum.user - was.user, system: sum.system - was.system });
    }
  }
  return out;
}

type VmField = 'VmHWM' | 'VmRSS' | 'RssAnon';

/** `Vm...:  N kB` lines of /proc/PID/status, in bytes; all 0 for a process that is gone. */
function vm(pid: number): Record<VmField, number> {
  const out: Record<VmField, number> = { VmHWM: 0, VmRSS: 0, RssAnon: 0 };
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return out;
  }
  for (const name of Object.keys(out) as VmField[]) {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text);
    if (match) out[name] = Number(match[1]) * 1024;
  }
  return out;
}

/** The RSS of `pids` summed, now. */
export function rssNow(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + vm(pid).VmRSS, 0);
}

/**
 * The processes' proportional set size (smaps_rollup's Pss), summed: a page shared by k of them counts 1/k in
 * each, so the sum is what the group costs the machine. Summed RSS counts a shared page once per process: the
 * ~45 MiB of Node's own binary that every imgcache process maps, every worker again.
 */
function pssNow(pids: number[]): number {
  let sum = 0;
  for (const pid of pids) {
    try {
      const match = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
      if (match) sum += Number(match[1]) * 1024;
    } catch {
      // gone
    }
  }
  return sum;
}

/**
 * The processes' resident memory with every physical page counted once, however many of them map it: what RSS
 * would say if they were one process (as threads of one are). Read from /proc/PID/pagemap (the page frames need
 * root: elsewhere, and for a process that is gone, nothing is counted), for every mapping that is not reserved
 * address space only. Summed RSS counts the ~40 MiB of Node's binary that every imgcache process maps once per
 * process; PSS splits it with any other process that maps it (the bench's own node), so it reads low.
 */
function residentOnceNow(pids: number[]): number {
  let frames = new Uint8Array(1 << 21); // a bit per page frame: 64 GiB of them, grown when a frame is above
  let count = 0;
  for (const pid of pids) {
    let maps: string;
    let fd: number;
    try {
      maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
      fd = openSync(`/proc/${pid}/pagemap`, 'r');
    } catch {
      continue;
    }
    try {
      for (const mapping of maps.matchAll(/^([0-9a-f]+)-([0-9a-f]+) (\S+)/gm)) {
        const [start, end] = [parseInt(mapping[1]!, 16), parseInt(mapping[2]!, 16)];
        // Reserved address space (nothing can be resident), and the vsyscall page above any file position.
        if (mapping[3]!.startsWith('---') || end > 2 ** 47) continue;
        const pages = (end - start) / PAGE;
        if (pagemapWords.length < pages * 2) pagemapWords = new Uint32Array(pages * 2);
        const read = readSync(fd, pagemapWords, 0, pages * 8, start / PAGE * 8) / 4;
        for (let at = 0; at + 2 <= read; at += 2) {
          const high = pagemapWords[at + 1]!; // little-endian: the entry's upper half
          // Bit 63: present; bits 0-54: the page frame number (0 without CAP_SYS_ADMIN).
          if (!(high & 0x80000000)) continue;
          const frame = (high & 0x7fffff) * 2 ** 32 + pagemapWords[at]!;
          const byte = Math.floor(frame / 8);
          if (byte >= frames.length) {
            const grown = new Uint8Array(2 ** Math.ceil(Math.log2(byte + 1)));
            grown.set(frames);
            frames = grown;
          }
          const bit = 1 << (frame % 8);
          if (frame > 0 && !(frames[byte]! & bit)) {
            frames[byte]! |= bit;
            count += 1;
          }
        }
      }
    } catch {
      // the process went away while it was read
    } finally {
      closeSync(fd);
    }
  }
  return count * PAGE;
}

const PAGE = 4096;
/** One buffer for every read of pagemap (8 bytes, two words, per page), grown to the largest mapping read. */
let pagemapWords = new Uint32Array(0);

/** Peaks of one phase: the summed VmHWM of the processes, and the largest summed RSS, anonymous RSS and PSS seen. */
export interface Peak {
  /** Sum of VmHWM (each process's own peak since the phase began) or of sampled RSS, whichever is larger. */
  rss: number;
  /** Largest sampled sum of RssAnon: without the file pages a cache that maps its storage (Varnish) shows. */
  anon: number;
  /** Largest sampled sum of PSS ({@link pssNow}), sampled every 250 ms (it walks the page tables). */
  pss: number;
  /** Largest sampled resident memory with each page counted once ({@link residentOnceNow}), every 500 ms; 0 if not root. */
  once: number;
}

/**
 * Runs `task` and returns its value with the peak memory of the process tree(s) `pids()` names while it ran.
 * Writing 5 to clear_refs resets VmHWM (proc(5), Linux 4.0+); where that is refused, VmHWM is the lifetime peak.
 * A 50 ms sampler adds processes that start during the phase and RssAnon, which has no kernel high-water mark;
 * every fifth sample reads PSS too, every tenth the pages counted once.
 */
export async function withPeak<T>(pids: () => number[], task: () => Promise<T>): Promise<{ value: T; peak: Peak }> {
  for (const pid of pids()) {
    try {
      writeFileSync(`/proc/${pid}/clear_refs`, '5');
    } catch {
      // the lifetime peak it is
    }
  }
  const peak: Peak = { rss: 0, anon: 0, pss: 0, once: 0 };
  let samples = 0;
  const sample = () => {
    const group = pids();
    const now = group.map(vm);
    peak.rss = Math.max(peak.rss, now.reduce((sum, v) => sum + v.VmRSS, 0));
    peak.anon = Math.max(peak.anon, now.reduce((sum, v) => sum + v.RssAnon, 0));
    if (samples % 5 === 0) peak.pss = Math.max(peak.pss, pssNow(group));
    if (samples % 10 === 0) peak.once = Math.max(peak.once, residentOnceNow(group)); // ~3 ms per process
    samples += 1;
  };
  sample();
  const timer = setInterval(sample, 50);
  try {
    const value = await task();
    sample();
    peak.rss = Math.max(peak.rss, pids().reduce((sum, pid) => sum + vm(pid).VmHWM, 0));
    return { value, peak };
  } finally {
    clearInterval(timer);
  }
}
