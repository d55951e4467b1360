/**
 * retryTransient (src/worker/retry.ts): the first attempt runs without p-retry (the common case, cheap);
 * a transient failure hands the remaining attempts to p-retry with the same schedule and attempt numbers.
 */
import { describe, expect, it } from 'vitest';
import { ConflictError, TransientError } from '../../src/api/errors.js';
import { retryTransient } from '../../src/worker/retry.js';

describe('retryTransient', () => {
  it('a call that succeeds runs once, as attempt 1', async () => {
    const attempts: number[] = [];
    await expect(retryTransient(async (n) => (attempts.push(n), 'ok'), { retries: 3, minMs: 1 })).resolves.toBe('ok');
    expect(attempts).toEqual([1]);
  });

  it('transient failures are retried with consecutive attempt numbers, each reported once', async () => {
    const attempts: number[] = [];
    const retried: number[] = [];
    const out = await retryTransient(
      async (n) => {
        attempts.push(n);
        if (n < 3) throw new TransientError(`HTTP 503 (try ${n})`, { status: 503 });
        return n;
      },
      { retries: 4, minMs: 1, maxMs: 5, onRetry: (_err, n) => retried.push(n) },
    );
    expect(out).toBe(3);
    expect(attempts).toEqual([1, 2, 3]);
    expect(retried).toEqual([1, 2]);
  });

  it('gives up after retries + 1 attempts with the last error; a non-transient error is not retried', async () => {
    const attempts: number[] = [];
    await expect(
      retryTransient(
        async (n) => {
          attempts.push(n);
          throw new TransientError(`HTTP 503 (try ${n})`, { status: 503 });
        },
        { retries: 2, minMs: 1, maxMs: 5 },
      ),
    ).rejects.toThrow('try 3');
    expect(attempts).toEqual([1, 2, 3]);
    let calls = 0;
    await expect(
      retryTransient(
        async () => {
          calls++;
          throw new ConflictError('HTTP 409', { status: 409 });
        },
        { retries: 5, minMs: 1 },
      ),
    ).rejects.toBeInstanceOf(ConflictError);
    expect(calls).toBe(1);
  });

  it('waits at least what Retry-After asks before the second attempt; an abort meanwhile ends it', async () => {
    const times: number[] = [];
    const t0 = performance.now();
    await retryTransient(
      async (n) => {
        times.push(performance.now() - t0);
        if (n === 1) throw new TransientError('HTTP 429', { status: 429, retryAfterMs: 120 });
        return n;
      },
      { retries: 1, minMs: 1, maxMs: 5 },
    );
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(110);
    const abort = new AbortController();
    let calls = 0;
    const p = retryTransient(
      async () => {
        calls++;
        throw new TransientError('HTTP 503', { status: 503, retryAfterMs: 10_000 });
      },
      { retries: 3, minMs: 1, signal: abort.signal },
    );
    setTimeout(() => abort.abort(new Error('shutdown')), 20);
    await expect(p).rejects.toThrow();
    expect(calls).toBe(1);
  });
});
