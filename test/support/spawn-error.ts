import { expect } from 'vitest';
import { SpawnError } from '../../src/job/index.js';

/** Runs `fn`, which must throw a SpawnError (a job that cannot be spawned), and returns it. */
export function catchSpawn(fn: () => unknown): SpawnError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SpawnError);
    return err as SpawnError;
  }
  throw new Error('expected a SpawnError');
}
