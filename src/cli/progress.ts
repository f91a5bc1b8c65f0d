import { SingleBar } from 'cli-progress';
import type { ProgressListener } from '../cache/image-cache.js';
import type { CliIO } from './context.js';

/** A progress bar on stderr, only when stderr is a terminal: pipes and logs get no control characters. */
export function progressBar(io: CliIO, label: string): { listener: ProgressListener; stop: () => void } | null {
  if (!io.stderr.isTTY) return null;
  const bar = new SingleBar({
    stream: io.stderr,
    format: `${label} [{bar}] {percentage}% | {value}/{total} bytes | ETA {eta_formatted}`,
    hideCursor: true,
    clearOnComplete: true,
  });
  let started = false;
  return {
    listener: (done, total) => {
      if (!started) {
        bar.start(total ?? 0, 0);
        started = true;
      }
      bar.update(done);
    },
    stop: () => {
      if (started) bar.stop();
    },
  };
}
