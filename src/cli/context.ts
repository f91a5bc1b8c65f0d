import type { Command } from 'commander';
import { pino, type Logger } from 'pino';
import { CacheLayout } from '../drivers/layout.js';
import type { ImageCache } from '../cache/image-cache.js';
import {
  type CacheConfig,
  type ConfigLayer,
  ENV_NAMES,
  type OptionName,
  type RawOptions,
  readConfigFile,
  readEnv,
  resolveConfig,
} from '../config.js';
import { DRIVER_NAMES } from '../drivers/registry.js';
import { ConfigError } from '../errors.js';
import type { ClientTls } from '../http-client.js';
import { openCache } from '../open-cache.js';
import { givenTlsFlags, readClientTls } from './client-tls.js';
import { CliUsageError, type ExitCode } from './exit.js';
import type { RemoteCache } from './remote.js';

/** Where the CLI writes. `main` uses the process's streams; nothing else in src/cli touches `process`. */
export interface CliIO {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

/** Options every command accepts (commander's camelCase of the flags). */
export interface GlobalOptions {
  /** `--cache-dir`: `image_cache_dir`. No default: some source must set it. */
  cacheDir?: string;
  /** `--driver`: `image_cache_driver`. @default sqlite */
  driver?: string;
  /** `--max-size`: `image_cache_max_size`, a byte count with an optional K/M/G/T suffix. @default 10G */
  maxSize?: string;
  /** `--config`: INI file whose `[DEFAULT]` section holds Glance's options. @default $IMGCACHE_CONFIG */
  config?: string;
  /** `--verbose`: log at info instead of error. @default false */
  verbose?: boolean;
  /** `--url`: act on this server's v2 Cache API instead of a directory. @default $IMGCACHE_URL */
  url?: string;
  /** `--token`: sent as `X-Auth-Token` with `--url` (and to every node by `cluster prune`). @default $IMGCACHE_TOKEN */
  token?: string;
  /** `--database-url`: `[database] connection`, the central PostgreSQL of the `postgres` driver. */
  databaseUrl?: string;
  /** `--database-schema`: `database_schema` in `[database]`. @default public */
  databaseSchema?: string;
  /**
   * `--self-url`: `worker_self_reference_url`, the node whose cache this is. The postgres driver registers it
   * and refreshes its heartbeat on open, so the CLI run on a node must pass that node's own URL.
   */
  selfUrl?: string;
  /** `--ca-file`: PEM CA bundle an https `--url` (and `cluster prune`'s nodes) are verified against. @default $IMGCACHE_CA_FILE */
  caFile?: string;
  /** `--insecure`: do not verify the server's TLS certificate. @default false */
  insecure?: boolean;
  /** `--cert-file`: PEM client certificate shown to an https `--url` that asks for one. @default $IMGCACHE_CERT_FILE */
  certFile?: string;
  /** `--key-file`: the private key of `--cert-file`. @default $IMGCACHE_KEY_FILE */
  keyFile?: string;
}

/** Environment variable naming the config file, used when `--config` is not given. */
export const CONFIG_ENV = 'IMGCACHE_CONFIG';
/** Environment variable for `--url`. */
export const URL_ENV = 'IMGCACHE_URL';
export { CA_FILE_ENV, CERT_FILE_ENV, KEY_FILE_ENV } from './client-tls.js';
/** Environment variable for `--token` (safer than the flag: argv is visible to every local user in `ps`). */
export const TOKEN_ENV = 'IMGCACHE_TOKEN';

/** What the global flags that name a local cache mean, for refusing them next to `--url`. */
const LOCAL_FLAGS = [
  ['cacheDir', '--cache-dir', 'the server uses its own image_cache_dir'],
  ['driver', '--driver', 'the server uses its own image_cache_driver'],
  ['maxSize', '--max-size', 'the server prunes to its own image_cache_max_size'],
  ['config', '--config', 'the server reads its own configuration'],
  ['databaseUrl', '--database-url', 'the server uses its own [database] connection'],
  ['databaseSchema', '--database-schema', 'the server uses its own [database] database_schema'],
  ['selfUrl', '--self-url', 'the server is its own node (worker_self_reference_url)'],
] as const;

/** `image_cache_driver` names of the central-database driver (Glance calls it `centralized_db`). */
export const POSTGRES_DRIVERS: readonly string[] = ['postgres', 'centralized_db'];

/** Options of {@link CliContext.withCache} and {@link CliContext.withTarget}'s local half. */
export interface LocalOptions {
  ids?: readonly string[];
  /** Command-specific flags under their Glance option names (`--stall-time`). */
  extra?: RawOptions;
  /** Checks the resolved configuration before anything is opened or created (throw to refuse). */
  check?: (config: CacheConfig) => void;
}

/** The two ways a management command can run: on a directory, or on a server through the v2 Cache API. */
export interface CommandBodies {
  local: (cache: ImageCache, config: CacheConfig) => Promise<ExitCode>;
  remote: (server: RemoteCache) => Promise<ExitCode>;
}

/** The flag that sets each option, so a bad value is reported as coming "from --max-size". */
const FLAG_NAMES: Partial<Record<OptionName, string>> = {
  image_cache_dir: '--cache-dir',
  image_cache_driver: '--driver',
  image_cache_max_size: '--max-size',
  image_cache_stall_time: '--stall-time',
  connection: '--database-url',
  database_schema: '--database-schema',
  worker_self_reference_url: '--self-url',
};

/** What one invocation of a command needs: streams, environment, and a way to open the cache. */
export class CliContext {
  readonly io: CliIO;
  readonly env: Record<string, string | undefined>;
  /** Set by the command that ran; `main` returns it. */
  exitCode: ExitCode = 0;

