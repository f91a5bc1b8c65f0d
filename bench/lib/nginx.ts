/**
 * The bench's nginx instances, each a private prefix in the temp dir on a random 127.0.0.1 port: the origin every
 * system fetches misses from, and the proxy_cache peers.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { processTree } from './proc.js';
import { whenServing } from './server-child.js';

/** 180 MiB/s: the slow origin of the issue's table. */
export const SLOW_ORIGIN_BYTES_PER_S = 180 * (1 << 20);

/** The digests the origin announces, as imgcache's `http:` origin reads them (src/origin/http.ts). */
export interface Digests {
  md5: string;
  sha512: string;
}

/** A running nginx or varnishd: its port, prefix, the processes that count as the system, and its stop. */
export interface RunningServer {
  port: number;
  prefix: string;
  pids(): number[];
  stop(): Promise<void>;
}

const asRoot = process.getuid?.() === 0;
/** As root the workers drop to nobody: whatever they write (proxy cache, temp files) must be theirs. */
const USER = asRoot ? 'user nobody nogroup;\n' : '';

function common(prefix: string, events = 1024): string {
  return `${USER}daemon off;
worker_processes auto;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections ${events}; }
`;
}

const httpCommon = (prefix: string) => `  sendfile on;
  tcp_nopush on;
  keepalive_timeout 300s;
  keepalive_requests 100000;
  default_type application/octet-stream;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
`;

/**
 * The origin: the image files of `dir` at /img/{id} with sendfile, each id's digests (`images`) as headers from
 * a map (the bench links every id to one random file, so the values repeat), every request logged to `access.log` as
 * `$request $status "$http_range" $body_bytes_sent $request_time`. The ids in `slowIds` are sent at 180 MiB/s (limit_rate from
 * a map: one origin URL serves every system, the id picks the speed).
 */
export function originConf(prefix: string, port: number, dir: string, images: Map<string, Digests>, slowIds: string[]): string {
  const map = (variable: string, entries: Array<[string, string | number]>, otherwise: string) =>
    `  map $uri $${variable} {\n    default ${otherwise};\n${entries.map(([id, v]) => `    /img/${id} ${v};\n`).join('')}  }\n`;
  const all = [...images];
  // An empty value sends no header: an id the bench did not make gets no digests.
  return `${common(prefix)}http {
${httpCommon(prefix)}  log_format bench '$request $status "$http_range" $body_bytes_sent $request_time';
  access_log ${prefix}/access.log bench;
${map('bench_rate', slowIds.map((id) => [id, SLOW_ORIGIN_BYTES_PER_S]), '0')}\
${map('bench_md5', all.map(([id, d]) => [id, d.md5]), '""')}\
${map('bench_algo', all.map(([id]) => [id, 'sha512']), '""')}\
${map('bench_sha512', all.map(([id, d]) => [id, d.sha512]), '""')}\
  server {
    listen 127.0.0.1:${port};
    location /img/ {
      alias ${dir}/;
      limit_rate $bench_rate;
      add_header Content-MD5 $bench_md5 always;
      add_header x-image-meta-os_hash_algo $bench_algo always;
      add_header x-image-meta-os_hash_value $bench_sha512 always;
    }
  }
}
`;
}

/**
 * A proxy_cache peer in front of the origin: cache in `prefix/cache` (use_temp_path=off: written in place),
 * `proxy_buffering on`, and `proxy_cache_lock on` with `lock` as its timeout and age (nginx's default is 5 s).
 */
export function proxyConf(prefix: string, port: number, originPort: number, lock: string | undefined, maxSize: number): string {
  const lockLines = lock ? `      proxy_cache_lock_timeout ${lock};\n      proxy_cache_lock_age ${lock};\n` : '';
  return `${common(prefix, 4096)}http {
${httpCommon(prefix)}  access_log off;
  proxy_cache_path ${prefix}/cache levels=1:2 keys_zone=bench:16m max_size=${Math.ceil(maxSize / (1 << 20))}m
                   inactive=1d use_temp_path=off;
  upstream origin { server 127.0.0.1:${originPort}; keepalive 32; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://origin/img/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
      proxy_cache bench;
      proxy_cache_key $uri;
      proxy_cache_valid 200 1h;
      proxy_cache_lock on;
${lockLines}      add_header X-Cache-Status $upstream_cache_status always;
    }
  }
}
`;
}

/** Starts nginx with `conf` in `prefix` (made here) and waits until it answers on `port`. */
export async function startNginx(binary: string, prefix: string, port: number, conf: string): Promise<RunningServer> {
  for (const sub of ['', 'body', 'proxy', 'fastcgi', 'cache']) await mkdir(join(prefix, sub), { recursive: true });
  if (asRoot) for (const sub of ['body', 'proxy', 'fastcgi', 'cache']) await chown(join(prefix, sub), 65534, 65534);
  const file = join(prefix, 'nginx.conf');
  await writeFile(file, conf);
  const child: ChildProcess = spawn(binary, ['-c', file, '-p', prefix, '-e', join(prefix, 'error.log')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const server = await whenServing(child, `nginx (${prefix})`, `http://127.0.0.1:${port}/`, 5_000);
  return { port, prefix, pids: () => processTree(server.pid), stop: server.stop };
}

/** The origin's access log: requests and body bytes per image id. */
export interface OriginCount {
  requests: number;
  gets: number;
  bytes: number;
  /** The longest request, s: shows the slow origin really sent at 180 MiB/s. */
  longest: number;
}

export async function originCounts(prefix: string, id: string): Promise<OriginCount> {
  const count: OriginCount = { requests: 0, gets: 0, bytes: 0, longest: 0 };
  const text = await readFile(join(prefix, 'access.log'), 'utf8');
  for (const line of text.split('\n')) {
    const match = /^(\S+) (\S+) \S+ (\d+) "[^"]*" (\d+) ([\d.]+)$/.exec(line);
    if (!match || match[2] !== `/img/${id}`) continue;
    count.requests++;
    if (match[1] === 'GET') count.gets++;
    count.bytes += Number(match[4]);
    count.longest = Math.max(count.longest, Number(match[5]));
  }
  return count;
}
