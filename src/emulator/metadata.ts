import { badRequest } from './types.js';

/** The global metadata limits of the API (conventions/schemas). */
export const METADATA_LIMITS = { maxKeys: 16, maxKeyLength: 64, maxValueLength: 512 } as const;

const length = (s: string): number => [...s].length; // code points, not UTF-16 units

/**
 * Applies a merge patch (string = upsert, null = delete, absent = unchanged) and returns the new map, or
 * throws a 400 without touching `current`: the patch applies entirely or not at all.
 */
export function mergeMetadata(current: Readonly<Record<string, string>>, patch: unknown): Record<string, string> {
  const next = new Map(Object.entries(current));
  if (patch === undefined) return Object.fromEntries(next);
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) {
    throw badRequest('metadata must be an object mapping keys to strings or null');
  }
  for (const [key, value] of Object.entries(patch)) {
    if (length(key) < 1 || length(key) > METADATA_LIMITS.maxKeyLength) {
      throw badRequest(`metadata keys must be 1..${METADATA_LIMITS.maxKeyLength} characters`);
    }
    if (value === null) {
      next.delete(key);
    } else if (typeof value === 'string') {
      if (length(value) > METADATA_LIMITS.maxValueLength) {
        throw badRequest(`metadata value of "${key}" is longer than ${METADATA_LIMITS.maxValueLength} characters`);
      }
      next.set(key, value);
    } else {
      throw badRequest(`metadata value of "${key}" must be a string or null`);
    }
  }
  if (next.size > METADATA_LIMITS.maxKeys) {
    throw badRequest(`metadata may hold at most ${METADATA_LIMITS.maxKeys} keys`);
  }
  return Object.fromEntries(next);
}