  constructor(io: CliIO, env: Record<string, string | undefined>) {
    this.io = io;
    this.env = env;
  }

  /** Writes one line to stdout. */
  out(line: string): void {
    this.io.stdout.write(`${line}\n`);
  }

  /** Writes one `imgcache: ...` line to stderr. */
  warn(line: string): void {
    this.io.stderr.write(`imgcache: ${line}\n`);
  }

  /**
   * pino on stderr: `error` by default (every command reports its own outcome in one line; the library's
   * warnings would only repeat it), `info` with `--verbose`.
   */
  logger(globals: GlobalOptions): Logger {
    const stderr = this.io.stderr;
    const level = globals.verbose ? 'info' : 'error';
    return pino({ name: 'imgcache', level }, { write: (line) => stderr.write(line) });
  }

  /**
   * Merges defaults < config file < environment < flags. The file is `--config`, else `$IMGCACHE_CONFIG`, else
   * none. `extra` carries command-specific flags (`--stall-time`) under their Glance option names. For the
   * cluster commands (`forCluster`) a missing `image_cache_dir` is left undefined (they make a temporary one) and
   * the postgres options are left to their own check, whose message names the cluster commands.
   */
  resolveConfig(globals: GlobalOptions, extra: RawOptions = {}, forCluster = false): CacheConfig {
    const layers: ConfigLayer[] = [];
    const file = globals.config ?? nonEmpty(this.env[CONFIG_ENV]);
    if (file !== undefined) layers.push(readConfigFile(file));
    layers.push(readEnv(this.env));
    const flags: RawOptions = {
      image_cache_dir: globals.cacheDir,
      image_cache_driver: globals.driver,
      image_cache_max_size: globals.maxSize,
      connection: globals.databaseUrl,
      database_schema: globals.databaseSchema,
      worker_self_reference_url: globals.selfUrl,
      ...extra,
    };
    const sources: Partial<Record<OptionName, string>> = {};
    for (const option of Object.keys(flags) as OptionName[]) {
      const flag = FLAG_NAMES[option];
      if (flags[option] !== undefined && flag) sources[option] = flag;
    }
    layers.push({ source: 'the command line', values: flags, sources });

    const config = resolveConfig(layers);
    if (config.image_cache_dir === undefined && !forCluster) {
      throw new CliUsageError(
        `no cache directory: pass --cache-dir DIR, set ${ENV_NAMES.image_cache_dir}, or set image_cache_dir in the ` +
          `[DEFAULT] section of the --config file (or $${CONFIG_ENV})`,
      );
    }
    // The registry would refuse the name too, but without saying where it came from.
    if (!DRIVER_NAMES.includes(config.image_cache_driver.toLowerCase())) {
      throw new ConfigError(
        `image_cache_driver must be one of ${DRIVER_NAMES.join(', ')}; got ` +
          `${JSON.stringify(config.image_cache_driver)} from ${sourceOf(layers, 'image_cache_driver')}`,
      );
    }
    if (!forCluster) checkPostgresOptions(config);
    return config;
  }

  /** `--token`, else `$IMGCACHE_TOKEN`, else undefined. */
  token(globals: GlobalOptions): string | undefined {
    return globals.token ?? nonEmpty(this.env[TOKEN_ENV]);
  }

  /**
   * `--ca-file`, `--insecure`, `--cert-file` and `--key-file` (else their variables), read and checked now: a
   * file that cannot be used exits 2 naming its flag (see {@link readClientTls}).
   */
  clientTls(globals: GlobalOptions): ClientTls {
    return readClientTls(globals, this.env);
  }

  /** `--url` (else `$IMGCACHE_URL`) and where it came from; null in local mode. */
  serverUrl(globals: GlobalOptions): { url: string; source: string } | null {
    if (globals.url !== undefined) return { url: globals.url, source: '--url' };
    const fromEnv = nonEmpty(this.env[URL_ENV]);
    return fromEnv === undefined ? null : { url: fromEnv, source: URL_ENV };
  }

