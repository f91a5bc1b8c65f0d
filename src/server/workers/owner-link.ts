import { ShuttingDownError } from '../../errors.js';
import { isMessage, type OwnerMessage, type WorkerMessage } from './ipc.js';

type Call = Extract<WorkerMessage, { seq: number }>;
type Notice = Exclude<WorkerMessage, { seq: number }>;
type Answer = Extract<OwnerMessage, { seq: number }>;

/**
 * A worker's IPC channel to the owner process: calls that wait for their answer (matched by `seq`), notices that
 * do not, and the owner's commands (`connection` with its socket, `drain`, `reload-tls`) handed to `onCommand`. When the channel is gone
 * (the owner died), every call waiting and every later call rejects with {@link ShuttingDownError}.
 */
export class OwnerLink {
  readonly #pending = new Map<number, { resolve: (answer: Answer) => void; reject: (error: Error) => void }>();
  #seq = 1;

  constructor(onCommand: (command: Exclude<OwnerMessage, { seq: number }>, handle: unknown) => void) {
    process.on('message', (message: unknown, handle: unknown) => {
      if (!isMessage(message)) return;
      const msg = message as OwnerMessage;
      if ('seq' in msg) {
        const waiting = this.#pending.get(msg.seq);
        this.#pending.delete(msg.seq);
        waiting?.resolve(msg);
      } else {
        onCommand(msg, handle);
      }
    });
    process.once('disconnect', () => {
      for (const waiting of this.#pending.values()) waiting.reject(new ShuttingDownError('the owner process is gone'));
      this.#pending.clear();
    });
  }

  /** Sends `message` (its `seq` is set here) and resolves with the owner's answer. */
  call(message: DistributiveOmit<Call, 'seq'>): Promise<Answer> {
    const seq = this.#seq++;
    return new Promise((resolve, reject) => {
      if (!process.connected || !process.send) {
        reject(new ShuttingDownError('the owner process is gone'));
        return;
      }
      this.#pending.set(seq, { resolve, reject });
      process.send({ ...message, seq }, undefined, undefined, (error: Error | null) => {
        if (!error) return;
        this.#pending.delete(seq);
        reject(error);
      });
    });
  }

  /** Sends `message` and does not wait; lost when the owner is gone (it then has nothing left to count). */
  notify(message: Notice): void {
    if (!process.connected || !process.send) return;
    process.send(message, undefined, undefined, () => {});
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
