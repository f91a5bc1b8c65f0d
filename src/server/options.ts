import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import {
  CACHE_OPTIONS,
  type CacheConfig,
  type ConfigLayer,
  DEFAULTS,
  type OptionSpec,
  readConfigFile,
  readEnv,
  readIniFile,
  resolveOptions,
  text,
  wholeSeconds,
} from '../config.js';
import { LOG_FORMATS, type LogFormat } from './logger.js';

/**
 * `imgcache serve`'s options. Glance's names where Glance has one (`bind_host`, `bind_port` in `[DEFAULT]`;
 * `[keystone_authtoken]`), ours in `[imgcache]`.
 */
export interface ServerOptions {
  /** Address to listen on. Glance's default is 0.0.0.0; ours is loopback, so noauth is never exposed by accident. @default 127.0.0.1 */
  bind_host: string;
  /** @default 9292 (Glance's) */
  bind_port: number;
  /**
   * `[DEFAULT] workers` (Glance's): processes that answer on `bind_host:bind_port`. 0 or 1: one process that does
   * everything. N > 1: one owner process (fills, admission, the API, background work) and N HTTP workers that
   * serve hits themselves and hand everything else to the owner (src/server/workers/). @default the number of cores
   */
  workers: number;
  /** Where misses come from: `directory:PATH`, `http:URL-TEMPLATE` or `glance:URL`. Required. */
  origin: string | undefined;
  /** `noauth`, `tokens` or `keystone`. @default noauth */
  auth_strategy: string;
  /** Let noauth listen on a non-loopback address (every caller is an admin!). @default false */
  allow_noauth_non_loopback: boolean;
  /** JSON file of tokens for `auth_strategy = tokens`. */
  auth_tokens_file: string | undefined;
  /** Token the glance origin uses for the server's own requests (prefetch), when no caller token exists. */
  service_token: string | undefined;
  /** Prefetches run at once, at most. @default 1 */
  prefetch_concurrency: number;
  /** Seconds between scans of `queue/` for ids queued by other processes (the CLI). @default 30 */
  prefetch_interval: number;
  /** Seconds between periodic prunes; 0 = off, like Glance's cron tools. @default 0 */
  prune_interval: number;
  /** Seconds between periodic cleans; 0 = off. @default 0 */
  clean_interval: number;
  /** Seconds a SIGTERM waits for running downloads before closing them. @default 30 */
  shutdown_timeout: number;
  /** pino level. @default info */
  log_level: string;
  /** `json`, `text` (one readable line per event) or `auto`: text when stdout is a TTY, else JSON. @default auto */
  log_format: LogFormat;
  /** Fetch misses from live peer nodes (postgres driver) before the origin. @default false */
  peer_fetch: boolean;
  /** Shared secret of the intra-cluster API (peer fetch); without it that API does not exist. */
  cluster_secret: string | undefined;
  /**
   * Peer streams of one image this node sends at once; further nodes read from a node that is itself receiving
   * the image (a tree, not a star: no uplink carries more than this many copies). @default 2
   */
  peer_max_readers: number;
  /**
   * Seconds (edge-site mode, `glance:` origins): while the upstream Glance is unreachable (no connection, a
   * timeout, a 5xx; never a 401, 403 or 404), a caller imgcache authenticated itself (`tokens`, `keystone`)
   * may get a cached image the upstream showed as active to their project (or as public) within this window.
   * 0 = off: every download asks the upstream first. @default 0
   */
  stale_if_error: number;
  /** Keystone (`[keystone_authtoken]`, Glance's section and names). */
  auth_url: string | undefined;
  username: string | undefined;
  password: string | undefined;
  user_domain_name: string;
  project_name: string | undefined;
  project_domain_name: string;
  /** Seconds a validated token is trusted before Keystone is asked again. @default 300 */
  token_cache_time: number;
  /** `[DEFAULT] cert_file` (Glance's): PEM certificate (chain) of the listener; with `key_file`, https only. */
  cert_file: string | undefined;
  /** `[DEFAULT] key_file` (Glance's): PEM private key of `cert_file`. */
  key_file: string | undefined;
  /** `[DEFAULT] ca_file` (Glance's): PEM CA bundle; callers must present a client certificate it signed. */
  ca_file: string | undefined;
  /** PEM CA bundle an https origin's certificate is verified against. @default Node's bundled roots */
  origin_ca_file: string | undefined;
  /** Do not verify an https origin's certificate (logged as a warning at start). @default false */
  origin_insecure: boolean;
  /** PEM CA bundle https peers' certificates are verified against. @default ca_file, else Node's roots */
  peer_ca_file: string | undefined;
  /** Do not verify https peers' certificates (logged as a warning at start). @default false */
  peer_insecure: boolean;
  /** `[keystone_authtoken] cafile` (keystonemiddleware's): PEM CA bundle for an https `auth_url`. */
  cafile: string | undefined;
  /** `[keystone_authtoken] insecure` (keystonemiddleware's): do not verify Keystone's certificate. @default false */
  insecure: boolean;
}

