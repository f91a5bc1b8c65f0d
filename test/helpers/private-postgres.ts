import { execFile, execFileSync } from 'node:child_process';
import { chown, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';

const run = promisify(execFile);

/** Where Debian/Ubuntu install the server binaries (`/usr/lib/postgresql/<major>/bin`), newest major first. */
export async function findPostgresBinDir(): Promise<string | null> {
  const root = '/usr/lib/postgresql';
  let majors: string[];
  try {
    majors = await readdir(root);
  } catch {
    return null;
  }
  majors.sort((a, b) => Number(b) - Number(a));
  for (const major of majors) {
    const bin = join(root, major, 'bin');
    const names = await readdir(bin).catch(() => [] as string[]);
    if (names.includes('initdb') && names.includes('pg_ctl') && names.includes('postgres')) return bin;
  }
  return null;
}

/** A free TCP port on 127.0.0.1 (bound, then released for the server to take). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  return address.port;
}

/** `uid:gid` of the `postgres` user, or null when there is none. */
function postgresUser(): { uid: number; gid: number } | null {
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return Number.isInteger(uid) && Number.isInteger(gid) ? { uid, gid } : null;
  } catch {
    return null;
  }
}

/**
 * A PostgreSQL server of the test's own: `initdb` in a fresh temp dir, `pg_ctl` on a random port of 127.0.0.1,
 * trust auth, a database `test`, no fsync (a test's data need not survive a power cut; a `kill -9` of the
 * server it does survive, from the OS page cache). Its binaries refuse to run as root, so as root they run as
 * the `postgres` user (`runuser -u postgres --`), which owns the temp dir. A fault test stops it (`stop()`, an
 * immediate shutdown: like a crash, no goodbye to the clients) and starts it again on the same port and data.
 */
export class PrivatePostgres {
  readonly port: number;
  readonly dir: string;
  readonly #bin: string;
  readonly #asPostgres: boolean;
  #running = false;
  readonly #onExit = () => this.#stopSync();

  private constructor(bin: string, dir: string, port: number, asPostgres: boolean) {
    this.#bin = bin;
    this.dir = dir;
    this.port = port;
    this.#asPostgres = asPostgres;
  }

  /** `postgresql://postgres@127.0.0.1:<port>/test`. */
  get url(): string {
    return `postgresql://postgres@127.0.0.1:${this.port}/test`;
  }

  get dataDir(): string {
    return join(this.dir, 'data');
  }

  /** Why a private server cannot be started here, or null when it can. */
  static async unavailable(): Promise<string | null> {
    if (!(await findPostgresBinDir())) return 'no PostgreSQL server binaries in /usr/lib/postgresql/*/bin';
    if (process.getuid?.() === 0 && !postgresUser()) return 'running as root and there is no postgres user to run initdb as';
    return null;
  }

  /** Creates, starts and fills in (database `test`) a new server. Call {@link destroy} when done. */
  static async create(): Promise<PrivatePostgres> {
    const bin = await findPostgresBinDir();
    if (!bin) throw new Error('no PostgreSQL server binaries in /usr/lib/postgresql/*/bin');
    const asPostgres = process.getuid?.() === 0;
    const dir = await mkdtemp(join(tmpdir(), 'imgcache-pg-'));
    const server = new PrivatePostgres(bin, dir, await freePort(), asPostgres);
    process.once('exit', server.#onExit);
    try {
      if (asPostgres) {
        const user = postgresUser();
        if (!user) throw new Error('no postgres user to run initdb as');
        await chown(dir, user.uid, user.gid);
      }
      await server.#exec('initdb', ['-D', server.dataDir, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8']);
      await server.start();
      const admin = new pg.Client({ connectionString: server.url.replace(/\/test$/, '/postgres') });
      await admin.connect();
      try {
        await admin.query('CREATE DATABASE test');
      } finally {
        await admin.end();
      }
    } catch (error) {
      await server.destroy();
      throw error;
    }
    return server;
  }

  /** Starts the server (again) on its port and data dir; resolves when it accepts connections. */
  async start(): Promise<void> {
    const options = `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off`;
    await this.#exec('pg_ctl', ['-D', this.dataDir, '-l', join(this.dir, 'server.log'), '-o', options, '-w', '-t', '30', 'start']);
    this.#running = true;
  }

  /** Stops the server at once (`-m immediate`: open connections are cut, as in a crash). */
  async stop(): Promise<void> {
    await this.#exec('pg_ctl', ['-D', this.dataDir, '-m', 'immediate', '-w', '-t', '30', 'stop']);
    this.#running = false;
  }

  /** The server's log so far (for a failing test's message). */
  async log(): Promise<string> {
    return readFile(join(this.dir, 'server.log'), 'utf8').catch(() => '');
  }

  /** Stops the server if it runs and removes its directory. */
  async destroy(): Promise<void> {
    process.removeListener('exit', this.#onExit);
    if (this.#running) await this.stop().catch(() => {});
    await rm(this.dir, { recursive: true, force: true });
  }

  /** The exit-time safety net: a test process that ends without destroy() never leaves a server behind. */
  #stopSync(): void {
    try {
      if (this.#running) execFileSync(...this.#command('pg_ctl', ['-D', this.dataDir, '-m', 'immediate', '-w', 'stop']), { stdio: 'ignore' });
    } catch {
      // Already gone.
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  #command(tool: string, args: string[]): [string, string[]] {
    const path = join(this.#bin, tool);
    return this.#asPostgres ? ['runuser', ['-u', 'postgres', '--', path, ...args]] : [path, args];
  }

  async #exec(tool: string, args: string[]): Promise<void> {
    const [file, argv] = this.#command(tool, args);
    try {
      await run(file, argv, { cwd: this.dir, timeout: 60_000 });
    } catch (error) {
      const { stderr = '', stdout = '' } = error as { stderr?: string; stdout?: string };
      throw new Error(`${tool} failed: ${stderr || stdout || String(error)}\n${await this.log()}`, { cause: error });
    }
  }
}
