import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { normalizeSection, parseIni, substituteOptions } from './config-ini.js';
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
  /** This node's URL: its identity in the central database (`postgres` driver) and for its peers. */
  worker_self_reference_url: string | undefined;
  /** `[database] connection`: PostgreSQL URL for the `postgres` (`centralized_db`) driver. */
  connection: string | undefined;
  /** `[database] database_schema` (ours): PostgreSQL schema holding the cache tables. @default public */
  database_schema: string;
  /** `[imgcache] node_liveness_window`: seconds after its last heartbeat that a node still counts as live. @default 30 */
  node_liveness_window: number;
  /**
   * `[imgcache] image_cache_verify_digests`: `strongest` verifies the multihash (`os_hash_value`) when the origin
   * declares it and MD5 (`checksum`) only when it is all there is, as python-glanceclient does; `all` verifies both.
   * @default strongest
   */
  image_cache_verify_digests: 'strongest' | 'all';
  /**
   * `[imgcache] hash_threads`: hash fills on worker threads (`true`), on the main thread (`false`), or on threads
   * when the machine has more than one core (`auto`, see `open-cache.ts`). @default auto
   */
  hash_threads: 'auto' | boolean;
}

export type OptionName = keyof CacheConfig;

/** How one option is found and checked: its INI section, its environment variable, its schema. */
export interface OptionSpec {
  section: string;
  env: string;
  schema: z.ZodType;
}

/** One source's values, as text (or numbers from code), before validation; keyed by option name. */
export type RawOptions = Partial<Record<string, string | number | boolean | undefined>>;

/** A source of option values and its name, for error messages ("from --max-size", "from /etc/glance/...") */
export interface ConfigLayer {
  source: string;
  values: RawOptions;
  /** Where a single option came from, when more precise than `source` (`--max-size`, `IMGCACHE_MAX_SIZE`). */
  sources?: Partial<Record<string, string>>;
}

