/**
 * retryTransient and sleep (src/worker/retry.ts) on vitest's fake clock: the exact retry schedule the
 * ack and the end-of-job report follow (README: "jittered exponential backoff, Retry-After honoured"), the
 * number of attempts, which failures are retried at all, what an abort does, and that a sleep leaves no
 * timer or abort listener behind (the worker's stop signal is shared by every claim in flight).
 */
import { getEventListeners } from 'node:events';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConflictError, TransientError } from '../../src/api/errors.js';
import { retryTransient, sleep } from '../../src/worker/retry.js';

let random = 0;
beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  random = 0;
  vi.spyOn(Math, 'random').mockImplementation(() => random);
});
afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

const transient = (n: number, retryAfterMs?: number) =>
  new TransientError(`HTTP 503 (try ${n})`, { status: 503, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) });

/** Runs retryTransient with a call that fails `failures` times (transient), records each attempt's fake time. */
function scripted(opts: Parameters<typeof retryTransient>[1], fail: (n: number) => unknown = (n) => transient(n), failures = Infinity) {
  const t0 = Date.now();
  const at: number[] = [];
  const attempts: number[] = [];
  const retried: number[] = [];
  const p = retryTransient(
    async (n) => {
      at.push(Date.now() - t0);
      attempts.push(n);
      if (attempts.length <= failures) throw fail(n);
      return `ok ${n}`;
    },
    { ...opts, onRetry: (_e, n) => retried.push(n) },
  );
  const outcome: { value?: unknown; error?: unknown; settled: boolean } = { settled: false };
  p.then(
    (v) => Object.assign(outcome, { value: v, settled: true }),
    (e: unknown) => Object.assign(outcome, { error: e, settled: true }),
  );
  return { at, attempts, retried, outcome };
}

describe('retryTransient: the schedule', () => {
  it('defaults: first retry after 200 ms, then 400, 800, 1600, 3200, capped at 5000 (random 0: no jitter added)', async () => {
    const s = scripted({ retries: 7 });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(s.at).toEqual([0, 200, 600, 1400, 3000, 6200, 11_200, 16_200]);
    expect(s.attempts).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    // Every failure but the last announced as the retry it leads to.
    expect(s.retried).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(s.outcome.error).toBeInstanceOf(TransientError);
    expect((s.outcome.error as Error).message).toBe('HTTP 503 (try 8)');
  });

  it('jitter: each wait is between 1 and 2 times its base (random 0.5: 1.5 times), the cap still holds', async () => {
    random = 0.5;
    const s = scripted({ retries: 4, minMs: 100, maxMs: 500 });
    await vi.advanceTimersByTimeAsync(10_000);
    // 150, then 1.5 x 200 = 300, 1.5 x 400 = 600 -> 500, 1.5 x 800 -> 500.
    expect(s.at).toEqual([0, 150, 450, 950, 1450]);
  });

  it('the first wait is also capped at maxMs; minMs and maxMs given by the caller replace the defaults', async () => {
    random = 0.9;
    const capped = scripted({ retries: 1, minMs: 4000 });
    await vi.advanceTimersByTimeAsync(20_000);
    expect(capped.at).toEqual([0, 5000]); // 1.9 x 4000 = 7600, capped at the default 5000
    random = 0;
    const own = scripted({ retries: 2, minMs: 30, maxMs: 45 });
    await vi.advanceTimersByTimeAsync(1000);
    expect(own.at).toEqual([0, 30, 75]);
  });

  it('nothing is sent early: the second attempt waits the whole first delay', async () => {
    const s = scripted({ retries: 2 });
    await vi.advanceTimersByTimeAsync(199);
    expect(s.attempts).toEqual([1]);
    await vi.advanceTimersByTimeAsync(1);
    expect(s.attempts).toEqual([1, 2]);
    await vi.advanceTimersByTimeAsync(399);
    expect(s.attempts).toEqual([1, 2]);
    await vi.advanceTimersByTimeAsync(1);
    expect(s.attempts).toEqual([1, 2, 3]);
  });

  it('Retry-After on the first failure: waits what it asks when that is longer than the backoff, at most 60 s', async () => {
    const longer = scripted({ retries: 1, minMs: 100 }, (n) => transient(n, 2500), 1);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(longer.at).toEqual([0, 2500]);
    const shorter = scripted({ retries: 1, minMs: 100 }, (n) => transient(n, 40), 1);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(shorter.at).toEqual([0, 100]);
    const huge = scripted({ retries: 1, minMs: 100 }, (n) => transient(n, 3_600_000), 1);
    await vi.advanceTimersByTimeAsync(200_000);
    expect(huge.at).toEqual([0, 60_000]);
    expect(huge.outcome.value).toBe('ok 2');
  });

  it('Retry-After on a later failure: waited, at most 60 s, before the usual backoff', async () => {
    const later = scripted({ retries: 3, minMs: 10, maxMs: 1000 }, (n) => transient(n, n === 2 ? 3000 : undefined), 2);
    await vi.advanceTimersByTimeAsync(100_000);
    // at 10, then 3000 (Retry-After) + 20 (backoff) later
    expect(later.at).toEqual([0, 10, 3030]);
    expect(later.outcome.value).toBe('ok 3');
    const capped = scripted({ retries: 3, minMs: 10, maxMs: 1000 }, (n) => transient(n, n === 2 ? 600_000 : undefined), 2);
    await vi.advanceTimersByTimeAsync(200_000);
    expect(capped.at).toEqual([0, 10, 60_030]); // 10 + 60 000 + 20
  });
});

