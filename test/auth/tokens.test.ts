import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { rename, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { TokensAuthenticator } from '../../src/auth/tokens.js';
import { ConfigError, ImageCacheError } from '../../src/errors.js';
import { tempDir } from '../helpers/tmp.js';

const ALICE = 'alice-token-6f1c2a9be07d';
const BOB = 'bob-token-91aa0c3fd254';
const CAROL = 'carol-token-0e7d55b2c1f8';
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

let bump = 0;
/** Writes the file and gives it an mtime no earlier write had, so the change is seen however coarse the clock. */
async function writeTokens(path: string, content: unknown): Promise<void> {
  await writeFile(path, typeof content === 'string' ? content : JSON.stringify(content));
  bump += 1;
  const when = new Date(Date.UTC(2026, 0, 1) + bump * 10_000);
  await utimes(path, when, when);
}

async function tokensFile(t: TestContext, content: unknown): Promise<string> {
  const path = join(await tempDir(t), 'tokens.json');
  await writeTokens(path, content);
  return path;
}

function open(t: TestContext, file: string, extra: { onReloadError?: (e: ConfigError) => void } = {}) {
  const clock = { now: 0 };
  const auth = new TokensAuthenticator({ file, now: () => clock.now, reloadCheckIntervalMs: 1000, ...extra });
  t.after(() => auth.close());
  return { auth, clock };
}

const withToken = (token: string) => ({ 'x-auth-token': token });

/** The ConfigError a broken file gives at startup; asserts it names the file and quotes no token. */
function startupError(file: string, secrets: string[] = [ALICE, BOB]): ConfigError {
  try {
    new TokensAuthenticator({ file });
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    assert.ok(error.message.includes(file), error.message);
    for (const secret of secrets) assert.ok(!error.message.includes(secret), `the message quotes a token: ${error.message}`);
    assert.ok(error.cause === undefined || !String((error.cause as Error).message).includes(ALICE));
    return error;
  }
  return assert.fail('expected a ConfigError');
}

async function unauthorized(promise: Promise<unknown>, token?: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ImageCacheError);
    assert.equal(error.code, 'ERR_UNAUTHORIZED');
    if (token) assert.ok(!error.message.includes(token));
    return true;
  });
}

