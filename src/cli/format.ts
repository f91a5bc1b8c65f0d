import Table from 'cli-table3';
import type { CachedImage } from '../drivers/driver.js';

/**
 * Epoch seconds as `YYYY-MM-DDTHH:MM:SS` in UTC, the form `glance cache-list` prints; `N/A` for 0 (a record
 * that was never accessed, spec §8 J 107) and for anything that is not a finite time.
 */
export function formatTimestamp(epochSeconds: number): string {
  if (!Number.isFinite(epochSeconds) || epochSeconds <= 0) return 'N/A';
  return new Date(Math.floor(epochSeconds) * 1000).toISOString().slice(0, 19);
}

/** Column headers of `glance cache-list` (python-glanceclient, spec §5.6). */
export const LIST_COLUMNS = ['ID', 'State', 'Last Accessed (UTC)', 'Last Modified (UTC)', 'Size', 'Hits'] as const;

/** What a table row needs of a cached image (a driver's record, or one from a server's `GET /v2/cache`). */
export type ListedImage = Pick<CachedImage, 'imageId' | 'hits' | 'lastAccessed' | 'lastModified' | 'size'>;

/** Longest prefetch error shown in the State column; `list --json` has the whole text. */
const MAX_ERROR_CHARS = 160;

/**
 * The `glance cache-list` table: cached images first (by id), then queued ids in queue order. Queued rows have
 * no metadata yet: `N/A` for the times, 0 for size and hits. A queued image the server's prefetcher failed on
 * (`prefetchErrors`, from imgcache's `GET /v2/cache/errors`) shows `queued (retrying: <its last error>)`. No colours,
 * so output is the same on a terminal, in a pipe and in a test.
 */
export function renderCacheTable(
  cached: readonly ListedImage[],
  queued: readonly string[],
  prefetchErrors: Readonly<Record<string, string>> = {},
): string {
  const table = new Table({
    head: [...LIST_COLUMNS],
    colAligns: ['left', 'left', 'left', 'left', 'right', 'right'],
    style: { head: [], border: [] },
  });
  for (const image of cached) {
    table.push([
      image.imageId,
      'cached',
      formatTimestamp(image.lastAccessed),
      formatTimestamp(image.lastModified),
      image.size,
      image.hits,
    ]);
  }
  for (const id of queued) {
    const error = Object.hasOwn(prefetchErrors, id) ? prefetchErrors[id] : undefined;
    const state = error === undefined ? 'queued' : `queued (retrying: ${shorten(oneLine(error), MAX_ERROR_CHARS)})`;
    table.push([id, state, 'N/A', 'N/A', 0, 0]);
  }
  return table.toString();
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

function shorten(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** `n thing` / `n things`, for one-line summaries. */
export function plural(count: number, singular: string, pluralForm = `${singular}s`): string {
  return `${count} ${count === 1 ? singular : pluralForm}`;
}

const BINARY_UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** `1536` -> `1536 bytes (1.5 KiB)`: exact for scripts, readable for people. */
export function formatBytes(bytes: number): string {
  const exact = plural(bytes, 'byte');
  if (bytes < 1024) return exact;
  let value = bytes;
  let unit = '';
  for (const next of BINARY_UNITS) {
    if (value < 1024) break;
    value /= 1024;
    unit = next;
  }
  return `${exact} (${value.toFixed(1)} ${unit})`;
}