  /**
   * Runs `bodies.remote` against the server `--url` names, or `bodies.local` on the cache directory (through
   * {@link withCache}). Ids are validated first either way, by the same rules, so an invalid id sends nothing.
   * Flags that only mean something for a directory (`--cache-dir`, `--max-size`, `extra` such as `--stall-time`)
   * are refused next to a URL rather than ignored: the server uses its own configuration.
   */
  async withTarget(
    command: Command,
    options: LocalOptions,
    bodies: CommandBodies,
  ): Promise<ExitCode> {
    const globals = command.optsWithGlobals<GlobalOptions>();
    const server = this.serverUrl(globals);
    if (server === null) return this.withCache(command, options, bodies.local);

    // Loaded only here: undici is ~9 MiB of heap that `serve` (each of its workers) would carry for nothing.
    const { parseServerUrl, RemoteCache } = await import('./remote.js');
    const url = parseServerUrl(server.url, server.source);
    for (const [key, flag, why] of LOCAL_FLAGS) {
      if (globals[key] !== undefined) throw new CliUsageError(`${flag} does not apply with ${server.source}: ${why}`);
    }
    for (const [option, value] of Object.entries(options.extra ?? {})) {
      const flag = FLAG_NAMES[option as OptionName] ?? option;
      if (value !== undefined) {
        throw new CliUsageError(`${flag} does not apply with ${server.source}: the server uses its own ${option}`);
      }
    }
    const layout = new CacheLayout('.');
    for (const id of options.ids ?? []) layout.validate(id);

    const token = this.token(globals);
    const logger = this.logger(globals);
    // The token is never logged: only whether there is one.
    logger.info({ command: command.name(), server: url.host, token: token !== undefined }, 'using the cache API');
    const tls = this.clientTls(globals);
    const remote = new RemoteCache({ url, logger, tls, ...(token !== undefined ? { token } : {}) });
    try {
      return await bodies.remote(remote);
    } finally {
      await remote.close();
    }
  }

  /**
   * Resolves the configuration, validates `ids`, opens the cache, runs `body` and closes the cache. Every id is
   * checked before the cache is opened (so an invalid id creates nothing, not even the directory) and again by
   * the opened driver, which also refuses its own file names (`cache.db`): nothing is acted on unless all pass.
   */
  async withCache(
    command: Command,
    options: LocalOptions,
    body: (cache: ImageCache, config: CacheConfig) => Promise<ExitCode>,
  ): Promise<ExitCode> {
    const globals = command.optsWithGlobals<GlobalOptions>();
    const server = this.serverUrl(globals);
    if (server !== null) {
      const fix = server.source === '--url' ? 'drop --url' : `unset ${URL_ENV}`;
      throw new CliUsageError(`${command.name()} works on a local cache directory only; ${fix}`);
    }
    if (globals.token !== undefined) throw new CliUsageError(`--token applies only with --url (or ${URL_ENV})`);
    // Flags only: the variables may be set for serve's own cert_file and key_file on the same machine.
    const tlsFlags = givenTlsFlags(globals);
    if (tlsFlags.length > 0) {
      const [flags, verb] = [tlsFlags.join(' and '), tlsFlags.length > 1 ? 'are' : 'is'];
      throw new CliUsageError(`${flags} ${verb} for --url (a running server); a cache directory has no TLS`);
    }
    const config = this.resolveConfig(globals, options.extra);
    const ids = options.ids ?? [];
    const layout = new CacheLayout(config.image_cache_dir ?? '.');
    for (const id of ids) layout.validate(id);
    options.check?.(config);

    const logger = this.logger(globals);
    // No reconcile (the default): it moves every incomplete/ file this process is not writing to invalid/, which
    // from a short-lived CLI would break the live fills of a server sharing the directory. Stalled files are
    // `clean`'s.
    const cache = await openCache(config, { logger });
    try {
      for (const id of ids) cache.driver.getImageFilepath(id);
      const event = { command: command.name(), cacheDir: config.image_cache_dir, driver: cache.driver.name };
      logger.info(event, 'opened cache');
      return await body(cache, config);
    } finally {
      await cache.close();
    }
  }
}

/** The layer an option's final value came from, for messages (flags name the flag, env the variable). */
function sourceOf(layers: readonly ConfigLayer[], option: OptionName): string {
  let source = 'the defaults';
  for (const layer of layers) {
    if (layer.values[option] !== undefined) source = layer.sources?.[option] ?? layer.source;
  }
  return source;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

/**
 * The options the postgres driver cannot open without, refused as a command line error (exit 2) naming the flags:
 * the driver refuses them too, but as a broken driver (exit 1). A config without the postgres driver passes.
 */
export function checkPostgresOptions(config: CacheConfig): void {
  if (!POSTGRES_DRIVERS.includes(config.image_cache_driver.toLowerCase())) return;
  if (config.connection === undefined) {
    throw new CliUsageError(
      `the ${config.image_cache_driver} driver needs [database] connection: pass --database-url URL, set ` +
        `${ENV_NAMES.connection}, or set connection in the [database] section of the --config file`,
    );
  }
  if (config.worker_self_reference_url === undefined) {
    throw new CliUsageError(
      `the ${config.image_cache_driver} driver needs worker_self_reference_url, the URL of the node this cache ` +
        `belongs to: pass --self-url URL, set ${ENV_NAMES.worker_self_reference_url}, or set it in the --config file`,
    );
  }
}
