import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { registerClean } from './commands/clean.js';
import { registerClear } from './commands/clear.js';
import { registerDelete } from './commands/delete.js';
import { registerImport } from './commands/import.js';
import { registerList } from './commands/list.js';
import { registerPrune } from './commands/prune.js';
import { registerQueue } from './commands/queue.js';
import { registerServe } from './commands/serve.js';
import { registerVerify } from './commands/verify.js';
import { CliContext, type CliIO, CONFIG_ENV, TOKEN_ENV, URL_ENV } from './context.js';
import { errorLine, exitCodeFor } from './exit.js';

/** package.json sits two levels up from both src/cli/ and dist/cli/. */
function packageVersion(): string {
  const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
  return (JSON.parse(text) as { version: string }).version;
}

const HELP_FOOTER = `
Configuration, strongest first: flags; environment (IMGCACHE_CACHE_DIR, IMGCACHE_DRIVER, IMGCACHE_MAX_SIZE,
IMGCACHE_STALL_TIME, IMGCACHE_SQLITE_DB,
IMGCACHE_FILL_IDLE_TIMEOUT); the [DEFAULT] section of --config FILE or $${CONFIG_ENV}
(glance-api.conf option names: image_cache_dir, image_cache_driver, ...); defaults.

Remote mode: with --url http://HOST:PORT (or $${URL_ENV}), list, queue, delete, clear, prune and clean act on a
running server through its v2 Cache API instead of a directory; --token TOKEN (or $${TOKEN_ENV}, which keeps
the token out of ps) is sent as X-Auth-Token. The server uses its own cache dir, size limit and stall time.
import and verify work on a local directory only.

Exit codes: 0 success, 1 the operation failed, 2 bad command line, configuration or image id (nothing touched).`;

/**
 * Builds the `imgcache` program. Commander never exits the process or prints errors itself: `exitOverride`
 * turns its exits into {@link CommanderError}s and `main` prints one line for them.
 */
export function buildProgram(ctx: CliContext): Command {
  const program = new Command('imgcache');
  // Settings first: subcommands created with .command() inherit them.
  program
    .exitOverride()
    .configureOutput({
      writeOut: (text) => ctx.io.stdout.write(text),
      writeErr: (text) => ctx.io.stderr.write(text),
      outputError: () => {},
    })
    .description('Manage a Glance-compatible image cache directory, or a running server with --url.')
    .version(packageVersion(), '-V, --version', 'print the version')
    .option('--cache-dir <dir>', 'cache directory (image_cache_dir)')
    .option('--driver <name>', 'metadata driver: sqlite or xattr (image_cache_driver); default sqlite')
    .option('--max-size <bytes>', 'cache size limit for prune, e.g. 10G (image_cache_max_size); default 10G')
    .option('--config <file>', `glance-api.conf style INI file to read [DEFAULT] options from (or $${CONFIG_ENV})`)
    .option('-v, --verbose', 'log progress (info level) to stderr')
    .option('--url <url>', `act on a running server's v2 Cache API, e.g. http://127.0.0.1:9292 (or $${URL_ENV})`)
    .option('--token <token>', `X-Auth-Token for --url (or $${TOKEN_ENV})`)
    .addHelpText('after', HELP_FOOTER);

  registerList(program, ctx);
  registerQueue(program, ctx);
  registerDelete(program, ctx);
  registerClear(program, ctx);
  registerPrune(program, ctx);
  registerClean(program, ctx);
  registerImport(program, ctx);
  registerVerify(program, ctx);
  registerServe(program, ctx);
  return program;
}

/**
 * Runs `imgcache` and returns its exit code (`bin/imgcache.js` sets `process.exitCode` from it). `argv` is
 * `process.argv` (node, script, args...). Only src/cli reads argv and env; the library gets a resolved config.
 */
export async function main(
  argv: string[],
  env: Record<string, string | undefined>,
  io: CliIO = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  const ctx = new CliContext(io, env);
  try {
    await buildProgram(ctx).parseAsync(argv, { from: 'node' });
    return ctx.exitCode;
  } catch (error) {
    const line = errorLine(error);
    if (line !== null) io.stderr.write(`${line}\n`);
    return exitCodeFor(error);
  }
}

