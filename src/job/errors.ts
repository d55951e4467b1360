/** The job command could not be started. `code` follows the shell: 127 not found, 126 found but not runnable. */
export class SpawnError extends Error {
  override readonly name = 'SpawnError';
  readonly code: 126 | 127;

  constructor(code: 126 | 127, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

