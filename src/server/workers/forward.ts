import { Agent, type IncomingMessage, request as httpRequest, type ServerResponse } from 'node:http';
import { pipeline } from 'node:stream';
import { ShuttingDownError } from '../../errors.js';
import { endToEnd } from '../../origin/proxy-headers.js';
import { errorBody, statusFor } from '../errors.js';

/**
 * A worker's way to the owner process: each request it does not serve itself goes to the owner's private socket
 * as it came (method, path, end-to-end headers, body) and the answer comes back as it went (status, headers,
 * body), both ways with back-pressure (`pipeline`). Only what a proxy must change changes: hop-by-hop fields
 * (RFC 9110 §7.6.1) are the connection's, `Expect` was answered by this server already, and `X-Forwarded-For`
 * / `X-Forwarded-Proto` say who called and over what (the owner trusts them from its workers only, so a
 * client's own values are replaced, never passed on).
 *
 * A client that goes away closes the owner's request (a fill then sees its consumer leave); an owner whose answer
 * breaks off mid-body breaks the client's response off too (a short body or a reset, never a complete wrong one).
 */
export class Forwarder {
  readonly #socketPath: string;
  readonly #agent: Agent;
  readonly #proto: 'http' | 'https';

  constructor(socketPath: string, proto: 'http' | 'https') {
    this.#socketPath = socketPath;
    this.#proto = proto;
    // Kept-alive connections: a request does not pay for a connect, and the owner sees few sockets.
    this.#agent = new Agent({ keepAlive: true, maxFreeSockets: 64 });
  }

  forward(req: IncomingMessage, res: ServerResponse): void {
    const headers = endToEnd(req.headers, DROPPED_REQUEST);
    headers['x-forwarded-for'] = req.socket.remoteAddress ?? '';
    headers['x-forwarded-proto'] = this.#proto;
    const upstream = httpRequest({
      socketPath: this.#socketPath,
      agent: this.#agent,
      method: req.method,
      path: req.url,
      headers,
    });
    res.once('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    upstream.once('response', (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.statusMessage, endToEnd(answer.headers, NONE));
      pipeline(answer, res, (error) => {
        if (error) upstream.destroy();
      });
    });
    upstream.once('error', (error) => {
      if (res.headersSent) {
        res.destroy(error); // mid-body: the client must see the body break off, not end short and "complete"
        return;
      }
      const refused = new ShuttingDownError(`the owner process of this worker cannot be reached (${error.message})`);
      const status = statusFor(refused);
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', connection: 'close' });
      res.end(JSON.stringify(errorBody(status, refused.code, refused.message)));
    });
    pipeline(req, upstream, (error) => {
      if (error) upstream.destroy(error);
    });
  }

  close(): void {
    this.#agent.destroy();
  }
}

const DROPPED_REQUEST: ReadonlySet<string> = new Set(['expect', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto']);
const NONE: ReadonlySet<string> = new Set();