export const DEFAULTS: CacheConfig = {
  image_cache_dir: undefined,
  image_cache_driver: 'sqlite',
  image_cache_max_size: 10 * 1024 ** 3,
  image_cache_stall_time: 86_400,
  image_cache_sqlite_db: 'cache.db',
  image_cache_fill_idle_timeout: 60,
  worker_self_reference_url: undefined,
  connection: undefined,
  database_schema: 'public',
  node_liveness_window: 30,
  image_cache_verify_digests: 'strongest',
  hash_threads: 'auto',
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

/** A whole number of seconds, at least `min`. */
export const wholeSeconds = (option: string, min: number) =>
  z.union([z.string(), z.number()]).transform((value, ctx) => {
    const n = typeof value === 'number' ? value : Number(value.trim());
    if (!Number.isSafeInteger(n) || n < min || (typeof value === 'string' && value.trim() === '')) {
      ctx.addIssue({ code: 'custom', message: `${option} must be a whole number of seconds, ${min} or more` });
      return z.NEVER;
    }
    return n;
  });

/** A non-empty string (trimmed). */
export const text = (option: string) => z.string().trim().min(1, `${option} must not be empty`);

export const CACHE_OPTIONS = {
  image_cache_dir: { section: 'DEFAULT', env: 'IMGCACHE_CACHE_DIR', schema: text('image_cache_dir') },
  image_cache_driver: { section: 'DEFAULT', env: 'IMGCACHE_DRIVER', schema: text('image_cache_driver') },
  image_cache_max_size: {
    section: 'DEFAULT',
    env: 'IMGCACHE_MAX_SIZE',
    schema: z.union([z.string(), z.number()]).transform((value, ctx) => {
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
  },
  image_cache_stall_time: {
    section: 'DEFAULT',
    env: 'IMGCACHE_STALL_TIME',
    schema: wholeSeconds('image_cache_stall_time', 0),
  },
  image_cache_sqlite_db: { section: 'DEFAULT', env: 'IMGCACHE_SQLITE_DB', schema: text('image_cache_sqlite_db') },
  image_cache_fill_idle_timeout: {
    section: 'DEFAULT',
    env: 'IMGCACHE_FILL_IDLE_TIMEOUT',
    schema: wholeSeconds('image_cache_fill_idle_timeout', 1),
  },
  worker_self_reference_url: {
    section: 'DEFAULT',
    env: 'IMGCACHE_SELF_URL',
    schema: z.url({ error: 'worker_self_reference_url must be a URL (http://host:port)' }),
  },
  connection: { section: 'database', env: 'IMGCACHE_DATABASE_URL', schema: text('connection') },
  database_schema: {
    section: 'database',
    env: 'IMGCACHE_DATABASE_SCHEMA',
    schema: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'database schema must be a lower-case SQL identifier'),
  },
  node_liveness_window: {
    section: 'imgcache',
    env: 'IMGCACHE_NODE_LIVENESS_WINDOW',
    schema: wholeSeconds('node_liveness_window', 1),
  },
  image_cache_verify_digests: {
    section: 'imgcache',
    env: 'IMGCACHE_VERIFY_DIGESTS',
    schema: z
      .string()
      .transform((value) => value.trim().toLowerCase())
      .pipe(z.enum(['strongest', 'all'], { error: "image_cache_verify_digests must be 'strongest' or 'all'" })),
  },
  hash_threads: {
    section: 'imgcache',
    env: 'IMGCACHE_HASH_THREADS',
    schema: z.union([z.boolean(), z.string()]).transform((value, ctx) => {
      if (typeof value === 'boolean') return value;
      const normalized = value.trim().toLowerCase();
      if (normalized === 'auto') return 'auto' as const;
      if (['true', '1', 'yes', 'on'].includes(normalized)) return true;
      if (['false', '0', 'no', 'off'].includes(normalized)) return false;
      ctx.addIssue({ code: 'custom', message: 'hash_threads must be auto, true or false' });
      return z.NEVER;
    }),
  },
} satisfies Record<OptionName, OptionSpec>;

/** Environment variable for each cache option. */
export const ENV_NAMES = Object.fromEntries(
  Object.entries(CACHE_OPTIONS).map(([option, spec]) => [option, spec.env]),
) as Record<OptionName, string>;

/**
 * Merges layers for the options of `table` (later layers win; `undefined` means "not given") and validates
 * each value eagerly, naming the option and where the bad value came from.
 */
export function resolveOptions<T extends object>(
  table: Record<string, OptionSpec>,
  defaults: T,
  layers: readonly ConfigLayer[],
): T {
  const config = { ...defaults } as Record<string, unknown>;
  for (const [option, spec] of Object.entries(table)) {
    let chosen: { source: string; value: string | number | boolean } | undefined;
    for (const layer of layers) {
      const value = layer.values[option];
      if (value !== undefined) chosen = { source: layer.sources?.[option] ?? layer.source, value };
    }
    if (!chosen) continue;
    const result = spec.schema.safeParse(chosen.value);
    if (!result.success) {
      const message = result.error.issues[0]?.message ?? `invalid value for ${option}`;
      throw new ConfigError(`${message}; got ${JSON.stringify(chosen.value)} from ${chosen.source}`);
    }
    config[option] = result.data;
  }
  return config as T;
}

/** The cache options, validated. */
export function resolveConfig(layers: readonly ConfigLayer[]): CacheConfig {
  return resolveOptions(CACHE_OPTIONS, DEFAULTS, layers);
}

/**
 * Every section of an INI file, read by oslo.config's rules ({@link parseIni}: no inline comments, so values are
 * verbatim), each option with the last value the file gives it.
 */
export function readIniFile(path: string): Record<string, Record<string, string>> {
  let content: string;
  try {
    content = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config file ${path}: ${(error as Error).message}`, { cause: error });
  }
  const sections: Record<string, Record<string, string>> = Object.create(null);
  for (const [name, options] of parseIni(content, path)) {
    const section: Record<string, string> = Object.create(null);
    for (const [option, values] of options) {
      const last = values.at(-1);
      if (last !== undefined) section[option] = last;
    }
    sections[name] = section;
  }
  return sections;
}

/** The options of `tables` found in an INI file, each in its own section. */
export function readConfigFile(path: string, tables: ReadonlyArray<Record<string, OptionSpec>> = [CACHE_OPTIONS]): ConfigLayer {
  const sections = readIniFile(path);
  const sectionOf = new Map<string, string>();
  for (const table of tables) for (const [option, spec] of Object.entries(table)) sectionOf.set(option, spec.section);
  const substitute = fileSubstitution(path, sections, sectionOf);
  const values: RawOptions = {};
  for (const [option, section] of sectionOf) {
    const value = sections[section]?.[option];
    if (value !== undefined) values[option] = substitute(option, section, value, []);
  }
  return { source: path, values };
}

/**
 * `$option` references in a config file's values, resolved as oslo.config resolves them ({@link substituteOptions}):
 * `$name` is an option of the value's own section, else of `[DEFAULT]`; `${section.name}` names the section.
 * Only options imgcache knows can be referenced (oslo.config: registered options), and only ones this file sets:
 * a reference to anything else is a {@link ConfigError}, never a silently empty or guessed value.
 */
function fileSubstitution(
  path: string,
  sections: Record<string, Record<string, string>>,
  sectionOf: ReadonlyMap<string, string>,
): (option: string, section: string, value: string, chain: readonly string[]) => string {
  const substitute = (option: string, section: string, value: string, chain: readonly string[]): string =>
    substituteOptions(value, (reference) => {
      const fail = (why: string): never => {
        throw new ConfigError(`config file ${path}: [${section}] ${option} refers to $${reference}, ${why} (write $$ for a literal $)`);
      };
      const dot = reference.indexOf('.');
      const name = dot < 0 ? reference : reference.slice(dot + 1);
      const known = sectionOf.get(name);
      const target = dot < 0 ? [section, 'DEFAULT'].find((s) => s === known) : normalizeSection(reference.slice(0, dot));
      if (known === undefined || target !== known) return fail('which is not an option imgcache knows in that section');
      const key = `[${target}] ${name}`;
      if (chain.includes(key)) return fail(`which refers back to it (${[...chain, key].join(' -> ')})`);
      const referenced = sections[target]?.[name];
      if (referenced === undefined) return fail('which this file does not set');
      return substitute(name, target, referenced, [...chain, key]);
    });
  return (option, section, value, chain) => substitute(option, section, value, [...chain, `[${section}] ${option}`]);
}

/** The options of `tables` set in an environment (`IMGCACHE_CACHE_DIR`, ...). Empty variables count as unset. */
export function readEnv(
  env: Record<string, string | undefined>,
  tables: ReadonlyArray<Record<string, OptionSpec>> = [CACHE_OPTIONS],
): ConfigLayer {
  const values: RawOptions = {};
  const sources: Record<string, string> = {};
  for (const table of tables) {
    for (const [option, spec] of Object.entries(table)) {
      const value = env[spec.env];
      if (value !== undefined && value !== '') {
        values[option] = value;
        sources[option] = spec.env;
      }
    }
  }
  return { source: 'the environment', values, sources };
}
