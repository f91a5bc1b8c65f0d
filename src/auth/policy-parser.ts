import { ConfigError } from '../errors.js';

/**
 * A parsed policy rule in oslo.policy's language. `match` templates are Python `%`-format strings: literal text
 * and `%(key)s` substitutions from the target dict.
 */
export type PolicyCheck =
  | { type: 'always' }
  | { type: 'never' }
  | { type: 'not'; check: PolicyCheck }
  | { type: 'and'; checks: PolicyCheck[] }
  | { type: 'or'; checks: PolicyCheck[] }
  /** `rule:name`: the result of another rule. */
  | { type: 'rule'; name: string }
  /** `role:admin`: the caller has the role (case-insensitive, as oslo.policy's RoleCheck). */
  | { type: 'role'; match: Template }
  /** `project_id:%(project_id)s`: a caller attribute equals the match. */
  | { type: 'attribute'; path: string[]; match: Template }
  /** `'test_1234':%(x_test_key)s`: a literal (quoted string, True, False, None, integer) equals the match. */
  | { type: 'literal'; value: string; match: Template };

/** Literal text and target keys, in order. */
export type Template = Array<string | { key: string }>;

interface Token {
  kind: '(' | ')' | 'and' | 'or' | 'not' | 'check' | 'string';
  text: string;
  /** 0-based offset in the rule text. */
  at: number;
}

const UNSUPPORTED_KINDS = new Set(['http', 'https']);

/**
 * Parses `text` as an oslo.policy rule: checks (`role:x`, `attr:match`, `'literal':match`, `rule:name`, `@`,
 * `!`) combined with `not`, `and`, `or` (that precedence, tightest first) and parentheses. The empty rule always
 * passes. Tokens are whitespace-separated and parentheses may stick to them, as oslo.policy tokenizes. Anything
 * oslo.policy would only log and treat as "deny" is a `ConfigError` naming `name` and the column.
 */
export function parsePolicyRule(text: string, name: string): PolicyCheck {
  const fail = (what: string, at: number): never => {
    const rule = JSON.stringify(name);
    throw new ConfigError(`policy rule ${rule}: ${what} at column ${at + 1} of ${JSON.stringify(text)}`);
  };
  const tokens = tokenize(text);
  if (tokens.length === 0) return { type: 'always' };
  let index = 0;
  const peek = (): Token | undefined => tokens[index];
  const describe = (token: Token | undefined) =>
    token === undefined ? 'the end of the rule' : JSON.stringify(token.text);

  function parseOr(): PolicyCheck {
    const checks = [parseAnd()];
    while (peek()?.kind === 'or') {
      index += 1;
      checks.push(parseAnd());
    }
    return checks.length === 1 ? (checks[0] as PolicyCheck) : { type: 'or', checks };
  }
  function parseAnd(): PolicyCheck {
    const checks = [parseNot()];
    while (peek()?.kind === 'and') {
      index += 1;
      checks.push(parseNot());
    }
    return checks.length === 1 ? (checks[0] as PolicyCheck) : { type: 'and', checks };
  }
  function parseNot(): PolicyCheck {
    if (peek()?.kind !== 'not') return parseAtom();
    index += 1;
    return { type: 'not', check: parseNot() };
  }
  function parseAtom(): PolicyCheck {
    const token = peek();
    if (token?.kind === '(') {
      index += 1;
      const inner = parseOr();
      const close = peek();
      if (close?.kind !== ')') {
        const where = close?.at ?? text.length;
        fail(`expected ")" to close the "(" at column ${token.at + 1}, found ${describe(close)}`, where);
      }
      index += 1;
      return inner;
    }
    if (token?.kind === 'check') {
      index += 1;
      return parseCheck(token, fail);
    }
    if (token?.kind === 'string') fail(`a quoted string must be followed by ":" and a match`, token.at);
    return fail(`expected a check, "not" or "(", found ${describe(token)}`, token?.at ?? text.length);
  }

  const check = parseOr();
  const rest = peek();
  if (rest !== undefined) fail(`unexpected ${describe(rest)}`, rest.at);
  return check;
}

