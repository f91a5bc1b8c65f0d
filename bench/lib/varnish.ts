/**
 * The Varnish peer: a private varnishd in the foreground (-F, so the PID is ours), its own -n work dir, file
 * storage in the temp dir, transient storage capped (a 1 GiB object being streamed must not land in RAM),
 * streaming delivery (beresp.do_stream) so waiting clients get bytes while the fetch runs.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RunningServer } from './nginx.js';
import { processTree } from './proc.js';
import { whenServing } from './server-child.js';

function vcl(originPort: number): string {
  return `vcl 4.1;

backend origin {
  .host = "127.0.0.1";
  .port = "${originPort}";
  .first_byte_timeout = 300s;
  .between_bytes_timeout = 120s;
}

sub vcl_recv {
  set req.url = "/img" + req.url;
  return (hash);
}

sub vcl_backend_response {
  set beresp.do_stream = true;
  set beresp.ttl = 1h;
  set beresp.grace = 0s;
  return (deliver);
}

sub vcl_deliver {
  if (obj.hits > 0) {
    set resp.http.X-Cache-Status = "HIT";
  } else {
    set resp.http.X-Cache-Status = "MISS";
  }
}
`;
}

/**
 * Starts varnishd on `port` in `prefix` with `storageBytes` of file storage. Its processes, for CPU and RSS, are
 * the manager's children (the cache process does the work; the manager only supervises it).
 */
export async function startVarnish(
  binary: string,
  prefix: string,
  port: number,
  originPort: number,
  storageBytes: number,
): Promise<RunningServer> {
  await mkdir(join(prefix, 'work'), { recursive: true });
  const vclFile = join(prefix, 'bench.vcl');
  await writeFile(vclFile, vcl(originPort));
  const args = [
    '-F',
    '-n', join(prefix, 'work'),
    '-a', `127.0.0.1:${port}`,
    '-T', 'none',
    '-f', vclFile,
    '-s', `s0=file,${join(prefix, 'storage.bin')},${Math.ceil(storageBytes / (1 << 20))}M`,
    '-s', 'Transient=malloc,64M',
    ...(process.getuid?.() === 0 ? ['-j', 'none'] : []),
  ];
  const child: ChildProcess = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const server = await whenServing(child, 'varnishd', `http://127.0.0.1:${port}/`, 10_000);
  // The manager only supervises: its child, the cache process, does the work.
  return { port, prefix, pids: () => processTree(server.pid).filter((p) => p !== server.pid), stop: server.stop };
}