describe('retryTransient: how many attempts, which failures', () => {
  it('retries: N means N + 1 attempts at most (1 -> 2, 2 -> 3); retries 0 means one attempt', async () => {
    for (const [retries, total] of [
      [0, 1],
      [1, 2],
      [2, 3],
    ] as const) {
      const s = scripted({ retries, minMs: 1 });
      await vi.advanceTimersByTimeAsync(1000);
      expect(s.attempts).toHaveLength(total);
      expect(s.retried).toHaveLength(total - 1);
      expect(s.outcome.error).toBeInstanceOf(TransientError);
    }
  });

  it('a non-transient failure on a later attempt ends the retries at once, with that error, unannounced', async () => {
    const s = scripted({ retries: 5, minMs: 1 }, (n) => (n === 2 ? new ConflictError('HTTP 409', { status: 409 }) : transient(n)));
    await vi.advanceTimersByTimeAsync(1000);
    expect(s.attempts).toEqual([1, 2]);
    expect(s.retried).toEqual([1]);
    expect(s.outcome.error).toBeInstanceOf(ConflictError);
  });

  it('a non-transient failure on the first attempt is thrown as it is, with no retry announced', async () => {
    const s = scripted({ retries: 5, minMs: 1 }, () => new ConflictError('HTTP 409', { status: 409 }));
    await vi.advanceTimersByTimeAsync(1000);
    expect(s.attempts).toEqual([1]);
    expect(s.retried).toEqual([]);
    expect(s.outcome.error).toBeInstanceOf(ConflictError);
  });
});

describe('retryTransient: aborts', () => {
  it('a signal aborted before the call: nothing is sent, it rejects', async () => {
    const abort = new AbortController();
    abort.abort(new Error('shut down'));
    const s = scripted({ retries: 3, minMs: 1, signal: abort.signal });
    await vi.advanceTimersByTimeAsync(100);
    expect(s.attempts).toEqual([]);
    expect(s.outcome.settled).toBe(true);
    expect(s.outcome.error).toBeDefined();
  });

  it('aborted while the first attempt was out: its failure is thrown at once, no retry announced, no wait', async () => {
    const abort = new AbortController();
    const retried: number[] = [];
    let calls = 0;
    const p = retryTransient(
      async () => {
        calls++;
        abort.abort();
        throw transient(calls);
      },
      { retries: 3, minMs: 1000, signal: abort.signal, onRetry: (_e, n) => retried.push(n) },
    );
    await expect(p).rejects.toThrow('HTTP 503 (try 1)');
    expect(calls).toBe(1);
    expect(retried).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('an abort during a later backoff ends it at once: no further attempt', async () => {
    const abort = new AbortController();
    const s = scripted({ retries: 5, minMs: 1000, maxMs: 10_000, signal: abort.signal });
    await vi.advanceTimersByTimeAsync(1000); // the second attempt failed; p-retry waits 2000 ms
    expect(s.attempts).toEqual([1, 2]);
    abort.abort(new Error('shut down'));
    await vi.advanceTimersByTimeAsync(0);
    expect(s.outcome.settled).toBe(true);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(s.attempts).toEqual([1, 2]);
  });
});

describe('sleep', () => {
  it('resolves after the time, not before, and leaves no abort listener on the signal', async () => {
    const abort = new AbortController();
    let done = false;
    void sleep(300, abort.signal).then(() => (done = true));
    expect(getEventListeners(abort.signal, 'abort')).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(299);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(done).toBe(true);
    expect(getEventListeners(abort.signal, 'abort')).toHaveLength(0);
  });

  it('an abort ends it at once and clears its timer; an aborted signal resolves it without a timer', async () => {
    const abort = new AbortController();
    let done = false;
    void sleep(10_000, abort.signal).then(() => (done = true));
    expect(vi.getTimerCount()).toBe(1);
    abort.abort();
    await vi.advanceTimersByTimeAsync(0);
    expect(done).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
    let again = false;
    void sleep(10_000, abort.signal).then(() => (again = true));
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(0);
    expect(again).toBe(true);
  });

  it('without a signal it is a plain wait', async () => {
    let done = false;
    void sleep(50).then(() => (done = true));
    await vi.advanceTimersByTimeAsync(49);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(done).toBe(true);
  });
});
