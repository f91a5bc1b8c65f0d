/**
 * The machine's limits for the same file, measured in the same run as the systems: what reading, writing,
 * hashing and a bare Node server can do here, so the systems' numbers can be read against them.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { parallel } from './curl.js';
import { primeFreePages } from './pages.js';
import { stop, waitForLine } from './spawn.js';

const MIB = 1 << 20;

/** MiB/s of one limit in one repetition. */
export interface Limits {
  'page-cache read (dd bs=1M)': number;
  'disk write + fsync (dd conv=fsync)': number;
  'openssl dgst -md5': number;
  'openssl dgst -sha512': number;
  'Node md5 + sha512, one thread': number;
  'node:http floor, 1 client': number;
  'node:http floor, N clients (total)': number;
}

function timedCommand(command: string, args: string[]): number {
  const t0 = performance.now();
  const got = spawnSync(command, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (got.status !== 0) throw new Error(`${command} ${args.join(' ')}: exit ${got.status}: ${got.stderr}`);
  return (performance.now() - t0) / 1000;
}

/** Seconds to read the file in 1 MiB chunks in this process, hashing it with MD5 and SHA-512 on this thread. */
async function nodeHashTime(file: string, size: number): Promise<number> {
  const hashes = [createHash('md5'), createHash('sha512')];
  const t0 = performance.now();
  let read = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: MIB })) {
    read += (chunk as Buffer).length;
    for (const hash of hashes) hash.update(chunk as Buffer);
  }
  for (const hash of hashes) hash.digest();
  if (read !== size) throw new Error(`read ${read} bytes of ${file}`);
  return (performance.now() - t0) / 1000;
}

/**
 * The floor for any Node server: bare node:http piping the file in 1 MiB chunks, as a child process like the
 * others. What imgcache spends above it is imgcache's; what it spends above nginx is partly Node's (no sendfile).
 */
const FLOOR_SERVER = `
const http = require('node:http');
const { createReadStream, statSync } = require('node:fs');
const { pipeline } = require('node:stream');
const file = process.argv[1];
const size = statSync(file).size;
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
  pipeline(createReadStream(file, { highWaterMark: 1 << 20 }), res, () => {});
});
server.keepAliveTimeout = 300000;
server.listen(0, '127.0.0.1', () => console.log('floor on http://127.0.0.1:' + server.address().port));
process.on('SIGTERM', () => server.close(() => process.exit(0)).closeAllConnections());
`;

/** Measures every limit once on `file` (`size` bytes); `scratch` is a path on the caches' filesystem. */
export async function measureLimits(file: string, size: number, scratch: string, clients: number): Promise<Limits> {
  const mib = size / MIB;
  const read = timedCommand('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M']);
  let write: number;
  try {
    await primeFreePages(dirname(scratch), size); // as before the caches' cold rows
    write = timedCommand('dd', [`if=${file}`, `of=${scratch}`, 'bs=1M', 'conv=fsync']);
  } finally {
    await rm(scratch, { force: true });
  }
  const md5 = timedCommand('openssl', ['dgst', '-md5', file]);
  const sha512 = timedCommand('openssl', ['dgst', '-sha512', file]);
  const hashed = await nodeHashTime(file, size);
  let floor: ChildProcess | undefined;
  try {
    floor = spawn(process.execPath, ['-e', FLOOR_SERVER, file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const [, base] = await waitForLine(floor, /floor on (http:\/\/\S+)/, 'the node:http floor');
    const one = await parallel(`${base}/`, 1, size);
    const many = await parallel(`${base}/`, clients, size);
    return {
      'page-cache read (dd bs=1M)': mib / read,
      'disk write + fsync (dd conv=fsync)': mib / write,
      'openssl dgst -md5': mib / md5,
      'openssl dgst -sha512': mib / sha512,
      'Node md5 + sha512, one thread': mib / hashed,
      'node:http floor, 1 client': mib / one.s,
      'node:http floor, N clients (total)': (clients * mib) / many.s,
    };
  } finally {
    await stop(floor, 'SIGTERM', 5_000);
  }
}