const flag = (option: string) => z.union([z.boolean(), z.string()]).transform((value, ctx) => {
  if (typeof value === 'boolean') return value;
  const normalized = value.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(normalized)) return true;
  if (['false', '0', 'no', 'off'].includes(normalized)) return false;
  ctx.addIssue({ code: 'custom', message: `${option} must be true or false` });
  return z.NEVER;
});

const port = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    ctx.addIssue({ code: 'custom', message: 'bind_port must be a port number from 0 to 65535' });
    return z.NEVER;
  }
  return n;
});

/**
 * A PEM file that can be read now (so a typo fails `serve` at start, not the first https request). The path is
 * kept, not the text: the listener's files are read again on SIGHUP.
 */
const pemFile = (option: string) =>
  text(option).transform((path, ctx) => {
    let content: string;
    try {
      content = readFileSync(path, 'utf8');
    } catch (error) {
      const reason = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
      ctx.addIssue({ code: 'custom', message: `${option}: cannot read ${path} (${reason})` });
      return z.NEVER;
    }
    if (!content.includes('-----BEGIN ')) {
      ctx.addIssue({ code: 'custom', message: `${option}: ${path} is not a PEM file (no -----BEGIN line)` });
      return z.NEVER;
    }
    return path;
  });

const positive = (option: string) => wholeSeconds(option, 1);

/** A count of processes (`workers`): a whole number, 0 or more. */
const processCount = (option: string) =>
  z.union([z.string(), z.number()]).transform((value, ctx) => {
    const n = typeof value === 'number' ? value : Number(value.trim());
    if (!Number.isSafeInteger(n) || n < 0 || (typeof value === 'string' && value.trim() === '')) {
      ctx.addIssue({ code: 'custom', message: `${option} must be a whole number, 0 or more` });
      return z.NEVER;
    }
    return n;
  });
const at = (section: string, env: string, schema: z.ZodType): OptionSpec => ({ section, env, schema });

