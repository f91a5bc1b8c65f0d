import type { Stats } from 'node:fs';
import { type FileHandle, open, readdir, readFile, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { addAbortSignal, type Readable } from 'node:stream';
import { ImageNotFoundError, ImageStateError, OriginError } from '../errors.js';
import type { ImageRecord, Origin, OriginCaller } from './origin.js';
import { looksLikeImageId } from '../image-id.js';
import { checkImageId, IMAGE_CHUNK_BYTES, isJsonObject, toImageRecord } from './record.js';

/** Options of a {@link DirectoryOrigin}. */
export interface DirectoryOriginOptions {
  /** Bytes per chunk read from an image file (`highWaterMark`). @default 1 MiB */
  chunkSize?: number;
}

/** The suffix of a sidecar file; an id ending in it names a sidecar, never an image. */
const SIDECAR = '.json';

/**
 * `directory:PATH`: image files named by image id in one directory (no subdirectories), for tests, air-gapped
 * sites and seeding a cache. An optional sidecar `<id>.json` holds Glance image fields (`status`, `size`,
 * `checksum`, `os_hash_algo`, `os_hash_value`, `visibility`, `owner`, and any extra property). Without one, the
 * image is `active`, its size is the file's, and it has no checksums (so it is cached unverified). A sidecar
 * alone (no data file) describes an image without data, e.g. a `queued` one.
 *
 * The directory has no notion of callers: everyone sees every image.
 */
export class DirectoryOrigin implements Origin {
  readonly kind = 'directory' as const;
  readonly authorizesCallers = false;
  readonly description: string;
  /** Absolute path of the directory. */
  readonly root: string;
  readonly #chunkSize: number;

  constructor(root: string, options: DirectoryOriginOptions = {}) {
    this.root = resolve(root);
    this.description = `directory:${this.root}`;
    this.#chunkSize = options.chunkSize ?? IMAGE_CHUNK_BYTES;
  }

  async getImage(imageId: string, _caller: OriginCaller): Promise<ImageRecord> {
    const id = this.#checkId(imageId);
    const [sidecar, data] = await Promise.all([this.#readSidecar(id), this.#statData(id)]);
    if (sidecar === null && data === null) return this.#notFound(id);
    // Glance's timestamps, when the sidecar gives none: the data file's (or the sidecar's) modification time.
    const modified = data?.mtime ?? (await stat(`${this.#path(id)}${SIDECAR}`).catch(() => null))?.mtime;
    const times = modified ? { created_at: isoSeconds(modified), updated_at: isoSeconds(modified) } : {};
    try {
      return toImageRecord(id, { ...times, ...sidecar }, { status: 'active', size: data?.size ?? null });
    } catch (error) {
      throw new OriginError(`directory origin: ${this.#path(id)}${SIDECAR}: ${(error as Error).message}`, null, {
        cause: error,
      });
    }
  }

  /**
   * Every image in the directory: each data file and each sidecar without one, named by a valid id. An image
   * whose sidecar is broken is left out rather than failing the whole list (showing it reports the error).
   */
  async listImages(): Promise<ImageRecord[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch (error) {
      throw new OriginError(`directory origin: cannot list ${this.root}: ${(error as Error).message}`, null, {
        cause: error,
      });
    }
    const ids = new Set<string>();
    for (const name of names) {
      const id = name.toLowerCase().endsWith(SIDECAR) ? name.slice(0, -SIDECAR.length) : name;
      if (looksLikeImageId(id) && !id.toLowerCase().endsWith(SIDECAR)) ids.add(id);
    }
    const records: ImageRecord[] = [];
    for (const id of ids) {
      try {
        records.push(await this.getImage(id, {}));
      } catch (error) {
        if (!(error instanceof ImageNotFoundError || error instanceof OriginError)) throw error;
      }
    }
    return records;
  }

  async openImage(imageId: string, _caller: OriginCaller, signal: AbortSignal): Promise<Readable> {
    return this.#open(imageId, signal, {});
  }

  /** A positioned read of the file: no bytes before or after the range are read. */
  async openImageRange(
    imageId: string,
    _caller: OriginCaller,
    range: { start: number; end: number },
    signal: AbortSignal,
  ): Promise<Readable> {
    return this.#open(imageId, signal, range);
  }

  async #open(imageId: string, signal: AbortSignal, range: { start?: number; end?: number }): Promise<Readable> {
    signal.throwIfAborted();
    const id = this.#checkId(imageId);
    let handle: FileHandle;
    try {
      handle = await open(this.#path(id), 'r');
    } catch (error) {
      if (!isMissing(error)) throw this.#ioError(id, error);
      return this.#noData(id);
    }
    try {
      if (!(await handle.stat()).isFile()) throw new ImageNotFoundError(id);
      signal.throwIfAborted();
    } catch (error) {
      await handle.close();
      throw error;
    }
    const stream = handle.createReadStream({ ...range, highWaterMark: this.#chunkSize });
    return addAbortSignal(signal, stream);
  }

  async close(): Promise<void> {}

  /** Valid ids only, and never a sidecar's name: `<id>.json` is metadata, not an image. */
  #checkId(imageId: string): string {
    const id = checkImageId(imageId);
    if (id.toLowerCase().endsWith(SIDECAR)) throw new ImageNotFoundError(id);
    return id;
  }

  #path(id: string): string {
    const path = join(this.root, id);
    // looksLikeImageId admits no separator and no leading dot; this only guards against that ever changing.
    if (dirname(path) !== this.root) throw new ImageNotFoundError(id);
    return path;
  }

  async #readSidecar(id: string): Promise<Record<string, unknown> | null> {
    const file = `${this.#path(id)}${SIDECAR}`;
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      if (isMissing(error)) return null;
      throw new OriginError(`directory origin: cannot read ${file}: ${(error as Error).message}`, null, {
        cause: error,
      });
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new OriginError(`directory origin: ${file} is not valid JSON: ${(error as Error).message}`, null, {
        cause: error,
      });
    }
    if (!isJsonObject(json)) throw new OriginError(`directory origin: ${file} must hold a JSON object`);
    return json;
  }

  /** The data file's stats, or null when there is no regular file by that name. */
  async #statData(id: string): Promise<Stats | null> {
    try {
      const stats = await stat(this.#path(id));
      return stats.isFile() ? stats : null;
    } catch (error) {
      if (isMissing(error)) return null;
      throw this.#ioError(id, error);
    }
  }

  /** No data file: a sidecar says whether the image exists without data, or the origin lost it. */
  async #noData(id: string): Promise<never> {
    const sidecar = await this.#readSidecar(id);
    if (sidecar === null) return this.#notFound(id);
    const status = typeof sidecar.status === 'string' ? sidecar.status : 'active';
    if (status !== 'active') throw new ImageStateError(id, status, 'download it: it has no data');
    const path = this.#path(id);
    throw new OriginError(`directory origin: image ${id} is active in ${path}${SIDECAR} but ${path} is missing`);
  }

  /** Not found, unless the directory itself is gone: that is a misconfigured origin, not a missing image. */
  async #notFound(id: string): Promise<never> {
    let isDirectory = false;
    try {
      isDirectory = (await stat(this.root)).isDirectory();
    } catch {
      // reported below
    }
    if (!isDirectory) throw new OriginError(`directory origin: ${this.root} is not a directory`);
    throw new ImageNotFoundError(id);
  }

  #ioError(id: string, error: unknown): OriginError {
    return new OriginError(`directory origin: cannot read ${this.#path(id)}: ${(error as Error).message}`, null, {
      cause: error,
    });
  }
}

/** Glance's `isotime`: seconds precision, `Z`. */
function isoSeconds(date: Date): string {
  return `${date.toISOString().slice(0, 19)}Z`;
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
