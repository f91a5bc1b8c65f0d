/** The hot spots of imgcache's CPU profiles (`--cpu-prof DIR`): main-thread self time per function. */
import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { log } from './spawn.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

/**
 * Self time per function over the `.cpuprofile` files in `dir` that are not in `before` (one per serve process
 * the run started: imgcache is restarted for every repetition), top 25. `root` is stripped from file URLs.
 */
export async function summarizeProfiles(dir: string, before: Set<string>, root: string): Promise<void> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile') && !before.has(f)).sort();
  if (!files.length) return log(`no new .cpuprofile in ${dir} (did the server exit gracefully?)`);
  const self = new Map<string, number>();
  let total = 0;
  for (const file of files) {
    const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as {
      nodes: ProfileNode[];
      samples: number[];
      timeDeltas: number[];
    };
    const byId = new Map(profile.nodes.map((node) => [node.id, node]));
    profile.samples.forEach((id, i) => {
      const frame = byId.get(id)?.callFrame;
      const where = frame?.url ? ` ${frame.url.replace(`file://${root}`, '')}:${frame.lineNumber + 1}` : '';
      const key = `${frame?.functionName || '(anonymous)'}${where}`;
      const dt = profile.timeDeltas[i] ?? 0;
      self.set(key, (self.get(key) ?? 0) + dt);
      total += dt;
    });
  }
  // Samples are wall-clock time of the main thread: on a loaded machine, preemption inflates whatever was running.
  log(`\nimgcache CPU profiles (${files.length} in ${dir}): main-thread self time, top 25 of ${(total / 1e6).toFixed(1)} s\n`);
  log('| self ms | % | function |\n|---:|---:|---|');
  for (const [key, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
    log(`| ${(us / 1000).toFixed(0)} | ${((100 * us) / total).toFixed(1)} | \`${key}\` |`);
  }
}
