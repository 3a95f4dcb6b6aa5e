/**
 * Errors that end the program with a known exit code and one clear sentence, and
 * {@link describe} for the OS errors such sentences quote.
 *
 * @module
 */

/**
 * The program cannot start or keep running (exit 1): a socket path in the way, no access
 * to the proc connector, a port in use. The message is one sentence for the admin.
 */
export class StartupError extends Error {
  /** Creates the error; `cause` keeps the underlying error for debug logs. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StartupError";
  }
}

/** An error message without the " (os error N): syscall 'path'" tail Deno adds. */
export function describe(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.replace(/ \(os error \d+\).*$/s, "");
}
