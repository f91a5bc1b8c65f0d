/**
 * The Glance peer: Debian's Glance 25.1 (package python3-glance, OpenStack Zed) serving `GET /v2/images/{id}/file`
 * through its own image cache, the product imgcache replaces. A private glance-api per turn: its config, paste
 * pipeline, sqlite database and cache dir in the turn's dir, a random 127.0.0.1 port, `workers` = the cores (as
 * imgcache's default), no auth (the unauthenticated-context filter), the `caching` flavor with the sqlite cache
 * driver (Zed's default).
 *
 * The images come from the bench's nginx origin like every other system's: glance_store's `http` store, one
 * location per image (`show_multiple_locations`, and the origin's 127.0.0.1 and port allowed by
 * `[import_filtering_opts]`, which refuses loopback by default). Glance does not hash an image added by location,
 * so the bench writes the image's checksum (MD5), os_hash_algo and os_hash_value into Glance's database, as an
 * upload through Glance would have left them: Glance's cache then verifies the MD5 on every fill (it checks
 * nothing else), as it does in production.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { small } from './curl.js';
import type { Digests, RunningServer } from './nginx.js';
import { processTree } from './proc.js';
import { whenServing } from './server-child.js';

/** Debian's python, which has the python3-glance modules (a python3 first on PATH, such as pyenv's, may not). */
export const GLANCE_PYTHON = '/usr/bin/python3';
/** A file of the python3-glance package: its presence means Glance is installed. */
export const GLANCE_MARKER = '/usr/lib/python3/dist-packages/glance/cmd/api.py';

/** Glance's own paste pipeline for "caching, no auth" (etc/glance-api-paste.ini), without the optional filters. */
const PASTE = `[pipeline:glance-api-caching]
pipeline = versionnegotiation unauthenticated-context cache rootapp

[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app

[app:apiversions]
paste.app_factory = glance.api.versions:create_resource

[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory

[filter:versionnegotiation]
paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory

[filter:cache]
paste.filter_factory = glance.api.middleware.cache:CacheFilter.factory

[filter:unauthenticated-context]
paste.filter_factory = glance.api.middleware.context:UnauthenticatedContextMiddleware.factory
`;

function apiConf(prefix: string, port: number, originPort: number, maxSize: number): string {
  return `[DEFAULT]
bind_host = 127.0.0.1
bind_port = ${port}
workers = ${cpus().length}
log_file = ${join(prefix, 'glance-api.log')}
image_cache_dir = ${join(prefix, 'cache')}
image_cache_driver = sqlite
image_cache_max_size = ${maxSize}
show_multiple_locations = True

[database]
connection = sqlite:///${join(prefix, 'glance.sqlite')}

[paste_deploy]
flavor = caching
config_file = ${join(prefix, 'glance-api-paste.ini')}

[glance_store]
stores = http
default_store = http

[import_filtering_opts]
allowed_hosts = [127.0.0.1]
allowed_ports = [${originPort}]
`;
}

export interface RunningGlance extends RunningServer {
  /** Makes image `id` (a UUID) active with the origin's `locationUrl` as its data and `digests` as its hashes. */
  addImage(id: string, locationUrl: string, size: number, digests: Digests): Promise<void>;
  /** Whether `id` is in Glance's cache: the sqlite driver's own test (its file is there; it appears by rename). */
  cached(id: string): boolean;
}

/** glance-manage db_sync into a fresh sqlite file (Glance's migrations: ~2 s). */
function syncDatabase(confFile: string): void {
  const got = spawnSync(GLANCE_PYTHON, ['-m', 'glance.cmd.manage', '--config-file', confFile, 'db_sync'], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (got.status !== 0) throw new Error(`glance-manage db_sync failed (${got.status ?? got.signal}):\n${got.stderr}`);
}

export async function startGlance(prefix: string, port: number, originPort: number, maxSize: number): Promise<RunningGlance> {
  const cacheDir = join(prefix, 'cache');
  await mkdir(cacheDir, { recursive: true });
  const confFile = join(prefix, 'glance-api.conf');
  await writeFile(join(prefix, 'glance-api-paste.ini'), PASTE);
  await writeFile(confFile, apiConf(prefix, port, originPort, maxSize));
  syncDatabase(confFile);

  const child: ChildProcess = spawn(GLANCE_PYTHON, ['-m', 'glance.cmd.api', '--config-file', confFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const base = `http://127.0.0.1:${port}`;
  // Importing Glance and forking its workers takes this machine 5-10 s.
  const server = await whenServing(child, 'glance-api', `${base}/versions`, 10_000, 60_000);
  const database = join(prefix, 'glance.sqlite');

  const call = async (method: string, path: string, body: unknown, contentType = 'application/json') => {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: { 'Content-Type': contentType },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(60_000),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`glance-api ${method} ${path}: ${response.status} ${text.trim().slice(0, 500)}`);
    return JSON.parse(text) as Record<string, unknown>;
  };

  return {
    port,
    prefix,
    pids: () => processTree(server.pid),
    stop: server.stop,
    cached: (id) => existsSync(join(cacheDir, id)),
    addImage: async (id, locationUrl, size, digests) => {
      await call('POST', '/v2/images', { id, name: `bench-${id}`, disk_format: 'raw', container_format: 'bare' });
      const patch = [{ op: 'add', path: '/locations/-', value: { url: locationUrl, metadata: {} } }];
      const image = await call('PATCH', `/v2/images/${id}`, patch, 'application/openstack-images-v2.1-json-patch');
      if (image.status !== 'active' || image.size !== size) {
        throw new Error(`glance-api: image ${id} is ${String(image.status)} of ${String(image.size)} bytes after adding its location`);
      }
      const db = new Database(database);
      try {
        const changed = db
          .prepare("UPDATE images SET checksum = ?, os_hash_algo = 'sha512', os_hash_value = ? WHERE id = ?")
          .run(digests.md5, digests.sha512, id).changes;
        if (changed !== 1) throw new Error(`glance.sqlite: image ${id} not found to set its hashes`);
      } finally {
        db.close();
      }
      const shown = JSON.parse((await small(`${base}/v2/images/${id}`)).body) as Record<string, unknown>;
      if (shown.checksum !== digests.md5) throw new Error(`glance-api: image ${id} shows checksum ${String(shown.checksum)}`);
    },
  };
}
