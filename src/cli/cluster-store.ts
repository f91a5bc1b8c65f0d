import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { CacheConfig } from '../config.js';
import type { ClusterDirectory } from '../drivers/cluster-directory.js';
import { openCache } from '../open-cache.js';
import { checkPostgresOptions, type CliContext, type GlobalOptions, POSTGRES_DRIVERS, URL_ENV } from './context.js';
import { CliUsageError, type ExitCode } from './exit.js';

/** The cluster commands' refusal of any other driver (exit 2). */
export const CLUSTER_NEEDS_POSTGRES =
  'cluster commands need image_cache_driver = postgres and [database] connection ' +
  '(--driver postgres --database-url URL --self-url URL, or the same options in the --config file)';

/** What a cluster command gets: the central database's cluster directory, and the token for the nodes' APIs. */
export interface ClusterTarget {
  directory: ClusterDirectory;
  config: CacheConfig;
  /** `--token` or `$IMGCACHE_TOKEN`, for the nodes' v2 Cache API; never logged. */
  token: string | undefined;
}

/**
 * Opens the central database of a `postgres` (`centralized_db`) cache for a cluster command and runs `body`.
 *
 * The store only opens through the driver, and the driver always registers `worker_self_reference_url` and
 * refreshes its heartbeat (Glance's node_reference upsert, spec §7.4): so `--self-url` is required, like for any
 * other command on the postgres driver, and must be the URL of the node the CLI runs on. A placeholder identity
 * would add a node that exists nowhere, looks live for node_liveness_window and would be sent `cluster prune`.
 *
 * A cache dir is not needed (the listing and the node list come from the database), but the driver lays out
 * one: without `--cache-dir` (or image_cache_dir), an empty temporary directory is used and removed afterwards.
 * With one, it is opened as every other command opens it.
 */
export async function withClusterStore(
  ctx: CliContext,
  command: Command,
  body: (target: ClusterTarget) => Promise<ExitCode>,
): Promise<ExitCode> {
  const globals = command.optsWithGlobals<GlobalOptions>();
  const server = ctx.serverUrl(globals);
  if (server !== null) {
    const fix = server.source === '--url' ? 'drop --url' : `unset ${URL_ENV}`;
    throw new CliUsageError(`cluster commands read the central database and call every node themselves; ${fix}`);
  }
  const resolved = ctx.resolveConfig(globals, {}, true);
  if (!POSTGRES_DRIVERS.includes(resolved.image_cache_driver.toLowerCase()) || resolved.connection === undefined) {
    throw new CliUsageError(CLUSTER_NEEDS_POSTGRES);
  }
  checkPostgresOptions(resolved);
  const logger = ctx.logger(globals);
  const scratch = resolved.image_cache_dir === undefined ? await mkdtemp(join(tmpdir(), 'imgcache-cluster-')) : null;
  try {
    const config: CacheConfig = { ...resolved, image_cache_dir: resolved.image_cache_dir ?? scratch ?? undefined };
    const cache = await openCache(config, { logger });
    try {
      const directory = cache.driver.cluster;
      if (!directory) throw new CliUsageError(CLUSTER_NEEDS_POSTGRES);
      const { schema, nodeUrl } = directory;
      logger.info({ command: command.name(), schema, node: nodeUrl }, 'opened the central DB');
      return await body({ directory, config, token: ctx.token(globals) });
    } finally {
      await cache.close();
    }
  } finally {
    if (scratch !== null) await rm(scratch, { recursive: true, force: true });
  }
}
