import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import { isLoopbackAddress } from './loopback.js';
import type { SendOutcome } from './send-file.js';

/** native/sendfile.c, built by `npm install` (node-gyp); absent where it did not build (then nothing uses it). */
interface SendfileBinding {
  start(
    outFd: number,
    inFd: number,
    offset: number,
    length: number,
    paused: boolean,
    growing: boolean,
    copy: boolean,
    done: (errno: number | null, sent: number, truncated: boolean, reached: boolean) => void,
  ): object;
  resume(job: object): void;
  extend(job: object, end: number, final: boolean): void;
  cancel(job: object): void;
  peek(fd: number, buffer: Buffer): number;
}

function loadBinding(): SendfileBinding | null {
  if (process.platform !== 'linux') return null;
  try {
    // Same relative path from src/streams/ and from dist/streams/.
    return createRequire(import.meta.url)('../../build/Release/sendfile.node') as SendfileBinding;
  } catch {
    return null;
  }
}

const binding = loadBinding();

/** Whether hits can go out through sendfile(2) here (Linux, and the addon built). */
export const SENDFILE_AVAILABLE = binding !== null;

/** The bytes of the last part of a range, sent only after `beforeLast` (the hit is recorded before it). */
const LAST_PART = 1 << 20;

const NOTHING = Buffer.alloc(0);

/** errnos of a client that went away: the transfer ends, nothing failed on our side. */
const GONE = new Set([32 /* EPIPE */, 104 /* ECONNRESET */, 110 /* ETIMEDOUT */]);

/** A plain TCP socket the kernel can write a file to, and its fd. */
export interface SendfileSocket {
  readonly socket: Socket;
  readonly fd: number;
  /**
   * The client is on this host (the kernel's loopback carries the bytes): the transfer copies through a buffer
   * instead of sendfile(2), which is faster and cheaper there (native/sendfile.c).
   */
  readonly loopback: boolean;
}

/** Whether a connection between these addresses stays on this host: a loopback address, or the host's own. */
export function isLoopbackPeer(remote: string | undefined, local: string | undefined): boolean {
  return remote !== undefined && (isLoopbackAddress(remote) || remote === local);
}

/**
 * The socket under `out` when the kernel can write to it directly: a plain TCP socket (TLS encrypts in user
 * space) whose fd libuv exposes, under a response whose head is sent and whose body is not chunked (a body of
 * unknown size goes out in chunks, and bytes written past the framing would corrupt it: the client reads image
 * bytes where it expects a chunk size). Null when there is none: the caller writes through the stream instead.
 */
export function plainSocketOf(out: Writable): SendfileSocket | null {
  // node:http's OutgoingMessage: `chunkedEncoding` is decided when the head is stored, so only a sent head tells.
  const response = out as Writable & { socket?: Socket | null; headersSent?: boolean; chunkedEncoding?: boolean };
  if (response.headersSent === false || response.chunkedEncoding === true) return null;
  const socket = response.socket;
  if (!binding || !socket || 'encrypted' in socket) return null;
  const fd = plainFd(socket);
  return fd === null ? null : { socket, fd, loopback: isLoopbackPeer(socket.remoteAddress, socket.localAddress) };
}

/**
 * The first bytes a client sent on `socket`, read without taking them off it (MSG_PEEK), so whoever gets the
 * connection afterwards still reads them all: up to `buffer.length`, waiting at most `waitMs` for the first
 * ones. Null when nothing came in time, or where the addon is not built (callers then do without).
 */
