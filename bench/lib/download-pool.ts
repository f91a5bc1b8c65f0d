import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import type { Download, ServeNode } from '../../test/helpers/serve-cluster.js';

/**
 * The bench's clients, on worker threads: every body is still checked while it streams (length and SHA-256, never
 * buffered), but not on the bench's main thread, which also runs the rate-limited origin. Nine clients of 1 GiB
 * checked on one thread (fetch and web streams) ran at ~240 MiB/s together: the storm's slowest client measured
 * the bench, not the cluster. With node:http on one thread per core each client still cost 1.4-1.7 CPU s per GiB
 * (a buffer and a stream chunk per socket read), and the nine together as much CPU as the three nodes: on two
 * cores the storm row measured the clients. They now read with the HTTP client imgcache reads its origins with
 * (dist/origin/direct-get.js: each socket read lands in one of two reused buffers and is hashed in place), which
 * leaves SHA-256's own cost (~0.6 s per GiB) and the kernel's copy.
 */

/** CommonJS, evaluated (no loader, no file): GET, count, SHA-256, answer with what was seen. */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const modules = Promise.all([import(workerData.directGet), import(workerData.directBody)]);
parentPort.on('message', ({ id, url, idleMs }) => {
  const abort = new AbortController();
  const idle = setTimeout(() => abort.abort(new Error('no byte for ' + idleMs + ' ms')), idleMs);
  (async () => {
    const [{ directGet }, { directBodyOf }] = await modules;
    const response = await directGet({ url: new URL(url), headers: {}, timeoutMs: idleMs, tls: {}, signal: abort.signal });
    if (response.statusCode !== 200) {
      response.body.destroy();
      throw new Error('answered ' + response.statusCode);
    }
    const sha256 = createHash('sha256');
    let bytes = 0;
    await directBodyOf(response.body).pipeTo((view) => {
      sha256.update(view);
      bytes += view.length;
      idle.refresh();
    });
    const status = response.headers['x-cache-status'];
    return { id, bytes, sha256: sha256.digest('hex'), status: typeof status === 'string' ? status : 'none' };
  })().then(
    (answer) => parentPort.postMessage(answer),
    (error) => parentPort.postMessage({ id, error: String(error) }),
  ).finally(() => clearTimeout(idle));
});
`;

/** The built client the workers read with (`npm run build` first, as for the nodes). */
const DIST = new URL('../../dist/', import.meta.url);

/** What one checked download saw: `Download` of test/helpers/serve-cluster.ts, checked by SHA-256 here. */
export type BenchDownload = Omit<Download, 'md5'> & { sha256: string };

interface Answer {
  id: number;
  error?: string;
  bytes?: number;
  sha256?: string;
  status?: string;
}

export class DownloadPool {
  readonly #workers: Worker[];
  readonly #waiting = new Map<number, (answer: Answer) => void>();
  #next = 0;

  constructor(threads: number) {
    this.#workers = Array.from({ length: Math.max(1, threads) }, () => {
      const worker = new Worker(WORKER_SOURCE, {
        eval: true,
        workerData: {
          directGet: new URL('origin/direct-get.js', DIST).href,
          directBody: new URL('streams/direct-body.js', DIST).href,
        },
      });
      worker.on('message', (answer: Answer) => {
        this.#waiting.get(answer.id)?.(answer);
        this.#waiting.delete(answer.id);
      });
      worker.unref();
      return worker;
    });
  }

  /** `downloadChecked` of test/helpers/serve-cluster.ts, on a worker thread. Rejects on a status, length or digest. */
  async download(
    node: ServeNode,
    image: { id: string; size: number; sha256: string },
    startedAt = performance.now(),
    idleMs = 60_000,
  ): Promise<BenchDownload> {
    const id = this.#next++;
    const worker = this.#workers[id % this.#workers.length] as Worker;
    const answer = await new Promise<Answer>((resolve) => {
      this.#waiting.set(id, resolve);
      worker.postMessage({ id, url: `${node.url}/v2/images/${image.id}/file`, idleMs });
    });
    const ms = performance.now() - startedAt;
    if (answer.error !== undefined) throw new Error(`${node.name}: GET ${image.id}: ${answer.error}`);
    if (answer.bytes !== image.size || answer.sha256 !== image.sha256) {
      throw new Error(
        `${node.name}: ${image.id} came back with ${answer.bytes} B (sha256 ${answer.sha256}), ` +
          `not ${image.size} B (sha256 ${image.sha256})`,
      );
    }
    return { node: node.name, id: image.id, bytes: answer.bytes, sha256: answer.sha256, status: answer.status ?? 'none', ms };
  }

  async close(): Promise<void> {
    await Promise.all(this.#workers.map((worker) => worker.terminate()));
  }
}