/** oslo.policy's tokenizer: split on whitespace, then peel leading "(" and trailing ")" off each word. */
function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  for (const word of text.matchAll(/\S+/g)) {
    let tok = word[0];
    let at = word.index;
    while (tok.startsWith('(')) {
      tokens.push({ kind: '(', text: '(', at });
      tok = tok.slice(1);
      at += 1;
    }
    if (tok === '') continue;
    const clean = tok.replace(/\)+$/, '');
    const lowered = clean.toLowerCase();
    if (lowered === 'and' || lowered === 'or' || lowered === 'not') {
      tokens.push({ kind: lowered, text: clean, at });
    } else if (clean !== '') {
      const quoted = tok.length >= 2 && (tok[0] === '"' || tok[0] === "'") && tok.at(-1) === tok[0];
      tokens.push(quoted ? { kind: 'string', text: tok, at } : { kind: 'check', text: clean, at });
      if (quoted) continue;
    }
    for (let i = clean.length; i < tok.length; i += 1) tokens.push({ kind: ')', text: ')', at: at + i });
  }
  return tokens;
}

function parseCheck(token: Token, fail: (what: string, at: number) => never): PolicyCheck {
  const { text, at } = token;
  if (text === '@') return { type: 'always' };
  if (text === '!') return { type: 'never' };
  let kind: string;
  let rest: string;
  let restAt: number;
  const quote = text[0];
  if (quote === '"' || quote === "'") {
    const end = text.indexOf(quote, 1);
    if (end < 0) fail(`unterminated ${quote} literal`, at);
    if (text[end + 1] !== ':') fail(`expected ":" after the quoted literal`, at + end + 1);
    kind = text.slice(0, end + 1);
    rest = text.slice(end + 2);
    restAt = at + end + 2;
  } else {
    const colon = text.indexOf(':');
    if (colon <= 0) fail(`expected a check of the form kind:match, "@" or "!", found ${JSON.stringify(text)}`, at);
    kind = text.slice(0, colon);
    rest = text.slice(colon + 1);
    restAt = at + colon + 1;
  }
  if (rest === '') fail(`nothing after "${kind}:"`, restAt);
  if (kind === 'rule') {
    if (rest.includes('%')) fail('a rule name cannot contain substitutions', restAt);
    return { type: 'rule', name: rest };
  }
  if (UNSUPPORTED_KINDS.has(kind)) fail(`${kind}: checks (remote policy servers) are not supported`, at);
  const match = parseTemplate(rest, restAt, fail);
  if (kind === 'role') return { type: 'role', match };
  const literal = literalValue(kind);
  if (literal !== null) return { type: 'literal', value: literal, match };
  if (!/^[A-Za-z_][\w.]*$/.test(kind) || kind.split('.').includes('')) {
    fail(`${JSON.stringify(kind)} is neither a caller attribute nor a literal`, at);
  }
  return { type: 'attribute', path: kind.split('.'), match };
}

/** The string a Python literal (as `ast.literal_eval` reads it) compares as, or null if `kind` is not one. */
function literalValue(kind: string): string | null {
  const quote = kind[0];
  if ((quote === '"' || quote === "'") && kind.length >= 2 && kind.at(-1) === quote) return kind.slice(1, -1);
  if (kind === 'True' || kind === 'False' || kind === 'None') return kind;
  if (/^-?\d+$/.test(kind)) return BigInt(kind).toString();
  return null;
}

/** Python `%`-formatting with a mapping, restricted to `%(key)s` and `%%`. */
function parseTemplate(text: string, at: number, fail: (what: string, at: number) => never): Template {
  const parts: Template = [];
  let literal = '';
  let i = 0;
  while (i < text.length) {
    const percent = text.indexOf('%', i);
    if (percent < 0) {
      literal += text.slice(i);
      break;
    }
    literal += text.slice(i, percent);
    if (text[percent + 1] === '%') {
      literal += '%';
      i = percent + 2;
      continue;
    }
    const sub = /^%\(([^()]+)\)s/.exec(text.slice(percent));
    if (!sub) fail('expected %(key)s after "%"', at + percent);
    if (literal !== '') parts.push(literal);
    literal = '';
    parts.push({ key: sub![1] as string });
    i = percent + sub![0].length;
  }
  if (literal !== '') parts.push(literal);
  return parts;
}
