/**
 * Errors that end the program with a known exit code and one clear sentence.
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
