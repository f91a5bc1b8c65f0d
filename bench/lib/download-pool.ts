import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import type { Download, ServeNode } from '../../test/helpers/serve-cluster.js';

/**
 * The bench's clients, on worker threads: every body is still checked while it streams (length and SHA-256, never
 * buffered), but not on the bench's main thread, which also runs the rate-limited origin. Nine clients of 1 GiB
 * checked on one thread (fetch and web streams) ran at ~240 MiB/s together: the storm's slowest client measured
 * the bench, not the cluster. node:http and one thread per core keep the check below the origin's rate.
 */

/** CommonJS, evaluated (no loader, no file): GET, count, SHA-256, answer with what was seen. */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const http = require('node:http');
const { createHash } = require('node:crypto');
parentPort.on('message', ({ id, url, idleMs }) => {
  const fail = (error) => parentPort.postMessage({ id, error: String(error) });
  const req = http.get(url, { timeout: idleMs }, (res) => {
    if (res.statusCode !== 200) {
      res.resume();
      fail('answered ' + res.statusCode);
      return;
    }
    const sha256 = createHash('sha256');
    let bytes = 0;
    res.on('data', (chunk) => { sha256.update(chunk); bytes += chunk.length; });
    res.on('end', () => parentPort.postMessage({ id, bytes, sha256: sha256.digest('hex'), status: res.headers['x-cache-status'] || 'none' }));
    res.on('error', fail);
  });
  req.on('timeout', () => req.destroy(new Error('no byte for ' + idleMs + ' ms')));
  req.on('error', fail);
});
`;

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
      const worker = new Worker(WORKER_SOURCE, { eval: true });
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
