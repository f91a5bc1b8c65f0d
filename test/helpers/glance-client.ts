import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * Why the tests that drive the real python-glanceclient must skip, or null when the `glance` command runs
 * (Debian's `python3-glanceclient`, which `.ci/run` installs).
 */
export async function glanceClientMissing(): Promise<string | null> {
  try {
    await run('glance', ['--version'], { timeout: 30_000 });
    return null;
  } catch {
    return 'python-glanceclient (the glance command) is not installed: apt-get install python3-glanceclient';
  }
}
