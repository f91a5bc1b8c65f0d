/**
 * The same memory for every system's cold rows. On a VM whose balloon reports free pages to the host (virtio
 * free-page reporting, as on the machines these benches were written on), the first write to a page the host has
 * taken back costs a host fault: `dd` of 1 GiB into a new file takes ~3 s of system time then, and 0.2-0.3 s when
 * it reuses pages just freed (measured 2026-12-03: 0.27 s right after a delete, 0.7 s one second later, 1.5 s five
 * seconds later, 3.0 s with none freed). A cache's miss writes the image into fresh page-cache pages, so without
 * care a system's miss time measures how long ago something was deleted: a server that starts in 50 ms (nginx)
 * got the pages the previous turn's cleanup had just freed, one that starts in a second (Node) got cold ones.
 * Before every cold row, each system's alike, {@link primeFreePages} writes and deletes a scratch file as big
 * as what the row will write: its pages, just freed, are what the row's writes get, as they would on a machine
 * without reporting (bare metal). Reporting goes on during the row, so a slow writer still meets some cold pages.
 */
import { open, unlink } from 'node:fs/promises';
import { join } from 'node:path';

const CHUNK = Buffer.alloc(8 << 20);

/** Writes `bytes` (rounded up to 8 MiB) into a scratch file in `dir`, then deletes it. */
export async function primeFreePages(dir: string, bytes: number): Promise<void> {
  const file = join(dir, 'prime-free-pages.scratch');
  const handle = await open(file, 'w');
  try {
    for (let written = 0; written < bytes; written += CHUNK.length) await handle.write(CHUNK);
  } finally {
    await handle.close();
    await unlink(file);
  }
}
