import { ConfigError } from './errors.js';

/**
 * One INI file as oslo.config reads it: section -> option -> every value the file gives it, in file order. The
 * maps (not plain objects) keep a key such as `__proto__` an ordinary key.
 */
export type IniSections = Map<string, Map<string, string[]>>;

/**
 * Parses INI text by oslo.config's rules (`oslo_config/iniparser.py` and `cfg.ConfigParser`), which is how
 * Glance reads every glance-api.conf, so a file means the same to us as to Glance:
 *
 * - A comment is a line whose first character is `#` or `;`. There are no inline comments: a value is verbatim
 *   after the `=`, so `image_cache_dir = /srv/a#b` and a password holding `;` or `#` survive (the `ini` package
 *   cut both).
 * - `key = value` or `key: value`, split at whichever of `=` and `:` comes first; key and value are stripped of
 *   surrounding whitespace, and one pair of matching quotes around the whole value (`"..."` or `'...'`) is removed.
 * - A line starting with a space or a tab continues the previous value (joined with a newline, its leading
 *   whitespace dropped); a blank line or any other line ends the value. An indented line with no value to
 *   continue is an error (oslo's "Unexpected continuation line").
 * - `[name]` starts a section. Names are case-insensitive (lower-cased) except `DEFAULT`, which must be written so:
 *   oslo.config's rule, so `[Database]` is `[database]` and `[default]` is not `[DEFAULT]`.
 * - A key given twice keeps every value here; callers use the last one, as oslo.config does for single options.
 * - Malformed lines are {@link ConfigError}s naming the file and the line number.
 *
 * `$option` substitution, which oslo.config does above the parser, is {@link substituteOptions}.
 */
export function parseIni(text: string, source: string): IniSections {
  const sections: IniSections = new Map();
  let section: Map<string, string[]> | undefined;
  let pending: { key: string; parts: string[]; lineNo: number; line: string } | undefined;

  const fail = (lineNo: number, what: string, line: string): never => {
    throw new ConfigError(`config file ${source} line ${lineNo}: ${what}: ${JSON.stringify(line)}`);
  };
  const flush = (): void => {
    if (!pending) return;
    if (!section) fail(pending.lineNo, 'Section must be started before assignment', pending.line);
    const values = section?.get(pending.key) ?? [];
    values.push(pending.parts.join('\n'));
    section?.set(pending.key, values);
    pending = undefined;
  };

  // A UTF-8 byte order mark (some editors write one) is not part of the first line. Python's universal newlines
  // end a line at \r\n, \n or a lone \r.
  const lines = text.replace(/^\uFEFF/, '').split(/\r\n|\n|\r/);
  for (const [index, raw] of lines.entries()) {
    const lineNo = index + 1;
    const line = raw.trimEnd();
    if (line === '') {
      flush();
      continue;
    }
    if (line.startsWith(' ') || line.startsWith('\t')) {
      if (!pending) fail(lineNo, 'Unexpected continuation line', line);
      pending?.parts.push(line.trimStart());
      continue;
    }
    flush();
    if (line.startsWith('[')) {
      if (!line.endsWith(']')) fail(lineNo, 'Invalid section (must end with ])', line);
      if (line.length <= 2) fail(lineNo, 'Empty section name', line);
      const name = normalizeSection(line.slice(1, -1));
      section = sections.get(name) ?? new Map<string, string[]>();
      sections.set(name, section);
    } else if (line.startsWith('#') || line.startsWith(';')) {
      continue;
    } else {
      const { key, value } = splitAssignment(line) ?? fail(lineNo, "No ':' or '=' found in assignment", line);
      if (key === '') fail(lineNo, 'Key cannot be empty', line);
      pending = { key, parts: [value], lineNo, line };
    }
  }
  flush();
  return sections;
}

/** oslo.config's `_normalize_group_name`: group names are case-insensitive, `DEFAULT` excepted. */
export function normalizeSection(name: string): string {
  return name === 'DEFAULT' ? name : name.toLowerCase();
}

/** `key = value` / `key: value` at the first `=` or `:`, stripped, one pair of enclosing quotes removed. */
function splitAssignment(line: string): { key: string; value: string } | null {
  const colon = line.indexOf(':');
  const equal = line.indexOf('=');
  if (colon < 0 && equal < 0) return null;
  const at = colon < 0 || (equal >= 0 && equal < colon) ? equal : colon;
  let value = line.slice(at + 1).trim();
  const first = value[0];
  if ((first === '"' || first === "'") && value.endsWith(first)) value = value.slice(1, -1);
  return { key: line.slice(0, at).trim(), value };
}

/**
 * oslo.config's template syntax (`string.Template` with `idpattern = [_a-z][._a-z0-9]*`, case-insensitive):
 * `$$` is a literal `$`, `$name` and `${name}` a reference, `${group.name}` one to another section; any other `$`
 * stays as it is (`safe_substitute`).
 */
const TEMPLATE = /\$(?:(\$)|([_a-z][._a-z0-9]*)|\{([_a-z][._a-z0-9]*)\})/gi;

/**
 * Substitutes option references in a value from a config file as oslo.config does (`ConfigOpts._substitute`):
 * `\$` is taken as `$$` first, `$$` gives `$`, and `$name` / `${name}` / `${group.name}` are replaced by what
 * `resolve` gives for the name. So a Glance config that writes a password `pa$$word` (oslo.config's escape) means
 * `pa$word` here too, and `image_cache_dir = $base/cache` follows `base`.
 */
export function substituteOptions(value: string, resolve: (reference: string) => string): string {
  return value.replaceAll('\\$', () => '$$').replace(TEMPLATE, (match, escaped?: string, named?: string, braced?: string) => {
    if (escaped) return '$';
    const reference = named ?? braced;
    return reference === undefined ? match : resolve(reference);
  });
}
