import type { Logger } from 'pino';

/** A periodic job; `stop()` waits for a run in progress. */
export interface Schedule {
  stop(): Promise<void>;
}

/**
 * Runs `task` every `seconds` (never two runs at once; a failing run is logged and the next one still
 * happens). `seconds <= 0` schedules nothing, like Glance's cron tools that nobody installed.
 */
export function every(seconds: number, name: string, task: () => Promise<unknown>, logger: Logger): Schedule {
  if (seconds <= 0) return { stop: async () => {} };
  let running: Promise<void> | null = null;
  const timer = setInterval(() => {
    if (running) return;
    running = task()
      .then((result) => logger.info({ job: name, result }, 'periodic job done'))
      .catch((error: unknown) => logger.error({ job: name, err: error }, 'periodic job failed'))
      .finally(() => {
        running = null;
      });
  }, seconds * 1000);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