export async function peekRequest(socket: Socket, buffer: Buffer, waitMs: number): Promise<Buffer | null> {
  const target = binding ? plainFd(socket) : null;
  if (target === null) return null;
  const deadline = performance.now() + waitMs;
  for (;;) {
    const count = (binding as SendfileBinding).peek(target, buffer);
    if (count > 0) return buffer.subarray(0, count);
    if (count < 0 || socket.destroyed || performance.now() >= deadline) return null;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** `_handle.fd` is libuv's fd of a TCP handle: not public API, so it is checked rather than trusted. */
function plainFd(socket: Socket): number | null {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : null;
}

/**
 * Waits until everything written to `out` so far (the response head, earlier chunks) is in the kernel, so bytes
 * sendfile writes to the socket come after them. Resolves false when the socket went away meanwhile.
 */
export async function flushed(out: Writable & { flushHeaders?: () => void }, target: SendfileSocket): Promise<boolean> {
  out.flushHeaders?.();
  // Writes on a socket complete in order: once an empty one has, everything before it is in the kernel.
  await new Promise<void>((resolve) => target.socket.write(NOTHING, () => resolve()));
  return !target.socket.destroyed;
}

/** One sendfile job on its own thread: `done` says how many bytes went out and whether that was all of them. */
export interface Transfer {
  readonly job: object;
  readonly done: Promise<SendOutcome>;
}

/**
 * Starts sending `length` bytes at `start` of `fileFd` to the socket (after {@link flushed}). The job holds dups
 * of both fds, so the caller may close its file at once. A paused job waits for {@link resumeTransfer}. A socket
 * that closes cancels the job; `done` rejects only for a truncated file or a socket error that is not the
 * client leaving.
 */
export function startTransfer(target: SendfileSocket, fileFd: number, start: number, length: number, paused = false): Transfer {
  return transfer(target, fileFd, start, length, paused, false);
}

/**
 * A transfer of a file that is still being written: it sends bytes `start..end` as {@link extendTransfer} lets
 * it (at first none), on one thread for its whole life, and completes once its end is final and sent. `done`
 * reports the bytes sent; `complete` means every byte up to the final end.
 */
export function startFollowing(target: SendfileSocket, fileFd: number, start: number): Transfer {
  return transfer(target, fileFd, start, 0, false, true);
}

/** A following transfer may send up to file offset `end` (it never goes back); `final`: it ends there. */
export function extendTransfer(transfer: Transfer, end: number, final: boolean): void {
  (binding as SendfileBinding).extend(transfer.job, end, final);
}

function transfer(target: SendfileSocket, fileFd: number, start: number, length: number, paused: boolean, growing: boolean): Transfer {
  const native = binding as SendfileBinding;
  const { socket } = target;
  let settle!: (outcome: SendOutcome) => void;
  let fail!: (error: Error) => void;
  const done = new Promise<SendOutcome>((resolve, reject) => {
    settle = resolve;
    fail = reject;
  });
  done.catch(() => {}); // awaited by the caller, possibly later than it settles
  const onClose = () => native.cancel(job);
  const { fd, loopback } = target;
  const job = native.start(fd, fileFd, start, length, paused, growing, loopback, (errno, sent, truncated, reached) => {
    socket.off('close', onClose);
    if (truncated) {
      fail(new Error(`short read at byte ${start + sent} of a cached file: it was truncated while being served`));
    } else if (errno === null || GONE.has(errno) || socket.destroyed) {
      settle({ complete: errno === null && reached && !socket.destroyed, bytes: sent });
    } else {
      fail(Object.assign(new Error(`sendfile failed with errno ${errno}`), { errno }));
    }
  });
  socket.once('close', onClose);
  return { job, done };
}

export function resumeTransfer(transfer: Transfer): void {
  (binding as SendfileBinding).resume(transfer.job);
}

/** Stops a transfer at its next wake-up (a no-op once it ended); `done` then settles. */
export function stopTransfer(transfer: Transfer): void {
  (binding as SendfileBinding).cancel(transfer.job);
}

/** Stops a transfer (see {@link stopTransfer}) and waits for its thread to let go. */
export async function cancelTransfer(transfer: Transfer): Promise<void> {
  stopTransfer(transfer);
  await transfer.done.catch(() => {});
}

/**
 * Sends bytes `start..end` of the open file `fileFd` to the socket of `out` with sendfile(2) (no copy through user
 * space; a loopback client gets copies through a native buffer instead) and no JavaScript per chunk. `beforeLast`
 * runs before the last MiB goes out (as in sendFileRange). The caller ends `out` afterwards as after any body. Rejects when the file is shorter than the range or the socket
 * fails for a reason other than the client leaving.
 */
export async function sendFileBySendfile(
  fileFd: number,
  range: { start: number; end: number },
  out: Writable & { flushHeaders?: () => void },
  target: SendfileSocket,
  beforeLast: () => Promise<void>,
): Promise<SendOutcome> {
  const total = range.end - range.start + 1;
  if (!(await flushed(out, target))) return { complete: false, bytes: 0 };
  const lastStart = Math.max(range.start, range.end + 1 - LAST_PART);
  // Both parts start now, so both hold their own dup of the file: `beforeLast` may close the caller's fd (the
  // hit's record closes the file) before the last part is sent. The last part waits until it is resumed.
  const body = startTransfer(target, fileFd, range.start, lastStart - range.start);
  let last: Transfer;
  try {
    last = startTransfer(target, fileFd, lastStart, range.end + 1 - lastStart, true);
  } catch (error) {
    await cancelTransfer(body); // no thread for the last part (out of fds): the first must not run on alone
    throw error;
  }
  let bytes = 0;
  try {
    const sent = await body.done;
    bytes += sent.bytes;
    if (!sent.complete) return { complete: false, bytes };
    await beforeLast();
    resumeTransfer(last);
    const rest = await last.done;
    bytes += rest.bytes;
    if (!rest.complete) return { complete: false, bytes };
  } finally {
    await cancelTransfer(last); // a no-op once it ran; otherwise it lets its thread go
  }
  return { complete: bytes === total && !target.socket.destroyed, bytes };
}
