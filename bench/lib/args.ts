/** The benches' command-line numbers. */

/** `text` as a positive whole number (`_` separators allowed); throws naming `--name` otherwise. */
export function positiveInt(name: string, text: string | undefined): number {
  const n = Number((text ?? '').replaceAll('_', ''));
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got ${text}`);
  return n;
}
