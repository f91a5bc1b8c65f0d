import { closeSync, fstatSync, openSync, readFileSync, type Stats } from 'node:fs';
import { open } from 'node:fs/promises';
import { timingSafeEqual } from 'node:crypto';
import { ConfigError, UnauthorizedError } from '../errors.js';
import { type Authenticator, type Identity, type RequestHeaders, requireToken, tokenDigest } from './identity.js';
import { parseTokensFile, type TokenEntry } from './tokens-file.js';

/** Options of {@link TokensAuthenticator}. */
export interface TokensAuthenticatorOptions {
  /** The tokens file (`[imgcache] auth_tokens_file`); see `parseTokensFile` for the format. */
  file: string;
  /** Least time between two checks of the file for changes, in milliseconds. @default 1000 */
  reloadCheckIntervalMs?: number;
  /**
   * Called once per broken version of the file (bad JSON mid-edit, a deleted file). The table loaded last keeps
   * working, so a typo does not lock every client out; the server should log this. @default ignore
   */
  onReloadError?: (error: ConfigError) => void;
  /** Clock, for tests. @default Date.now */
  now?: () => number;
}

/** What identifies one version of the file: if none of these changed, the content is taken as unchanged. */
type Signature = string;
const signatureOf = (stats: Stats): Signature => `${stats.ino}:${stats.size}:${stats.mtimeMs}:${stats.ctimeMs}`;

/**
 * `auth_strategy = tokens`: static tokens from a JSON file, for deployments without Keystone. Tokens are held and
 * compared only as SHA-256 digests, each lookup compares against every entry with `timingSafeEqual` (no early
 * exit), and the file is re-read when its mtime, size or inode changes (checked at most once per
 * `reloadCheckIntervalMs`, on the request path, so nothing runs between requests).
 */
export class TokensAuthenticator implements Authenticator {
  readonly strategy = 'tokens' as const;
  readonly file: string;
  readonly #interval: number;
  readonly #onReloadError: (error: ConfigError) => void;
  readonly #now: () => number;
  #entries: TokenEntry[];
  #signature: Signature;
  #lastCheck: number;
  #failedSignature: Signature | null = null;
  #reloading: Promise<void> | null = null;

  /** Loads the file synchronously: a broken file stops the server at startup with a `ConfigError`. */
  constructor(options: TokensAuthenticatorOptions) {
    this.file = options.file;
    this.#interval = options.reloadCheckIntervalMs ?? 1000;
    this.#onReloadError = options.onReloadError ?? (() => {});
    this.#now = options.now ?? Date.now;
    let fd: number;
    try {
      fd = openSync(this.file, 'r');
    } catch (error) {
      throw unreadable(this.file, error);
    }
    try {
      this.#signature = signatureOf(fstatSync(fd));
      this.#entries = parseTokensFile(readFileSync(fd, 'utf8'), this.file);
    } catch (error) {
      throw error instanceof ConfigError ? error : unreadable(this.file, error);
    } finally {
      closeSync(fd);
    }
    this.#lastCheck = this.#now();
  }

  /** Number of tokens currently loaded. */
  get size(): number {
    return this.#entries.length;
  }

  async authenticate(headers: RequestHeaders): Promise<Identity> {
    const token = requireToken(headers);
    await this.#maybeReload();
    const digest = tokenDigest(token);
    let found: TokenEntry | null = null;
    // Compare with every entry, whatever matched before, so the time taken says nothing about which one did.
    for (const entry of this.#entries) {
      const equal = timingSafeEqual(entry.digest, digest);
      found = equal ? entry : found;
    }
    if (found === null) throw new UnauthorizedError('authentication failed: the token is not valid');
    return { ...found.identity, roles: [...found.identity.roles], token };
  }

  async close(): Promise<void> {
    await this.#reloading;
  }

  async #maybeReload(): Promise<void> {
    const now = this.#now();
    if (this.#reloading === null && now - this.#lastCheck < this.#interval) return;
    if (this.#reloading === null) {
      this.#lastCheck = now;
      this.#reloading = this.#reload().finally(() => {
        this.#reloading = null;
      });
    }
    await this.#reloading;
  }

  async #reload(): Promise<void> {
    let signature: Signature | null = null;
    try {
      const handle = await open(this.file, 'r');
      try {
        // The signature comes from the open file, so it describes the bytes read next (a rename-over is a new inode).
        signature = signatureOf(await handle.stat());
        if (signature === this.#signature) return;
        const entries = parseTokensFile(await handle.readFile('utf8'), this.file);
        this.#entries = entries;
        this.#signature = signature;
        this.#failedSignature = null;
      } finally {
        await handle.close();
      }
    } catch (error) {
      const failure = error instanceof ConfigError ? error : unreadable(this.file, error);
      const key = signature ?? `error:${(error as NodeJS.ErrnoException).code ?? 'unknown'}`;
      if (key !== this.#failedSignature) {
        this.#failedSignature = key;
        this.#onReloadError(failure);
      }
    }
  }
}

function unreadable(file: string, error: unknown): ConfigError {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  const reason = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : String(code ?? error);
  return new ConfigError(`auth_tokens_file ${file}: cannot read the tokens file (${reason})`, { cause: error });
}
