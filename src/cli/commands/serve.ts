import cluster from 'node:cluster';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { ConfigLayer } from '../../config.js';
import { seedDemoOrigin } from '../../server/demo.js';
import { createServerLogger } from '../../server/logger.js';
import { resolveServeConfig } from '../../server/options.js';
import { givenTlsFlags } from '../client-tls.js';
import { CONFIG_ENV, type CliContext, type GlobalOptions } from '../context.js';
import { CliUsageError, EXIT } from '../exit.js';

interface ServeFlags {
  origin?: string;
  host?: string;
  port?: string;
  auth?: string;
  tokensFile?: string;
  insecureNoauthBind?: boolean;
  peerFetch?: boolean;
  clusterSecret?: string;
  peerMaxReaders?: string;
  workers?: string;
  demo?: boolean;
}

/**
 * `imgcache serve`: the Glance-compatible caching image endpoint. Runs until SIGTERM or SIGINT, then stops
 * gracefully. `--demo` is what `npm start` runs: `./var/cache`, a directory origin `./var/origin` seeded with
 * a generated image, noauth on 127.0.0.1.
 */
export function registerServe(program: Command, ctx: CliContext): void {
  program
    .command('serve')
    .description('serve images through the cache (Glance image download, v2 Cache API, legacy cache API)')
    .option('--origin <spec>', 'where misses come from: directory:PATH, http:URL-TEMPLATE or glance:URL')
    .option('--host <address>', 'address to listen on (bind_host); default 127.0.0.1')
    .option('--port <n>', 'port to listen on (bind_port); default 9292')
    .option('--auth <strategy>', 'auth_strategy: noauth, tokens or keystone; default noauth')
    .option('--tokens-file <file>', 'JSON file of tokens for --auth tokens')
    .option('--insecure-noauth-bind', 'allow noauth on a non-loopback address (every caller is an admin)')
    .option('--peer-fetch', 'fetch misses from peer nodes that hold the image (postgres driver, needs a cluster secret)')
    .option('--cluster-secret <secret>', 'shared secret of the intra-cluster API (or IMGCACHE_CLUSTER_SECRET)')
    .option('--peer-max-readers <n>', 'peer streams of one image this node sends at once (fan-out; default 2)')
    .option('--workers <n>', 'processes answering on the port (workers); 0 or 1: one process; default the number of cores')
    .option('--demo', 'serve a generated demo image from ./var (what `npm start` runs)')
    .action(async (flags: ServeFlags, command: Command) => {
      const globals = command.optsWithGlobals<GlobalOptions & ServeFlags>();
      if (globals.url !== undefined || globals.token !== undefined) {
        throw new CliUsageError('--url and --token are for the management commands; serve listens on --host/--port');
      }
      const tlsFlags = givenTlsFlags(globals);
      if (tlsFlags.length > 0) {
        const [given, verb] = [tlsFlags.join(' and '), tlsFlags.length > 1 ? 'are' : 'is'];
        throw new CliUsageError(
          `${given} ${verb} for --url; serve's TLS is cert_file, key_file and ca_file in [DEFAULT] of --config`,
        );
      }
      let demoImage: string | undefined;
      // A worker of `workers = N` runs this same command line: the owner already seeded the demo origin.
      if (flags.demo && !cluster.isWorker) demoImage = await seedDemoOrigin(resolve('var/origin'));
      const values = {
        image_cache_dir: globals.cacheDir ?? (flags.demo ? resolve('var/cache') : undefined),
        image_cache_driver: globals.driver,
        image_cache_max_size: globals.maxSize,
        connection: globals.databaseUrl,
        database_schema: globals.databaseSchema,
        worker_self_reference_url: globals.selfUrl,
        origin: flags.origin ?? (flags.demo ? `directory:${resolve('var/origin')}` : undefined),
        bind_host: flags.host,
        bind_port: flags.port,
        auth_strategy: flags.auth,
        auth_tokens_file: flags.tokensFile,
        allow_noauth_non_loopback: flags.insecureNoauthBind,
        peer_fetch: flags.peerFetch,
        cluster_secret: flags.clusterSecret,
        peer_max_readers: flags.peerMaxReaders,
        workers: flags.workers,
      };
      const names: Record<string, string> = {
        image_cache_dir: '--cache-dir',
        image_cache_driver: '--driver',
        image_cache_max_size: '--max-size',
        connection: '--database-url',
        database_schema: '--database-schema',
        worker_self_reference_url: '--self-url',
        origin: '--origin',
        bind_host: '--host',
        bind_port: '--port',
        auth_strategy: '--auth',
        auth_tokens_file: '--tokens-file',
        cluster_secret: '--cluster-secret',
        peer_max_readers: '--peer-max-readers',
        workers: '--workers',
      };
      const layer: ConfigLayer = { source: 'the command line', values, sources: names };
      const file = globals.config ?? (ctx.env[CONFIG_ENV] || undefined);
      const config = resolveServeConfig(file, ctx.env, layer);
      if (!config.cache.image_cache_dir) {
        throw new CliUsageError('no cache directory: pass --cache-dir DIR, set IMGCACHE_CACHE_DIR, or image_cache_dir');
      }
      const logger = createServerLogger({
        level: config.server.log_level,
        format: config.server.log_format,
        color: process.stdout.isTTY === true && !ctx.env.NO_COLOR,
      });
      // Every promise is meant to be handled where it is made; one that is not is a bug. Node's default would
      // exit and cut every download in flight: log it loudly (fatal, plus a line on stderr) instead.
      const unhandled = (reason: unknown) => {
        logger.fatal({ err: reason }, 'BUG: unhandled promise rejection (the server keeps running)');
        ctx.warn(`BUG: unhandled promise rejection: ${reason instanceof Error ? reason.stack : String(reason)}`);
      };
      process.on('unhandledRejection', unhandled);
      // Loaded here, not at the top: a worker never loads the app (fastify, the routes, the drivers), so each of
      // the N workers costs tens of MiB less.
      if (cluster.isWorker) {
        // One HTTP worker of `workers = N`: it runs until its owner tells it to drain, or is gone (worker.ts).
        const { runWorker } = await import('../../server/workers/worker.js');
        await runWorker(config, logger);
        await new Promise<never>(() => {});
      }
      const server =
        config.server.workers > 1
          ? await (await import('../../server/workers/owner.js')).startWithWorkers(config, logger)
          : await (await import('../../server/server.js')).startServer(config, logger);
      ctx.out(`imgcache serving on ${server.url} (cache ${config.cache.image_cache_dir}, origin ${config.server.origin})`);
      if (demoImage) {
        ctx.out('Try it:');
        ctx.out(`  curl -s -o /dev/null -D - ${server.url}/v2/images/${demoImage}/file   # MISS: fetched and cached`);
        ctx.out(`  curl -s -o /dev/null -D - ${server.url}/v2/images/${demoImage}/file   # HIT: served from the cache`);
        ctx.out(`  curl -s ${server.url}/v2/cache                                                # the cache listing`);
        ctx.out(`  open ${server.url}/dashboard                                                   # the operator's view`);
      }
      // SIGHUP re-reads cert_file, key_file and ca_file (renewed certificates without a restart). Only with TLS:
      // without it, SIGHUP keeps its default meaning.
      const reload = () => {
        try {
          server.reloadTls();
        } catch (error) {
          logger.error({ err: error }, 'TLS reload failed: the previous certificate stays in force');
        }
      };
      if (config.server.cert_file !== undefined) process.on('SIGHUP', reload);
      await new Promise<void>((done) => {
        const stop = () => {
          process.off('SIGTERM', stop);
          process.off('SIGINT', stop);
          process.off('SIGHUP', reload);
          server.close().then(done, (error: unknown) => {
            logger.error({ err: error }, 'shutdown failed');
            done();
          });
        };
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
      process.off('unhandledRejection', unhandled);
      ctx.exitCode = EXIT.ok;
    });
}
