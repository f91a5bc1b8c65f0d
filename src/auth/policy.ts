import { ConfigError, ForbiddenError } from '../errors.js';
import type { Identity } from './identity.js';
import { parsePolicyRule, type PolicyCheck, type Template } from './policy-parser.js';

export { parsePolicyRule, type PolicyCheck, type Template } from './policy-parser.js';

/**
 * The cache's policies with Glance's names and the defaults this server ships (spec §4.5). An operator overrides
 * any of them (and may add rules for `rule:` to reference) with Glance's policy file syntax.
 */
export const DEFAULT_POLICY_RULES: Readonly<Record<string, string>> = Object.freeze({
  context_is_admin: 'role:admin',
  manage_image_cache: 'role:admin',
  cache_list: 'rule:manage_image_cache',
  cache_image: 'rule:manage_image_cache',
  cache_delete: 'rule:manage_image_cache',
  cache_clean: 'rule:manage_image_cache',
  cache_prune: 'rule:manage_image_cache',
  list_cached_nodes: 'rule:manage_image_cache',
  // Anyone authenticated who can see the image (the upstream decides visibility; bug 1235378 put this check on
  // the cache path too).
  download_image: '',
  // Glance's names for showing and listing images (its pre-2023 defaults: anyone authenticated); the Images API
  // imgcache serves itself for directory and http origins checks them. A glance origin's upstream decides.
  get_image: '',
  get_images: '',
  // The upstream decides; the cache only drops its copy after the upstream said yes.
  delete_image: '',
});

/** A caller attribute as oslo.policy's credentials dict names it (`context.to_policy_values()`). */
function credentialsOf(identity: Identity): Record<string, unknown> {
  return {
    user_id: identity.userId,
    project_id: identity.projectId,
    // Pre-Queens policy files say tenant:%(owner)s.
    tenant: identity.projectId,
    tenant_id: identity.projectId,
    roles: identity.roles,
    is_admin: identity.isAdmin,
  };
}

/**
 * Evaluates oslo.policy rules. Rules are parsed, and checked for `rule:` cycles and for references to rules that
 * do not exist (from the rules this server uses), when the enforcer is built, so a broken policy stops the server
 * at startup instead of denying (or allowing) at run time.
 *
 * Deliberate difference from oslo.policy: a caller attribute or target value that is null or missing never
 * matches, where oslo.policy compares Python's `'None'` strings (so a project-less caller would "own" an image
 * whose owner is None).
 */
export class PolicyEnforcer {
  readonly #rules = new Map<string, PolicyCheck>();

  constructor(overrides: Record<string, string> = {}) {
    const texts: Record<string, unknown> = { ...DEFAULT_POLICY_RULES, ...overrides };
    for (const [name, text] of Object.entries(texts)) {
      if (typeof text !== 'string') throw new ConfigError(`policy rule ${JSON.stringify(name)} must be a string`);
      this.#rules.set(name, parsePolicyRule(text, name));
    }
    this.#checkReferences();
  }

  /** Whether `action` names a rule (a default or an override). */
  has(action: string): boolean {
    return this.#rules.has(action);
  }

  /** Whether the policy allows `identity` to do `action` on `target`. An unknown action is a programming error. */
  check(action: string, identity: Identity, target: Record<string, unknown> = {}): boolean {
    const rule = this.#rules.get(action);
    if (rule === undefined) throw new Error(`no policy rule named ${JSON.stringify(action)}`);
    return this.#evaluate(rule, credentialsOf(identity), target);
  }

  /** Throws `ForbiddenError` (403) unless the policy allows `action`. */
  enforce(action: string, identity: Identity, target: Record<string, unknown> = {}): void {
    if (!this.check(action, identity, target)) throw new ForbiddenError(`policy does not allow ${action}`);
  }

  #evaluate(check: PolicyCheck, creds: Record<string, unknown>, target: Record<string, unknown>): boolean {
    switch (check.type) {
      case 'always':
        return true;
      case 'never':
        return false;
      case 'not':
        return !this.#evaluate(check.check, creds, target);
      case 'and':
        return check.checks.every((c) => this.#evaluate(c, creds, target));
      case 'or':
        return check.checks.some((c) => this.#evaluate(c, creds, target));
      case 'rule': {
        // Only reachable for rules no default uses; oslo.policy denies a reference to a missing rule.
        const rule = this.#rules.get(check.name);
        return rule !== undefined && this.#evaluate(rule, creds, target);
      }
      case 'role': {
        const role = substitute(check.match, target)?.toLowerCase();
        return role !== undefined && (creds['roles'] as string[]).some((r) => r.toLowerCase() === role);
      }
      case 'literal':
        return substitute(check.match, target) === check.value;
      case 'attribute': {
        const match = substitute(check.match, target);
        return match !== undefined && findInCredentials(creds, check.path, match);
      }
    }
  }

  /** `rule:` cycles anywhere, and references to missing rules from the rules this server evaluates. */
  #checkReferences(): void {
    const state = new Map<string, 'visiting' | 'done'>();
    const visit = (name: string, chain: string[]): void => {
      if (state.get(name) === 'done') return;
      if (state.get(name) === 'visiting') {
        const cycle = [...chain.slice(chain.indexOf(name)), name];
        throw new ConfigError(`policy rules reference each other in a cycle: ${cycle.join(' -> ')}`);
      }
      state.set(name, 'visiting');
      for (const ref of references(this.#rules.get(name))) {
        if (this.#rules.has(ref)) visit(ref, [...chain, name]);
      }
      state.set(name, 'done');
    };
    for (const name of this.#rules.keys()) visit(name, []);

    const seen = new Set<string>();
    const reach = (name: string, root: string): void => {
      if (seen.has(name)) return;
      seen.add(name);
      for (const ref of references(this.#rules.get(name))) {
        if (!this.#rules.has(ref)) {
          const via = name === root ? '' : ` (which ${root} uses)`;
          throw new ConfigError(`policy rule ${JSON.stringify(name)}${via} uses rule:${ref}, which is not defined`);
        }
        reach(ref, root);
      }
    };
    for (const name of Object.keys(DEFAULT_POLICY_RULES)) reach(name, name);
  }
}

function references(check: PolicyCheck | undefined): string[] {
  if (check === undefined) return [];
  switch (check.type) {
    case 'rule':
      return [check.name];
    case 'not':
      return references(check.check);
    case 'and':
    case 'or':
      return check.checks.flatMap(references);
    default:
      return [];
  }
}

/** `template % target` as Python would format it; undefined when a key is missing or null (oslo: KeyError → deny). */
function substitute(template: Template, target: Record<string, unknown>): string | undefined {
  let out = '';
  for (const part of template) {
    if (typeof part === 'string') {
      out += part;
      continue;
    }
    const value = Object.hasOwn(target, part.key) ? target[part.key] : undefined;
    if (value === undefined || value === null) return undefined;
    out += pythonStr(value);
  }
  return out;
}

/** oslo.policy's `_find_in_dict`: follow `path` through the credentials; a list matches if any element does. */
function findInCredentials(value: unknown, path: readonly string[], match: string): boolean {
  if (Array.isArray(value)) return value.some((item) => findInCredentials(item, path, match));
  if (path.length === 0) return value !== undefined && value !== null && pythonStr(value) === match;
  if (typeof value !== 'object' || value === null || !Object.hasOwn(value, path[0] as string)) return false;
  return findInCredentials((value as Record<string, unknown>)[path[0] as string], path.slice(1), match);
}

/** `str(value)` in Python, for the values a target or credentials dict holds. */
function pythonStr(value: unknown): string {
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  return JSON.stringify(value);
}
