import { setTimeout as sleep } from 'node:timers/promises';

/** First pause after SQLITE_BUSY; each further one doubles, up to {@link MAX_PAUSE_MS}. */
const FIRST_PAUSE_MS = 10;
const MAX_PAUSE_MS = 250;

/**
 * SQLITE_BUSY and its extended codes (`SQLITE_BUSY_SNAPSHOT`, `SQLITE_BUSY_RECOVERY`, ...): another connection
 * holds the lock. better-sqlite3 puts the code on the error it throws.
 */
export function isBusy(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('SQLITE_BUSY');
}

/**
 * Runs synchronous better-sqlite3 work and, while it fails with SQLITE_BUSY, runs it again after a pause on a
 * timer, so the event loop keeps serving while another process (an `imgcache` CLI on the same directory, a Glance
 * tool) holds the write lock. SQLite's own busy timeout sleeps inside the call instead, stalling every request
 * of the server for as long; here each attempt waits in-thread at most the connection's (short) busy timeout.
 *
 * While one write is waiting out the lock, the other writes queue behind it instead of each trying (and each
 * blocking the thread for a busy timeout): however many hits and commits are pending, the thread is blocked by at
 * most one attempt at a time. Reads do not queue: in WAL mode they do not need the write lock.
 */
export class BusyWaiter {
  readonly #budgetMs: number;
  readonly #giveUp: (waitedMs: number, cause: unknown) => Error;
  /** The pause of the write that last found the database busy; other writes wait for it to end. */
  #pause: Promise<void> | undefined;

  /**
   * @param budgetMs how long one operation may keep retrying, in total, before it fails
   * @param giveUp the error to fail with, from the time waited and the last SQLITE_BUSY
   */
  constructor(budgetMs: number, giveUp: (waitedMs: number, cause: unknown) => Error) {
    this.#budgetMs = budgetMs;
    this.#giveUp = giveUp;
  }

  /**
   * Runs `op` until it does not fail with SQLITE_BUSY, or until the budget would be exceeded. `op` must be safe to
   * repeat: one statement, or a better-sqlite3 transaction (a failed one is rolled back). The first attempt runs
   * synchronously when no other write is waiting, so an uncontended call costs what it did before.
   */
  async run<T>(op: () => T, kind: 'read' | 'write'): Promise<T> {
    const startedAt = Date.now();
    let lastBusy: unknown;
    for (let attempt = 0; ; attempt += 1) {
      // Bounded: every pause waited for is another write's, which ends within its own budget.
      while (kind === 'write' && this.#pause) {
        if (Date.now() - startedAt > this.#budgetMs) throw this.#giveUp(Date.now() - startedAt, lastBusy);
        await this.#pause;
      }
      try {
        return op();
      } catch (error) {
        if (!isBusy(error)) throw error;
        lastBusy = error;
      }
      const pause = Math.min(MAX_PAUSE_MS, FIRST_PAUSE_MS * 2 ** attempt);
      const waited = Date.now() - startedAt;
      if (waited + pause > this.#budgetMs) throw this.#giveUp(waited, lastBusy);
      const timer = sleep(pause);
      if (kind === 'write') this.#pause = timer;
      await timer;
      if (this.#pause === timer) this.#pause = undefined;
    }
  }
}
