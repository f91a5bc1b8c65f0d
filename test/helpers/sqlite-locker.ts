import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import type { TestContext } from 'node:test';

/** Runs in the child: takes the write lock with BEGIN IMMEDIATE, says so, commits when stdin sends a line. */
const LOCKER = `
const Database = require(process.argv[1]);
const db = new Database(process.argv[2]);
db.exec('BEGIN IMMEDIATE');
process.stdout.write('locked\\n');
process.stdin.once('data', () => {
  db.exec('COMMIT');
  db.close();
  process.stdout.write('released\\n');
  process.stdin.destroy();
});
`;

/** Another process holding the write lock of a sqlite file, as an `imgcache` CLI or a Glance tool in a transaction. */
export interface SqliteLocker {
  /** Commits the transaction and resolves once the child has let go of the file and exited. */
  release(): Promise<void>;
}

/**
 * Starts a child process (real better-sqlite3, its own connection) that holds `BEGIN IMMEDIATE` on `dbPath` until
 * {@link SqliteLocker.release}. Resolves once the lock is held. The child is SIGKILLed if the test ends first.
 */
export async function lockSqliteFile(t: TestContext, dbPath: string): Promise<SqliteLocker> {
  const addon = createRequire(import.meta.url).resolve('better-sqlite3');
  const child = spawn(process.execPath, ['-e', LOCKER, addon, dbPath], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const lines = createInterface({ input: child.stdout });
  const said = (word: string) =>
    new Promise<void>((resolve, reject) => {
      const onLine = (line: string) => {
        if (line !== word) return;
        lines.off('line', onLine);
        resolve();
      };
      lines.on('line', onLine);
      child.once('exit', (code) => reject(new Error(`the sqlite locker exited (${code}) before saying ${word}`)));
    });
  await said('locked');
  return {
    async release() {
      const exited = child.exitCode === null && child.signalCode === null ? once(child, 'exit') : Promise.resolve();
      const released = said('released');
      child.stdin.write('commit\n');
      await released;
      await exited;
    },
  };
}
