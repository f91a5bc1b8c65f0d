import { CommanderError } from 'commander';
import { ERROR_CODES, ImageCacheError } from '../errors.js';

/** Exit codes of `imgcache`, as documented in `imgcache --help`; an error's comes from {@link ERROR_CODES}. */
export const EXIT = {
  /** The command did what was asked (including "already queued": nothing to do is not a failure). */
  ok: 0,
  /** The operation failed: a checksum mismatch, an image already cached, a file that could not be removed. */
  failed: 1,
  /** The command line, the configuration or an image id is wrong: nothing was touched. */
  usage: 2,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** A command line the CLI itself refuses (a bad `--size`, no cache directory). Exit code 2. */
export class CliUsageError extends ImageCacheError {
  constructor(message: string) {
    super('ERR_CLI_USAGE', message);
  }
}

/** An operation that ran and failed in a way the message fully explains. Exit code 1. */
export class CliFailure extends ImageCacheError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_CLI_FAILED', message, options);
  }
}

/** Commander codes after which commander has already printed all there is to say (help or the version). */
const COMMANDER_PRINTED = new Set(['commander.helpDisplayed', 'commander.version', 'commander.help']);

/**
 * The exit code for an error that reached `main`, the one place that reads {@link ERROR_CODES}' exit codes.
 * Usage, configuration and id errors are 2 because retrying the same command can never succeed; everything else
 * (disk, verification, races, an error that is not ours) is 1.
 */
export function exitCodeFor(error: unknown): ExitCode {
  // `--help`, `--version` and `help <command>` exit 0; `help` without a command or with an unknown one is 1.
  if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
  // The CLI reports a missing image_cache_dir as a CliUsageError before any driver exists. A driver that still
  // raises BadDriverConfigurationError (an unusable directory, a filesystem without xattrs) met the disk: 1.
  if (error instanceof ImageCacheError) return ERROR_CODES[error.code].exit;
  return EXIT.failed;
}

/**
 * The single stderr line for an error, `imgcache: <message>`. Never a stack trace: messages of
 * {@link ImageCacheError} already say what to fix, and anything else is reduced to its message.
 * Returns null when there is nothing to print (commander already printed help or the version).
 */
export function errorLine(error: unknown): string | null {
  let message: string;
  if (error instanceof CommanderError) {
    if (COMMANDER_PRINTED.has(error.code)) return null;
    // "error: unknown command 'lst'\n(Did you mean list?)" -> one line, pointing at --help.
    message = `${error.message.replace(/^error:\s*/i, '')}; see imgcache --help`;
  } else if (error instanceof Error) {
    message = error.message;
  } else {
    message = String(error);
  }
  return `imgcache: ${oneLine(message)}`;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