describe('tokens file authentication', () => {
  it('maps a token in clear to its project, user and roles, and keeps the token for the upstream', async (t) => {
    const file = await tokensFile(t, {
      tokens: {
        [ALICE]: { project_id: 'p1', user_id: 'alice', roles: ['member', 'reader'] },
        [BOB]: { project_id: 'p2', roles: ['admin'], description: 'the operator' },
      },
    });
    const { auth } = open(t, file);
    assert.equal(auth.size, 2);
    assert.deepEqual(await auth.authenticate(withToken(ALICE)), {
      userId: 'alice',
      projectId: 'p1',
      roles: ['member', 'reader'],
      isAdmin: false,
      token: ALICE,
    });
    const bob = await auth.authenticate({ 'X-Auth-Token': BOB });
    assert.deepEqual([bob.userId, bob.projectId, bob.isAdmin], [null, 'p2', true]);
  });

  it('accepts tokens stored only as their SHA-256, in either case, next to tokens in clear', async (t) => {
    const file = await tokensFile(t, {
      sha256: { [sha256(ALICE)]: { project_id: 'p1', roles: ['member'] }, [sha256(BOB).toUpperCase()]: { roles: [] } },
      tokens: { [CAROL]: { project_id: 'p3' } },
    });
    const { auth } = open(t, file);
    assert.equal((await auth.authenticate(withToken(ALICE))).projectId, 'p1');
    assert.deepEqual((await auth.authenticate(withToken(BOB))).roles, []);
    assert.equal((await auth.authenticate(withToken(CAROL))).projectId, 'p3');
  });

  it('answers 401 for a missing, unknown, repeated or malformed token without quoting it', async (t) => {
    const { auth } = open(t, await tokensFile(t, { tokens: { [ALICE]: { roles: [] } } }));
    await unauthorized(auth.authenticate({}));
    await unauthorized(auth.authenticate(withToken('')));
    await unauthorized(auth.authenticate(withToken(`${ALICE}x`)), `${ALICE}x`);
    await unauthorized(auth.authenticate(withToken(ALICE.slice(0, -1))), ALICE.slice(0, -1));
    await unauthorized(auth.authenticate({ 'x-auth-token': [ALICE, BOB] }), ALICE);
    await unauthorized(auth.authenticate(withToken('tab\there')));
    assert.equal((await auth.authenticate({ 'x-auth-token': [ALICE, ALICE] })).token, ALICE);
  });

  it('sees an edit of the file after the check interval: new tokens work, removed ones stop working', async (t) => {
    const file = await tokensFile(t, { tokens: { [ALICE]: { roles: ['member'] } } });
    const { auth, clock } = open(t, file);
    await auth.authenticate(withToken(ALICE));
    await writeTokens(file, { tokens: { [BOB]: { roles: ['admin'] } } });
    clock.now += 500;
    assert.equal((await auth.authenticate(withToken(ALICE))).token, ALICE, 'not re-checked within the interval');
    clock.now += 600;
    await unauthorized(auth.authenticate(withToken(ALICE)));
    assert.equal((await auth.authenticate(withToken(BOB))).isAdmin, true);
  });

  it('sees a file replaced by rename, as editors and config management write it', async (t) => {
    const file = await tokensFile(t, { tokens: { [ALICE]: { roles: [] } } });
    const { auth, clock } = open(t, file);
    const next = `${file}.new`;
    await writeTokens(next, { sha256: { [sha256(BOB)]: { roles: [] } } });
    await rename(next, file);
    clock.now += 1000;
    assert.equal((await auth.authenticate(withToken(BOB))).token, BOB);
    await unauthorized(auth.authenticate(withToken(ALICE)));
  });

  it('keeps the last good tokens when an edit breaks the file, reports it once, and loads the fix', async (t) => {
    const file = await tokensFile(t, { tokens: { [ALICE]: { roles: [] } } });
    const errors: ConfigError[] = [];
    const { auth, clock } = open(t, file, { onReloadError: (e) => errors.push(e) });
    await writeTokens(file, `{ "tokens": { "${BOB}": { "roles": [] }, } }`);
    for (let i = 0; i < 3; i += 1) {
      clock.now += 1000;
      assert.equal((await auth.authenticate(withToken(ALICE))).token, ALICE);
    }
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof ConfigError);
    assert.match(errors[0].message, /not valid JSON/);
    assert.ok(!errors[0].message.includes(BOB));
    await rm(file);
    clock.now += 1000;
    assert.equal((await auth.authenticate(withToken(ALICE))).token, ALICE);
    assert.equal(errors.length, 2);
    assert.match(errors[1]!.message, /cannot read the tokens file \(no such file\)/);
    await writeTokens(file, { tokens: { [BOB]: { roles: [] } } });
    clock.now += 1000;
    assert.equal((await auth.authenticate(withToken(BOB))).token, BOB);
    await unauthorized(auth.authenticate(withToken(ALICE)));
  });

  it('refuses to start on a missing file, naming it', async (t) => {
    const file = join(await tempDir(t), 'absent.json');
    assert.match(startupError(file).message, /auth_tokens_file .*absent\.json: cannot read the tokens file \(no such file\)/);
  });

  it('refuses to start on broken JSON, saying where without quoting the text', async (t) => {
    const broken = await tokensFile(t, `{\n  "tokens": {\n    "${ALICE}" { "roles": [] }\n  }\n}`);
    assert.match(startupError(broken).message, /not valid JSON at line 3, column \d+/);
    const trailing = await tokensFile(t, `{ "tokens": { "${ALICE}": { "roles": [] }, } }`);
    assert.match(startupError(trailing).message, /not valid JSON/);
    const truncated = await tokensFile(t, `{ "tokens": { "${ALICE}": `);
    assert.match(startupError(truncated).message, /ends too early/);
  });

  it('refuses to start on a file of the wrong shape, naming the entry by position, never by token', async (t) => {
    const cases: Array<[unknown, RegExp]> = [
      [[], /must be a JSON object/],
      [{}, /neither a "tokens" nor a "sha256" object/],
      [{ [ALICE]: { roles: [] } }, /1 top-level key\(s\) other than "tokens" and "sha256"/],
      [{ tokens: [] }, /"tokens" must be an object/],
      [{ tokens: { [BOB]: { roles: [] }, [ALICE]: { roles: 'admin' } } }, /tokens entry 2: roles: .*expected array/],
      [{ tokens: { [ALICE]: { roles: [], role: 'x' } } }, /tokens entry 1: .*role/],
      [{ tokens: { [ALICE]: { project_id: 7 } } }, /tokens entry 1: project_id/],
      [{ tokens: { [ALICE]: 'admin' } }, /tokens entry 1: entry: .*expected object/],
      [{ tokens: { 'has space': {} } }, /tokens entry 1: a token must be 1 to 8192 visible ASCII characters/],
      [{ sha256: { abc: {} } }, /sha256 entry 1: the key must be the 64 hex digits/],
      [{ tokens: { [ALICE]: {} }, sha256: { [sha256(ALICE)]: {} } }, /sha256 entry 1 is the same token as tokens entry 1/],
    ];
    for (const [content, expected] of cases) {
      const file = await tokensFile(t, content);
      assert.match(startupError(file).message, expected, JSON.stringify(content));
    }
  });

  it('accepts an empty table: every token is refused', async (t) => {
    const { auth } = open(t, await tokensFile(t, { tokens: {} }));
    assert.equal(auth.size, 0);
    await unauthorized(auth.authenticate(withToken(ALICE)));
  });
});
