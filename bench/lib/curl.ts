/**
 * The load generator: one curl process per client (the same client for every system, out of this process, so
 * the bench's own JavaScript costs no system anything but a core share), body written to /dev/null.
 */
import { spawn } from 'node:child_process';

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

/** One GET with curl; rejects when curl fails or the answer is not 200 with exactly `size` bytes. */
export function curl(url: string, size: number): Promise<Got> {
  return new Promise((done, fail) => {
    const child = spawn('curl', ['-sS', '--max-time', '900', '-o', '/dev/null', '-w', FORMAT, url], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    child.once('error', fail);
    child.once('close', (code, signal) => {
      const [status, bytes, firstByte, total, cache = ''] = out.trim().split(' ');
      const got: Got = {
        status: Number(status),
        bytes: Number(bytes),
        firstByte: Number(firstByte),
        total: Number(total),
        cache: cache.trim(),
      };
      if (code !== 0) fail(new Error(`curl ${url}: exit ${code ?? signal}: ${err.trim()}`));
      else if (got.status !== 200 || got.bytes !== size) {
        fail(new Error(`GET ${url}: status ${got.status}, ${got.bytes} bytes, expected 200 and ${size}`));
      } else done(got);
    });
  });
}

/** `n` concurrent downloads of `url`; `s` is the wall time from the first start to the last end. */
export async function parallel(url: string, n: number, size: number): Promise<{ s: number; got: Got[] }> {
  const t0 = performance.now();
  const got = await Promise.all(Array.from({ length: n }, () => curl(url, size)));
  return { s: (performance.now() - t0) / 1000, got };
}

/** A small request answered in full (admin calls, /metrics, readiness probes); throws on a network error. */
export async function small(url: string, method = 'GET'): Promise<{ status: number; body: string }> {
  const response = await fetch(url, { method, signal: AbortSignal.timeout(60_000) });
  return { status: response.status, body: await response.text() };
}

/** Polls `url` until it answers at all (any status); throws after ~10 s. */
export async function waitForHttp(url: string, what: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      await small(url, 'HEAD');
      return;
    } catch {
      await new Promise((done) => setTimeout(done, 100));
    }
  }
  throw new Error(`${what} did not answer ${url}`);
}
