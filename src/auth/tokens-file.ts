import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { hasAdminRole, type Identity, tokenDigest } from './identity.js';

/** One token of the tokens file: the SHA-256 of the token and the identity it stands for. */
export interface TokenEntry {
  digest: Buffer;
  identity: Omit<Identity, 'token'>;
  /** Where the entry is in the file (`tokens entry 2`), for messages; never the token. */
  label: string;
}

const entrySchema = z.strictObject({
  project_id: z.string().min(1).nullable().optional(),
  user_id: z.string().min(1).nullable().optional(),
  roles: z.array(z.string().trim().min(1)).default([]),
  /** Free text for the operator (who holds the token); ignored. */
  description: z.string().optional(),
});

const tableSchema = z.record(z.string(), z.unknown());
const SECTIONS = ['tokens', 'sha256'] as const;
const TOKEN_SHAPE = /^[\x21-\x7e]{1,8192}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/i;

/**
 * Parses the tokens file (`[imgcache] auth_tokens_file`):
 *
 * ```json
 * { "tokens": { "<token>": { "project_id": "p1", "user_id": "u1", "roles": ["member"] } },
 *   "sha256": { "<sha256 hex of a token>": { "project_id": "p2", "roles": ["admin"] } } }
 * ```
 *
 * Either section may be absent, not both. Errors are `ConfigError`s naming `file` and the entry by position, never
 * by key: a key of `tokens` is a secret.
 */
export function parseTokensFile(text: string, file: string): TokenEntry[] {
  const fail = (what: string): never => {
    throw new ConfigError(`auth_tokens_file ${file}: ${what}`);
  };
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    // V8's message quotes the text around the error, which may be a token: report only where it is.
    fail(`not valid JSON${jsonErrorLocation(text, error)}`);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    fail('must be a JSON object with a "tokens" and/or a "sha256" object');
  }
  const top = data as Record<string, unknown>;
  const unknown = Object.keys(top).filter((key) => !(SECTIONS as readonly string[]).includes(key));
  if (unknown.length > 0) {
    fail(`has ${unknown.length} top-level key(s) other than "tokens" and "sha256" (tokens go inside "tokens")`);
  }
  if (!SECTIONS.some((section) => section in top)) fail('has neither a "tokens" nor a "sha256" object');

  const entries: TokenEntry[] = [];
  const seen = new Map<string, string>();
  for (const section of SECTIONS) {
    if (!(section in top)) continue;
    const table = tableSchema.safeParse(top[section]);
    if (!table.success || Array.isArray(top[section])) fail(`"${section}" must be an object`);
    let index = 0;
    for (const [key, value] of Object.entries(table.data ?? {})) {
      index += 1;
      const label = `${section} entry ${index}`;
      let digest: Buffer;
      if (section === 'tokens') {
        if (!TOKEN_SHAPE.test(key)) fail(`${label}: a token must be 1 to 8192 visible ASCII characters`);
        digest = tokenDigest(key);
      } else {
        if (!SHA256_HEX.test(key)) fail(`${label}: the key must be the 64 hex digits of the token's SHA-256`);
        digest = Buffer.from(key, 'hex');
      }
      const parsed = entrySchema.safeParse(value);
      if (!parsed.success) {
        const issues = parsed.error.issues.map((issue) => `${issue.path.join('.') || 'entry'}: ${issue.message}`);
        fail(`${label}: ${issues.join('; ')}`);
      }
      const identity = parsed.data!;
      const hex = digest.toString('hex');
      const twin = seen.get(hex);
      if (twin !== undefined) fail(`${label} is the same token as ${twin}`);
      seen.set(hex, label);
      const roles = [...new Set(identity.roles)];
      entries.push({
        digest,
        label,
        identity: {
          userId: identity.user_id ?? null,
          projectId: identity.project_id ?? null,
          roles,
          isAdmin: hasAdminRole(roles),
        },
      });
    }
  }
  return entries;
}

/** ` at line L, column C` from a JSON.parse error, or '' when the engine did not say where. */
function jsonErrorLocation(text: string, error: unknown): string {
  const match = /position (\d+)/.exec(error instanceof Error ? error.message : '');
  if (!match) {
    if (/Unexpected end/.test(String(error))) return ' (the file ends too early)';
    return ' (an unexpected character: look for a trailing comma, a missing quote or an unquoted value)';
  }
  const position = Number(match[1]);
  const before = text.slice(0, position);
  const line = before.split('\n').length;
  const column = position - before.lastIndexOf('\n');
  return ` at line ${line}, column ${column}`;
}
