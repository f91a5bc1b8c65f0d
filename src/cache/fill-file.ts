import { type FileHandle, open } from 'node:fs/promises';

/**
 * A fill's `incomplete/` file as its consumers read it: one fd (sendfile takes it, positional reads share it),
 * open while the fill spools or anyone still reads. Readers keep it after the file was discarded.
 */
export class FillFile {
  #file: FileHandle | null = null;

  async open(path: string): Promise<void> {
    this.#file = await open(path, 'r');
  }

  /** The fd, or null when the fill has no file (a bypass, or it failed to open one) or it was closed. */
  get fd(): number | null {
    return this.#file?.fd ?? null;
  }

  /** Up to `length` bytes at `position`, in a new buffer (the consumer's stream owns it); null when there are none. */
  async read(position: number, length: number): Promise<Buffer | null> {
    if (!this.#file) return null;
    const buffer = Buffer.allocUnsafe(length);
    const { bytesRead } = await this.#file.read(buffer, 0, length, position);
    return bytesRead > 0 ? buffer.subarray(0, bytesRead) : null;
  }

  /** Closes the fd; never rejects. */
  async close(): Promise<void> {
    const file = this.#file;
    this.#file = null;
    await file?.close().catch(() => {});
  }
}
