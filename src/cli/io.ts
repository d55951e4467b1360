import type { Writable } from 'node:stream';

/** What a command needs from its process: streams and environment, injectable for tests. */
export interface CliIO {
  stdout: Writable;
  stderr: Writable;
  env: NodeJS.ProcessEnv;
}

export const processIO = (): CliIO => ({ stdout: process.stdout, stderr: process.stderr, env: process.env });
