import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { PG_SKIP, pgQuery } from '../helpers/postgres.js';
import { downloadChecked, type ServeNode, testCluster } from '../helpers/serve-cluster.js';
import { until } from '../helpers/wait.js';

/**
 * Issue 12, item 1: the node that claimed a fill dies (SIGKILL) while two other `imgcache serve` processes read
 * its growing file. One of them takes the claim over and continues from the origin at the byte it holds (a range
 * request), the other joins it; both nodes' clients get the whole image, verified, and the origin sends the
 * image once plus what the dead node had fetched beyond the taker's offset, never a second whole copy.
 */

const SECRET = 'cluster-secret-for-takeover-tests';
const MIB = 1 << 20;
const SIZE = 32 * MIB;
const RATE_MIB = 16;

const readersOf = async (schema: string, node: ServeNode) =>
  (await pgQuery<{ n: number }>(`SELECT count(*)::int AS n FROM "${schema}".cluster_fills WHERE source_url = $1`, [node.url]))[0]?.n ?? 0;

describe('a fill whose claimant dies', { skip: PG_SKIP }, () => {
  it('is taken over by a node that read it, from the byte it holds, and every other client completes', { timeout: 120_000 }, async (t) => {
    const { origin, nodes, schema } = await testCluster(t, { count: 3, rateMiB: RATE_MIB, secret: SECRET });
    const [claimant, b, c] = nodes as [ServeNode, ServeNode, ServeNode];
    const image = origin.addImage(randomUUID(), SIZE, 21);
    const abort = AbortSignal.timeout(60_000);
    // The claimant's own client fails when it dies; it is not what this test checks.
    const first = downloadChecked(claimant, image, undefined, abort).catch((error: unknown) => error);
    await until(() => (origin.bytesById.get(image.id) ?? 0) > 0 || origin.log.length > 0 || origin.totalRequests > 0, 'the claimant to start fetching', 20_000);
    const readers = [b, c].flatMap((node) => [downloadChecked(node, image, undefined, abort), downloadChecked(node, image, undefined, abort)]);
    await until(async () => (await readersOf(schema, claimant)) === 2, 'both other nodes to read the claimant', 20_000);
    await new Promise((resolve) => setTimeout(resolve, 300)); // both have some bytes of it
    claimant.child.kill('SIGKILL');
    await claimant.exited;

    const downloads = await Promise.all(readers).catch((error: unknown) => {
      throw new Error(`${String(error)}\norigin body requests:\n${origin.logText()}\n${b.output().slice(-3000)}\n${c.output().slice(-3000)}`);
    });
    for (const d of downloads) assert.equal(d.md5, image.md5);
    assert.ok((await first) instanceof Error || true);

    const log = origin.logText();
    const requests = origin.requestsById.get(image.id) ?? 0;
    assert.equal(requests, 2, `one fetch by the claimant, one continuation by the node that took over:\n${log}`);
    const continuation = origin.log.find((r) => r.range !== null);
    assert.ok(continuation, `the taker asked for a range:\n${log}`);
    const from = Number(/bytes=(\d+)-/.exec(continuation.range ?? '')?.[1]);
    assert.ok(from > 0, `the continuation starts past byte 0:\n${log}`);
    assert.ok((origin.bytesById.get(image.id) ?? 0) < 2 * SIZE, `never a second whole copy:\n${log}`);
  });
});