export const SERVER_OPTIONS = {
  bind_host: at('DEFAULT', 'IMGCACHE_BIND_HOST', text('bind_host')),
  bind_port: at('DEFAULT', 'IMGCACHE_BIND_PORT', port),
  workers: at('DEFAULT', 'IMGCACHE_WORKERS', processCount('workers')),
  origin: at('imgcache', 'IMGCACHE_ORIGIN', text('origin')),
  auth_strategy: at('imgcache', 'IMGCACHE_AUTH_STRATEGY', text('auth_strategy')),
  allow_noauth_non_loopback: at('imgcache', 'IMGCACHE_ALLOW_NOAUTH_NON_LOOPBACK', flag('allow_noauth_non_loopback')),
  auth_tokens_file: at('imgcache', 'IMGCACHE_TOKENS_FILE', text('auth_tokens_file')),
  service_token: at('imgcache', 'IMGCACHE_SERVICE_TOKEN', text('service_token')),
  prefetch_concurrency: at('imgcache', 'IMGCACHE_PREFETCH_CONCURRENCY', positive('prefetch_concurrency')),
  prefetch_interval: at('imgcache', 'IMGCACHE_PREFETCH_INTERVAL', positive('prefetch_interval')),
  prune_interval: at('imgcache', 'IMGCACHE_PRUNE_INTERVAL', wholeSeconds('prune_interval', 0)),
  clean_interval: at('imgcache', 'IMGCACHE_CLEAN_INTERVAL', wholeSeconds('clean_interval', 0)),
  shutdown_timeout: at('imgcache', 'IMGCACHE_SHUTDOWN_TIMEOUT', wholeSeconds('shutdown_timeout', 0)),
  peer_fetch: at('imgcache', 'IMGCACHE_PEER_FETCH', flag('peer_fetch')),
  cluster_secret: at('imgcache', 'IMGCACHE_CLUSTER_SECRET', text('cluster_secret')),
  peer_max_readers: at('imgcache', 'IMGCACHE_PEER_MAX_READERS', positive('peer_max_readers')),
  stale_if_error: at('imgcache', 'IMGCACHE_STALE_IF_ERROR', wholeSeconds('stale_if_error', 0)),
  log_level: at('imgcache', 'IMGCACHE_LOG_LEVEL', z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])),
  log_format: at('imgcache', 'IMGCACHE_LOG_FORMAT', z.enum(LOG_FORMATS, { error: 'log_format must be auto, json or text' })),
  auth_url: at('keystone_authtoken', 'IMGCACHE_KEYSTONE_URL', z.url({ error: 'auth_url must be a URL' })),
  username: at('keystone_authtoken', 'IMGCACHE_KEYSTONE_USERNAME', text('username')),
  password: at('keystone_authtoken', 'IMGCACHE_KEYSTONE_PASSWORD', text('password')),
  user_domain_name: at('keystone_authtoken', 'IMGCACHE_KEYSTONE_USER_DOMAIN', text('user_domain_name')),
  project_name: at('keystone_authtoken', 'IMGCACHE_KEYSTONE_PROJECT', text('project_name')),
  project_domain_name: at('keystone_authtoken', 'IMGCACHE_KEYSTONE_PROJECT_DOMAIN', text('project_domain_name')),
  token_cache_time: at('keystone_authtoken', 'IMGCACHE_KEYSTONE_TOKEN_CACHE_TIME', positive('token_cache_time')),
  cert_file: at('DEFAULT', 'IMGCACHE_CERT_FILE', pemFile('cert_file')),
  key_file: at('DEFAULT', 'IMGCACHE_KEY_FILE', pemFile('key_file')),
  // Not IMGCACHE_CA_FILE: that is the remote CLI's CA to trust, and a shell that sets it must not turn on
  // client certificates for a serve started from it.
  ca_file: at('DEFAULT', 'IMGCACHE_CLIENT_CA_FILE', pemFile('ca_file')),
  origin_ca_file: at('imgcache', 'IMGCACHE_ORIGIN_CA_FILE', pemFile('origin_ca_file')),
  origin_insecure: at('imgcache', 'IMGCACHE_ORIGIN_INSECURE', flag('origin_insecure')),
  peer_ca_file: at('imgcache', 'IMGCACHE_PEER_CA_FILE', pemFile('peer_ca_file')),
  peer_insecure: at('imgcache', 'IMGCACHE_PEER_INSECURE', flag('peer_insecure')),
  cafile: at('keystone_authtoken', 'IMGCACHE_KEYSTONE_CA_FILE', pemFile('cafile')),
  insecure: at('keystone_authtoken', 'IMGCACHE_KEYSTONE_INSECURE', flag('insecure')),
} satisfies Record<keyof ServerOptions, OptionSpec>;

export const SERVER_DEFAULTS: ServerOptions = {
  bind_host: '127.0.0.1',
  bind_port: 9292,
  // Glance's default too (the number of CPUs): hits are served by every core.
  workers: availableParallelism(),
  origin: undefined,
  auth_strategy: 'noauth',
  allow_noauth_non_loopback: false,
  auth_tokens_file: undefined,
  service_token: undefined,
  prefetch_concurrency: 1,
  prefetch_interval: 30,
  prune_interval: 0,
  clean_interval: 0,
  shutdown_timeout: 30,
  log_level: 'info',
  log_format: 'auto',
  peer_fetch: false,
  cluster_secret: undefined,
  peer_max_readers: 2,
  stale_if_error: 0,
  auth_url: undefined,
  username: undefined,
  password: undefined,
  user_domain_name: 'Default',
  project_name: undefined,
  project_domain_name: 'Default',
  token_cache_time: 300,
  cert_file: undefined,
  key_file: undefined,
  ca_file: undefined,
  origin_ca_file: undefined,
  origin_insecure: false,
  peer_ca_file: undefined,
  peer_insecure: false,
  cafile: undefined,
  insecure: false,
};

/** Everything `serve` needs: the cache's options, the server's, and policy overrides from `[policy]`. */
export interface ServeConfig {
  cache: CacheConfig;
  server: ServerOptions;
  policy: Record<string, string>;
}

/** Resolves flags > environment > INI file > defaults for both option tables and reads `[policy]`. */
export function resolveServeConfig(
  file: string | undefined,
  env: Record<string, string | undefined>,
  flags: ConfigLayer,
): ServeConfig {
  const tables = [CACHE_OPTIONS, SERVER_OPTIONS];
  const layers = [...(file ? [readConfigFile(file, tables)] : []), readEnv(env, tables), flags];
  const policy: Record<string, string> = {};
  if (file) {
    for (const [name, rule] of Object.entries(readIniFile(file).policy ?? {})) {
      if (typeof rule === 'string') policy[name] = rule;
    }
  }
  return {
    cache: resolveOptions(CACHE_OPTIONS, DEFAULTS, layers),
    server: resolveOptions(SERVER_OPTIONS, SERVER_DEFAULTS, layers),
    policy,
  };
}
