import { setTimeout as sleep } from 'node:timers/promises';

/** Waits until `condition` holds, polling every `pollMs`; fails with `what` after `timeoutMs` (tests stay bounded). */
export async function until(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
  pollMs = 5,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(pollMs);
  }
}
