// Waiting.
import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };

/** A sleep that does not keep the process alive (for races against a child's exit). */
export const idleSleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

/** Polls `check` every `everyMs` until it returns a truthy value; throws after timeoutMs. */
export async function waitUntil<T>(
  check: () => T | Promise<T>,
  { timeoutMs = 30_000, everyMs = 50, what = 'condition' }: { timeoutMs?: number; everyMs?: number; what?: string } = {},
): Promise<NonNullable<T>> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}
