/**
 * A server the bench starts as its child (nginx, varnishd, glance-api): ready once it answers HTTP, its last
 * output in the error if it exits first, and stopped by PID with whatever of its process tree outlived it.
 */
import type { ChildProcess } from 'node:child_process';
import { waitForHttp } from './curl.js';
import { processTree } from './proc.js';
import { stop } from './spawn.js';

export interface ServerChild {
  pid: number;
  /** SIGTERM, SIGKILL after the grace time, then SIGKILL to any process of its tree still there. */
  stop(): Promise<void>;
}

/**
 * Waits until `readyUrl` answers (any status) within `readyMs`, or rejects with `what`'s last output when the
 * child exits first; a child that does not get ready is stopped before the rejection.
 */
export async function whenServing(
  child: ChildProcess,
  what: string,
  readyUrl: string,
  graceMs: number,
  readyMs = 10_000,
): Promise<ServerChild> {
  let out = '';
  const keep = (chunk: Buffer) => {
    out = (out + chunk.toString()).slice(-10_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const failed = new Promise<never>((_, fail) =>
    child.once('exit', (code, signal) => fail(new Error(`${what} exited (${code ?? signal}):\n${out.trim()}`))),
  );
  failed.catch(() => {}); // only awaited while starting; a later exit shows as failed downloads
  try {
    await Promise.race([waitForHttp(readyUrl, what, readyMs), failed]);
  } catch (error) {
    await stop(child, 'SIGTERM', graceMs); // one that does not answer is still ours to end
    throw error;
  }
  const pid = child.pid!;
  return {
    pid,
    stop: async () => {
      const all = processTree(pid);
      await stop(child, 'SIGTERM', graceMs);
      killLeftovers(all);
    },
  };
}

/** SIGKILL, by PID, any process of a stopped server that is still there (a worker whose master was killed). */
export function killLeftovers(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 0);
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone, as it should be
    }
  }
}
