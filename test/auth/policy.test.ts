import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Identity } from '../../src/auth/identity.js';
import { NoAuthAuthenticator } from '../../src/auth/noauth.js';
import { DEFAULT_POLICY_RULES, PolicyEnforcer } from '../../src/auth/policy.js';
import { ConfigError, ForbiddenError, ImageCacheError } from '../../src/errors.js';

const who = (roles: string[], projectId: string | null = 'p1', userId: string | null = 'u1'): Identity => ({
  userId,
  projectId,
  roles,
  isAdmin: roles.some((role) => role.toLowerCase() === 'admin'),
});

/** Evaluates `rule` as the policy `subject` for `identity` and `target`. */
function allows(rule: string, identity: Identity, target: Record<string, unknown> = {}, extra = {}): boolean {
  return new PolicyEnforcer({ ...extra, subject: rule }).check('subject', identity, target);
}

const OWNER_OR_ADMIN = 'role:admin or (project_id:%(project_id)s and role:member)';
const CACHE_ACTIONS = ['manage_image_cache', 'cache_list', 'cache_image', 'cache_delete', 'cache_clean', 'cache_prune'];

describe('policy language', () => {
  const table: Array<[string, string, Identity, Record<string, unknown>, boolean]> = [
    // [what, rule, identity, target, allowed]
    ['the empty rule always passes', '', who([]), {}, true],
    ['a blank rule always passes', '   ', who([]), {}, true],
    ['@ always passes', '@', who([]), {}, true],
    ['! never passes', '!', who(['admin']), {}, false],
    ['role matches', 'role:admin', who(['admin']), {}, true],
    ['role does not match', 'role:admin', who(['member']), {}, false],
    ['role compares case-insensitively', 'role:ADMIN', who(['Admin']), {}, true],
    ['role from the target', 'role:%(needed)s', who(['member']), { needed: 'member' }, true],
    ['role from a missing target key', 'role:%(needed)s', who(['member']), {}, false],
    ['project_id from the target', 'project_id:%(project_id)s', who([], 'p1'), { project_id: 'p1' }, true],
    ['project_id of another project', 'project_id:%(project_id)s', who([], 'p1'), { project_id: 'p2' }, false],
    ['project_id with the key missing', 'project_id:%(project_id)s', who([], 'p1'), {}, false],
    ['project_id null never matches null', 'project_id:%(project_id)s', who([], null), { project_id: null }, false],
    ['tenant is an alias of project_id', 'tenant:%(owner)s', who([], 'p1'), { owner: 'p1' }, true],
    ['user_id literal', 'user_id:u1', who([], 'p1', 'u1'), {}, true],
    ['user_id literal, other user', 'user_id:u2', who([], 'p1', 'u1'), {}, false],
    ['is_admin:True for an admin', 'is_admin:True', who(['admin']), {}, true],
    ['is_admin:True for a member', 'is_admin:True', who(['member']), {}, false],
    ['is_admin:False for a member', 'is_admin:False', who(['member']), {}, true],
    ['roles as a list attribute', 'roles:member', who(['reader', 'member']), {}, true],
    ['an unknown attribute never matches', 'domain.id:d1', who(['admin']), {}, false],
    ["'single' quoted literal equals the target", "'test_1234':%(x_test_key)s", who([]), { x_test_key: 'test_1234' }, true],
    ['"double" quoted literal equals the target', '"test_1234":%(x_test_key)s', who([]), { x_test_key: 'test_1234' }, true],
    ['quoted literal differs', "'test_1234':%(x_test_key)s", who([]), { x_test_key: 'other' }, false],
    ['quoted literal with a colon inside', "'a:b':%(k)s", who([]), { k: 'a:b' }, true],
    ['True literal against a boolean target', 'True:%(flag)s', who([]), { flag: true }, true],
    ['integer literal against a number target', '42:%(n)s', who([]), { n: 42 }, true],
    ['template with literal text and two keys', 'project_id:%(a)s-%(b)s', who([], 'x-y'), { a: 'x', b: 'y' }, true],
    ['%% is a literal percent sign', 'project_id:100%%', who([], '100%'), {}, true],
    ['not', 'not role:admin', who(['member']), {}, true],
    ['not not', 'not not role:admin', who(['admin']), {}, true],
    ['keywords are case-insensitive', 'role:a OR role:b', who(['b']), {}, true],
    ['and binds tighter than or (a)', 'role:a or role:b and role:c', who(['a']), {}, true],
    ['and binds tighter than or (b)', 'role:b and role:c or role:a', who(['a']), {}, true],
    ['parentheses override precedence', '(role:a or role:b) and role:c', who(['a']), {}, false],
    ['not binds tighter than and', 'not role:a and role:b', who(['a', 'b']), {}, false],
    ['not binds tighter than and (b)', 'not role:a and role:b', who(['b']), {}, true],
    ['not of a parenthesised and', 'not (role:a and role:b)', who(['a']), {}, true],
    ['nested parentheses stuck to checks', '((role:a)) and (not (role:b))', who(['a']), {}, true],
    ['and of three', 'role:a and role:b and role:c', who(['a', 'b']), {}, false],
    ['or of three', 'role:a or role:b or role:c', who(['c']), {}, true],
    ['Glance owner-or-admin', OWNER_OR_ADMIN, who(['member'], 'p1'), { project_id: 'p1' }, true],
    ['Glance owner-or-admin, reader', OWNER_OR_ADMIN, who(['reader'], 'p1'), { project_id: 'p1' }, false],
    ['Glance owner-or-admin, admin elsewhere', OWNER_OR_ADMIN, who(['admin'], 'p9'), { project_id: 'p1' }, true],
  ];
  for (const [what, rule, identity, target, expected] of table) {
    it(`${what}: ${JSON.stringify(rule)} → ${expected ? 'allowed' : 'denied'}`, () => {
      assert.equal(allows(rule, identity, target), expected);
    });
  }

  it('follows rule: references to defaults and to custom rules', () => {
    const extra = { is_owner: 'project_id:%(project_id)s', owner_or_admin: 'rule:context_is_admin or rule:is_owner' };
    assert.equal(allows('rule:owner_or_admin', who(['member'], 'p1'), { project_id: 'p1' }, extra), true);
    assert.equal(allows('rule:owner_or_admin', who(['member'], 'p1'), { project_id: 'p2' }, extra), false);
    assert.equal(allows('rule:owner_or_admin', who(['admin'], 'p9'), { project_id: 'p2' }, extra), true);
    assert.equal(allows('not rule:context_is_admin', who(['admin']), {}), false);
  });

  const parseErrors: Array<[string, RegExp]> = [
    ['role:admin or', /expected a check, "not" or "\(", found the end of the rule at column 14/],
    ['(role:admin', /expected "\)" to close the "\(" at column 1, found the end of the rule at column 12/],
    ['role:admin)', /unexpected "\)" at column 11/],
    ['role:admin role:member', /unexpected "role:member" at column 12/],
    ['and role:admin', /expected a check, "not" or "\(", found "and" at column 1/],
    ['()', /found "\)" at column 2/],
    ['not', /found the end of the rule at column 4/],
    ['admin', /expected a check of the form kind:match, "@" or "!", found "admin" at column 1/],
    [':admin', /kind:match/],
    ['role:', /nothing after "role:" at column 6/],
    ['rule:', /nothing after "rule:"/],
    ["'unterminated:x", /unterminated ' literal at column 1/],
    ["'lit'", /a quoted string must be followed by ":" and a match at column 1/],
    ["'lit'x:y", /expected ":" after the quoted literal at column 6/],
    ['https://policy.example.com', /https: checks \(remote policy servers\) are not supported/],
    ['project_id:%(project_id)d', /expected %\(key\)s after "%" at column 12/],
    ['project_id:50%', /expected %\(key\)s/],
    ['rule:%(x)s', /a rule name cannot contain substitutions/],
    ['a-b:c', /"a-b" is neither a caller attribute nor a literal/],
  ];
  for (const [rule, expected] of parseErrors) {
    it(`rejects ${JSON.stringify(rule)} with a ConfigError naming the rule and the column`, () => {
      assert.throws(
        () => new PolicyEnforcer({ my_rule: rule }),
        (error: unknown) => {
          assert.ok(error instanceof ConfigError);
          assert.match(error.message, /^policy rule "my_rule": /);
          assert.match(error.message, expected);
          assert.ok(error.message.includes(JSON.stringify(rule)), 'quotes the rule');
          return true;
        },
      );
    });
  }

  it('rejects rule: cycles when the rules are loaded', () => {
    assert.throws(() => new PolicyEnforcer({ a: 'rule:b', b: 'rule:a' }), {
      name: 'ConfigError',
      message: 'policy rules reference each other in a cycle: a -> b -> a',
    });
    assert.throws(() => new PolicyEnforcer({ a: 'role:x or rule:a' }), /cycle: a -> a/);
    assert.throws(
      () => new PolicyEnforcer({ manage_image_cache: 'not (role:x and rule:cache_list)' }),
      /cycle: (manage_image_cache -> cache_list -> manage_image_cache|cache_list -> manage_image_cache -> cache_list)/,
    );
  });

  it('rejects a rule this server uses that references an undefined rule, but tolerates unused ones', () => {
    assert.throws(
      () => new PolicyEnforcer({ download_image: 'rule:admin_or_owner' }),
      /policy rule "download_image" uses rule:admin_or_owner, which is not defined/,
    );
    assert.throws(
      () => new PolicyEnforcer({ manage_image_cache: 'rule:nope' }),
      /policy rule "manage_image_cache" \(which cache_list uses\) uses rule:nope|policy rule "manage_image_cache" uses rule:nope/,
    );
    // A policy file copied from Glance has rules for the whole Images API; the ones we never evaluate may
    // reference rules we do not define (oslo.policy denies such a reference at run time).
    const enforcer = new PolicyEnforcer({ add_image: 'rule:default' });
    assert.equal(enforcer.check('add_image', who(['admin'])), false);
  });

  it('rejects an override that is not a string', () => {
    assert.throws(() => new PolicyEnforcer({ cache_list: 42 as unknown as string }), /policy rule "cache_list" must be a string/);
  });
});

describe('policy enforcer', () => {
  const admin = who(['admin']);
  const member = who(['member']);

  it('ships Glance names: the cache actions for admins only, downloads and deletes for anyone', () => {
    const enforcer = new PolicyEnforcer({});
    for (const action of [...CACHE_ACTIONS, 'list_cached_nodes']) {
      assert.equal(enforcer.check(action, admin), true, action);
      assert.equal(enforcer.check(action, member), false, action);
    }
    assert.equal(enforcer.check('download_image', who([], null, null)), true);
    assert.equal(enforcer.check('delete_image', member), true);
    assert.equal(DEFAULT_POLICY_RULES['context_is_admin'], 'role:admin');
  });

  it('enforce throws ForbiddenError (403) naming the action', () => {
    const enforcer = new PolicyEnforcer({});
    assert.doesNotThrow(() => enforcer.enforce('cache_list', admin));
    assert.throws(() => enforcer.enforce('cache_list', member), (error: unknown) => {
      assert.ok(error instanceof ForbiddenError);
      assert.equal(error.code, 'ERR_FORBIDDEN');
      assert.equal(error.message, 'policy does not allow cache_list');
      return true;
    });
  });

  it('treats an unknown action as a programming error, not a 403', () => {
    const enforcer = new PolicyEnforcer({ custom: 'role:x' });
    assert.equal(enforcer.has('custom'), true);
    assert.equal(enforcer.check('custom', who(['x'])), true);
    for (const call of [() => enforcer.check('cache_lsit', admin), () => enforcer.enforce('cache_lsit', admin)]) {
      assert.throws(call, (error: unknown) => error instanceof Error && !(error instanceof ImageCacheError));
    }
  });

  it('scenario 57/82/83: "!" denies even an admin', () => {
    const enforcer = new PolicyEnforcer({ download_image: '!', cache_list: '!', cache_image: '!', cache_delete: '!' });
    for (const action of ['download_image', 'cache_list', 'cache_image', 'cache_delete']) {
      assert.throws(() => enforcer.enforce(action, admin), ForbiddenError, action);
    }
    assert.doesNotThrow(() => enforcer.enforce('delete_image', admin), 'DELETE still works');
    assert.doesNotThrow(() => enforcer.enforce('cache_prune', admin));
  });

  it('scenario 94: manage_image_cache "!" denies every cache rule that defaults to it', () => {
    const enforcer = new PolicyEnforcer({ manage_image_cache: '!' });
    for (const action of CACHE_ACTIONS) {
      assert.equal(enforcer.check(action, admin), false, action);
    }
  });

  it("scenario 59: role:admin or not ('test_1234':%(x_test_key)s and role:_member_)", () => {
    const enforcer = new PolicyEnforcer({
      download_image: "role:admin or not ('test_1234':%(x_test_key)s and role:_member_)",
    });
    const image = { x_test_key: 'test_1234', project_id: 'p1' };
    assert.throws(() => enforcer.enforce('download_image', who(['_member_']), image), ForbiddenError);
    assert.doesNotThrow(() => enforcer.enforce('download_image', who(['member']), image));
    assert.doesNotThrow(() => enforcer.enforce('download_image', who(['admin', '_member_']), image));
    assert.doesNotThrow(() => enforcer.enforce('download_image', who(['_member_']), { x_test_key: 'other' }));
  });

  it('scenario 89: list_cached_nodes role:admin allows admin; reader, member and no role are denied', async () => {
    const enforcer = new PolicyEnforcer({ list_cached_nodes: 'role:admin' });
    const noauth = new NoAuthAuthenticator();
    const expected: Array<[string, boolean]> = [['admin', true], ['reader', false], ['member', false], ['', false]];
    for (const [roles, allowed] of expected) {
      const identity = await noauth.authenticate({ 'x-roles': roles, 'x-project-id': 'p1' });
      assert.equal(enforcer.check('list_cached_nodes', identity), allowed, `X-Roles: ${roles}`);
    }
  });
});
