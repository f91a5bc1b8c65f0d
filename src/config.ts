import { readFileSync } from 'node:fs';
import { parse as parseIni } from 'ini';
import { z } from 'zod';
import { ConfigError } from './errors.js';

/**
 * Configuration with Glance's option names, so the `[DEFAULT]` section of an operator's glance-api.conf works
 * unchanged. Sources, strongest first: command-line flags, environment (`IMGCACHE_*`), the INI file, defaults.
 * This module never reads `process.argv` or `process.env` itself: the CLI hands both in.
 */
export interface CacheConfig {
  /** Cache directory. No default, as in Glance: every command needs it. */
  image_cache_dir: string | undefined;
  /** Metadata driver: `sqlite` or `xattr` (case-insensitive). @default sqlite */
  image_cache_driver: string;
  /** Size the cache is pruned down to, in bytes. @default 10737418240 (10 GiB) */
  image_cache_max_size: number;
  /** Seconds after which an `incomplete/` file counts as stalled for `clean`. @default 86400 */
  image_cache_stall_time: number;
  /** sqlite DB file name, relative to `image_cache_dir`. @default cache.db */
  image_cache_sqlite_db: string;
  /** Seconds a fill may go without a byte from the origin before it is aborted (ours). @default 60 */
  image_cache_fill_idle_timeout: number;
}

export type OptionName = keyof CacheConfig;

/** One source's values, as text or numbers, before validation. */
export type RawOptions = Partial<Record<OptionName, string | number | undefined>>;

/** A source of option values and its name, for error messages ("from --max-size", "from /etc/glance/...") */
export interface ConfigLayer {
  source: string;
  values: RawOptions;
  /** Where a single option came from, when more precise than `source` (`--max-size`, `IMGCACHE_MAX_SIZE`). */
  sources?: Partial<Record<OptionName, string>>;
}

export const DEFAULTS: CacheConfig = {
  image_cache_dir: undefined,
  image_cache_driver: 'sqlite',
  image_cache_max_size: 10 * 1024 ** 3,
  image_cache_stall_time: 86_400,
  image_cache_sqlite_db: 'cache.db',
  image_cache_fill_idle_timeout: 60,
};

/** Environment variable for each option. */
export const ENV_NAMES: Record<OptionName, string> = {
  image_cache_dir: 'IMGCACHE_CACHE_DIR',
  image_cache_driver: 'IMGCACHE_DRIVER',
  image_cache_max_size: 'IMGCACHE_MAX_SIZE',
  image_cache_stall_time: 'IMGCACHE_STALL_TIME',
  image_cache_sqlite_db: 'IMGCACHE_SQLITE_DB',
  image_cache_fill_idle_timeout: 'IMGCACHE_FILL_IDLE_TIMEOUT',
};

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4, P: 1024 ** 5 };

/**
 * Parses a byte count: `10737418240`, `10G`, `10GiB`, `10GB`, `512M`, `1.5T`. Suffixes are binary (K = 1024),
 * as operators sizing disks in `df -h` expect. Returns null when `text` is not a byte count.
 */
export function parseByteSize(text: string | number): number | null {
  if (typeof text === 'number') return Number.isSafeInteger(text) && text >= 0 ? text : null;
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$/i.exec(text);
  if (!match) return null;
  const value = Number(match[1]) * (UNITS[(match[2] ?? '').toUpperCase()] ?? 1);
  return Number.isSafeInteger(Math.floor(value)) ? Math.floor(value) : null;
}

const wholeSeconds = (option: string, min: number) =>
  z.union([z.string(), z.number()]).transform((value, ctx) => {
    const n = typeof value === 'number' ? value : Number(value.trim());
    if (!Number.isSafeInteger(n) || n < min || (typeof value === 'string' && value.trim() === '')) {
      ctx.addIssue({ code: 'custom', message: `${option} must be a whole number of seconds, ${min} or more` });
      return z.NEVER;
    }
    return n;
  });

const SCHEMA = {
  image_cache_dir: z.string().trim().min(1, 'image_cache_dir must not be empty'),
  image_cache_driver: z.string().trim().min(1, 'image_cache_driver must not be empty'),
  image_cache_max_size: z.union([z.string(), z.number()]).transform((value, ctx) => {
    const bytes = parseByteSize(value);
    if (bytes === null) {
      ctx.addIssue({
        code: 'custom',
        message: 'image_cache_max_size must be a byte count, optionally with a K, M, G or T suffix (e.g. 10G)',
      });
      return z.NEVER;
    }
    return bytes;
  }),
  image_cache_stall_time: wholeSeconds('image_cache_stall_time', 0),
  image_cache_sqlite_db: z.string().trim().min(1, 'image_cache_sqlite_db must not be empty'),
  image_cache_fill_idle_timeout: wholeSeconds('image_cache_fill_idle_timeout', 1),
} satisfies Record<OptionName, z.ZodType>;

/** Merges layers (later layers win; `undefined` means "not given") and validates each value eagerly. */
export function resolveConfig(layers: readonly ConfigLayer[]): CacheConfig {
  const config: CacheConfig = { ...DEFAULTS };
  for (const option of Object.keys(SCHEMA) as OptionName[]) {
    let chosen: { source: string; value: string | number } | undefined;
    for (const layer of layers) {
      const value = layer.values[option];
      if (value !== undefined) chosen = { source: layer.sources?.[option] ?? layer.source, value };
    }
    if (!chosen) continue;
    const result = SCHEMA[option].safeParse(chosen.value);
    if (!result.success) {
      const message = result.error.issues[0]?.message ?? `invalid value for ${option}`;
      throw new ConfigError(`${message}; got ${JSON.stringify(chosen.value)} from ${chosen.source}`);
    }
    (config as unknown as Record<string, unknown>)[option] = result.data;
  }
  return config;
}

/** The `image_cache_*` options of an INI file's `[DEFAULT]` section (glance-api.conf or glance-cache.conf). */
export function readConfigFile(path: string): ConfigLayer {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config file ${path}: ${(error as Error).message}`, { cause: error });
  }
  const parsed = parseIni(text) as Record<string, unknown>;
  const section = parsed.DEFAULT ?? parsed.default;
  const values: RawOptions = {};
  if (section && typeof section === 'object') {
    for (const option of Object.keys(SCHEMA) as OptionName[]) {
      const value = (section as Record<string, unknown>)[option];
      if (typeof value === 'string') values[option] = value;
      else if (value !== undefined) {
        throw new ConfigError(`${option} in [DEFAULT] of ${path} must be a single value`);
      }
    }
  }
  return { source: path, values };
}

/** The options set in an environment (`IMGCACHE_CACHE_DIR`, ...). Empty variables count as unset. */
export function readEnv(env: Record<string, string | undefined>): ConfigLayer {
  const values: RawOptions = {};
  const sources: Partial<Record<OptionName, string>> = {};
  for (const [option, name] of Object.entries(ENV_NAMES) as Array<[OptionName, string]>) {
    const value = env[name];
    if (value !== undefined && value !== '') {
      values[option] = value;
      sources[option] = name;
    }
  }
  return { source: 'the environment', values, sources };
}
