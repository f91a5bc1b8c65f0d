import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import type { SendOutcome } from './send-file.js';

/** native/sendfile.c, built by `npm install` (node-gyp); absent where it did not build (then nothing uses it). */
interface SendfileBinding {
  start(
    outFd: number,
    inFd: number,
    offset: number,
    length: number,
    paused: boolean,
    done: (errno: number | null, sent: number, truncated: boolean) => void,
  ): object;
  resume(job: object): void;
  cancel(job: object): void;
}

/** One sendfile job on its own thread: `done` says how many bytes went out and whether that was all of them. */
function transfer(
  native: SendfileBinding,
  socket: Socket,
  socketFd: number,
  fileFd: number,
  start: number,
  length: number,
  paused: boolean,
): { job: object; done: Promise<SendOutcome> } {
  let settle!: (outcome: SendOutcome) => void;
  let fail!: (error: Error) => void;
  const done = new Promise<SendOutcome>((resolve, reject) => {
    settle = resolve;
    fail = reject;
  });
  done.catch(() => {}); // awaited by the caller, possibly later than it settles
  const onClose = () => native.cancel(job);
  const job = native.start(socketFd, fileFd, start, length, paused, (errno, sent, truncated) => {
    socket.off('close', onClose);
    if (truncated) {
      fail(new Error(`short read at byte ${start + sent} of a cached file: it was truncated while being served`));
    } else if (errno === null || GONE.has(errno) || socket.destroyed) {
      settle({ complete: errno === null && sent === length && !socket.destroyed, bytes: sent });
    } else {
      fail(Object.assign(new Error(`sendfile failed with errno ${errno}`), { errno }));
    }
  });
  socket.once('close', onClose);
  return { job, done };
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

/**
 * The socket under `out` when the kernel can write to it directly: a plain TCP socket (TLS encrypts in user
 * space) whose fd libuv exposes. Null when there is none: the caller writes through the stream instead.
 */
export function plainSocketOf(out: Writable): Socket | null {
  const socket = (out as Writable & { socket?: Socket | null }).socket;
  if (!binding || !socket || 'encrypted' in socket) return null;
  // `_handle.fd` is libuv's fd of a TCP handle: not public API, so it is checked rather than trusted.
  const handle = (socket as unknown as { _handle?: { fd?: unknown } })._handle;
  return handle && typeof handle.fd === 'number' && handle.fd >= 0 ? socket : null;
}

/**
 * Sends bytes `start..end` of the open file `fileFd` to the socket of `out` with sendfile(2): no copy through user
 * space and no JavaScript per chunk. The response's head is flushed first and the socket's own queue drained,
 * so the bytes follow it in order; `beforeLast` runs before the last MiB goes out (as in sendFileRange). The
 * caller ends `out` afterwards as after any body. Rejects when the file is shorter than the range or the socket
 * fails for a reason other than the client leaving.
 */
export async function sendFileBySendfile(
  fileFd: number,
  range: { start: number; end: number },
  out: Writable & { flushHeaders?: () => void },
  socket: Socket,
  beforeLast: () => Promise<void>,
): Promise<SendOutcome> {
  const native = binding as SendfileBinding;
  const total = range.end - range.start + 1;
  out.flushHeaders?.();
  // Writes on a socket complete in order: once an empty one has, the head and anything before it are in the kernel.
  await new Promise<void>((resolve) => socket.write(NOTHING, () => resolve()));
  if (socket.destroyed) return { complete: false, bytes: 0 };
  const lastStart = Math.max(range.start, range.end + 1 - LAST_PART);
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return { complete: false, bytes: 0 };
  // Both parts start now, so both hold their own dup of the file: `beforeLast` may close the caller's fd (the
  // hit's record closes the file) before the last part is sent. The last part waits until it is resumed.
  const body = transfer(native, socket, fd, fileFd, range.start, lastStart - range.start, false);
  let last: ReturnType<typeof transfer>;
  try {
    last = transfer(native, socket, fd, fileFd, lastStart, range.end + 1 - lastStart, true);
  } catch (error) {
    native.cancel(body.job); // no thread for the last part (out of fds): the first must not run on alone
    await body.done.catch(() => {});
    throw error;
  }
  let bytes = 0;
  try {
    const sent = await body.done;
    bytes += sent.bytes;
    if (!sent.complete) return { complete: false, bytes };
    await beforeLast();
    native.resume(last.job);
    const rest = await last.done;
    bytes += rest.bytes;
    if (!rest.complete) return { complete: false, bytes };
  } finally {
    native.cancel(last.job); // a no-op once it ran; otherwise it lets its thread go
    await last.done.catch(() => {});
  }
  return { complete: bytes === total && !socket.destroyed, bytes };
}
