/**
 * Starting and stopping the bench's private servers, and installing the Debian packages they come from. Every
 * server is a child of this process, stopped by its PID: nothing of the bench outlives it.
 */
import { type ChildProcess, spawnSync } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';

export const log = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => done(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** Waits for a line matching `pattern` on the child's stdout or stderr; rejects if it exits first. */
export function waitForLine(child: ChildProcess, pattern: RegExp, what: string): Promise<RegExpExecArray> {
  return new Promise((done, fail) => {
    let out = '';
    const seen = (chunk: Buffer) => {
      out += chunk.toString();
      if (out.length > 20_000) out = out.slice(-10_000);
      const match = pattern.exec(out);
      if (match) done(match);
    };
    child.stdout?.on('data', seen);
    child.stderr?.on('data', seen);
    child.once('exit', (code, signal) => fail(new Error(`${what} exited (${code ?? signal}) before it was ready:\n${out}`)));
  });
}

/** `signal` (graceful: a CPU profile gets written), SIGKILL if it is still running after `graceMs`. */
export async function stop(child: ChildProcess | undefined, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

const POLICY_RC_D = '/usr/sbin/policy-rc.d';
let aptUpdated = false;

/**
 * The path of the first of `binaries` that exists, installing Debian package `pkg` when none does (root only).
 * Debian starts a package's service on install; a policy-rc.d that answers 101 ("action forbidden") keeps
 * nginx's and Varnish's from ever starting. One already there (as in Docker images) is left alone; the bench's
 * own is removed afterwards, and any of `services` the install started anyway is stopped. Returns no path, with
 * the reason, when the package cannot be had.
 */
export function ensurePackage(pkg: string, binaries: string[], services: string[]): { path?: string; why?: string } {
  const found = () => binaries.find((path) => existsSync(path));
  const present = found();
  if (present) return { path: present };
  if (process.getuid?.() !== 0) return { why: `${pkg} is missing: run \`apt-get install -y ${pkg}\` as root` };
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive', RUNLEVEL: '1' };
  const ownPolicy = !existsSync(POLICY_RC_D);
  const policy = '#!/bin/sh\n# written by imgcache bench/http.ts during apt-get install\nexit 101\n';
  if (ownPolicy) writeFileSync(POLICY_RC_D, policy, { mode: 0o755 });
  try {
    log(`${pkg} is missing: apt-get install -y ${pkg}`);
    // Quietly: apt's output is shown only when the install fails.
    const apt = (args: string[]) => spawnSync('apt-get', args, { stdio: ['ignore', 'pipe', 'pipe'], env, encoding: 'utf8' });
    const install = () => apt(['install', '-y', '-qq', '--no-install-recommends', pkg]);
    let got = install();
    if (got.status !== 0 && !aptUpdated) {
      aptUpdated = true;
      apt(['update', '-qq']);
      got = install();
    }
    if (got.status !== 0) {
      process.stderr.write(`${got.stdout}${got.stderr}`);
      return { why: `apt-get install -y ${pkg} failed` };
    }
  } finally {
    if (ownPolicy) rmSync(POLICY_RC_D, { force: true });
  }
  // A policy-rc.d that was already there may have let a service start: stop what this install started.
  for (const service of services) {
    if (spawnSync('service', [service, 'status'], { stdio: 'ignore', env }).status === 0) {
      log(`stopping the ${service} service that apt-get install ${pkg} started`);
      spawnSync('service', [service, 'stop'], { stdio: 'ignore', env });
    }
  }
  const path = found();
  return path ? { path } : { why: `${pkg} installed, but none of ${binaries.join(', ')} exists` };
}

/** First line of a command's output (stdout, else stderr), for the versions line. */
export function versionOf(command: string, args: string[]): string {
  const got = spawnSync(command, args, { encoding: 'utf8' });
  return `${got.stdout ?? ''}${got.stderr ?? ''}`.trim().split('\n')[0] ?? '?';
}
