import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** `imgcache-owner-<pid>-XXXXXX` under the temp dir: the owner's private socket directory. */
const PREFIX = 'imgcache-owner-';
const NAME = /^imgcache-owner-(\d+)-/;

/**
 * A fresh private directory (`mkdtemp`: 0700, only this user can reach the socket in it) for the owner's socket,
 * under the system's temp dir: the path stays short (Unix sockets allow ~100 bytes) and nothing is added to the
 * cache dir. An owner that was killed (SIGKILL, a crash) could not remove its directory: the directories of
 * owners whose process is gone are removed here first, so they never pile up (best effort: another user's stay).
 */
export async function ownerSocketDir(): Promise<string> {
  const base = tmpdir();
  const entries = await readdir(base).catch(() => [] as string[]);
  await Promise.all(
    entries
      .filter((name) => {
        const pid = Number(NAME.exec(name)?.[1]);
        return Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && !isRunning(pid);
      })
      .map((name) => rm(join(base, name), { recursive: true, force: true }).catch(() => {})),
  );
  return mkdtemp(join(base, `${PREFIX}${process.pid}-`));
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'; // another user's process: alive
  }
}
