/**
 * The load generator: one curl process per client (the same client for every system, out of this process, so
 * the bench's own JavaScript costs no system anything but a core share), body written to /dev/null.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';

/** One download as curl saw it. */
export interface Got {
  status: number;
  bytes: number;
  /** Seconds from the start of the request to its first body byte (curl's time_starttransfer). */
  firstByte: number;
  /** Seconds for the whole request. */
  total: number;
  /** The X-Cache-Status header (imgcache: HIT, MISS, …), '' when absent. */
  cache: string;
}

const FORMAT = '%{http_code} %{size_download} %{time_starttransfer} %{time_total} %header{x-cache-status}\\n';

/**
 * Time for started curls to be ready (loaded, reading their config from stdin) before their URL is released:
 * starting 16 processes takes this machine 100-150 ms, during which the clients' own start-up shared the cores
 * with the server, and the first client's first byte measured its followers' process creation.
 */
const READY_MS = 250;

/** A curl process that sends its GET once {@link Pending.go} gives it the URL. */
interface Pending {
  go: () => void;
  got: Promise<Got>;
  child: ChildProcess;
}

/** Starts curl, which waits for its URL on stdin (`-K -`); resolves when it runs. */
async function startCurl(url: string, size: number): Promise<Pending> {
  const child = spawn('curl', ['-sS', '--max-time', '900', '-o', '/dev/null', '-w', FORMAT, '-K', '-'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const got = new Promise<Got>((done, fail) => {
    child.once('error', fail);
    child.once('close', (code, signal) => {
      const [status, bytes, firstByte, total, cache = ''] = out.trim().split(' ');
      const answer: Got = {
        status: Number(status),
        bytes: Number(bytes),
        firstByte: Number(firstByte),
        total: Number(total),
        cache: cache.trim(),
      };
      if (code !== 0) fail(new Error(`curl ${url}: exit ${code ?? signal}: ${err.trim()}`));
      else if (answer.status !== 200 || answer.bytes !== size) {
        fail(new Error(`GET ${url}: status ${answer.status}, ${answer.bytes} bytes, expected 200 and ${size}`));
      } else done(answer);
    });
  });
  got.catch(() => {}); // observed by the caller once released; a curl that fails to start rejects `once` below
  await once(child, 'spawn');
  // curl's config syntax: a quoted string with backslash escapes.
  return { go: () => child.stdin!.end(`url = "${url.replace(/[\\"]/g, '\\$&')}"\n`), got, child };
}

/** One GET with curl; rejects when curl fails or the answer is not 200 with exactly `size` bytes. */
export async function curl(url: string, size: number): Promise<Got> {
  const pending = await startCurl(url, size);
  pending.go();
  return pending.got;
}

/**
 * `n` concurrent downloads of `url`, released together once every curl is ready ({@link READY_MS}); `s` is the
 * wall time from the release to the last end. `onRelease` is called at the release.
 */
export async function parallel(
  url: string,
  n: number,
  size: number,
  onRelease?: () => void,
): Promise<{ s: number; got: Got[] }> {
  const started = await Promise.allSettled(Array.from({ length: n }, () => startCurl(url, size)));
  const pending = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) {
    for (const client of pending) client.child.kill('SIGKILL'); // ours, waiting on stdin for a URL
    throw failed.reason;
  }
  await new Promise((done) => setTimeout(done, n > 1 ? READY_MS : 0));
  const t0 = performance.now();
  onRelease?.();
  for (const client of pending) client.go();
  const got = await Promise.all(pending.map((client) => client.got));
  return { s: (performance.now() - t0) / 1000, got };
}

/** A small request answered in full (admin calls, /metrics, readiness probes); throws on a network error. */
export async function small(url: string, method = 'GET'): Promise<{ status: number; body: string }> {
  const response = await fetch(url, { method, signal: AbortSignal.timeout(60_000) });
  return { status: response.status, body: await response.text() };
}

/** Polls `url` until it answers at all (any status); throws after about `timeoutMs`. */
export async function waitForHttp(url: string, what: string, timeoutMs = 10_000): Promise<void> {
  for (let i = 0; i < timeoutMs / 100; i++) {
    try {
      await small(url, 'HEAD');
      return;
    } catch {
      await new Promise((done) => setTimeout(done, 100));
    }
  }
  throw new Error(`${what} did not answer ${url}`);
}
