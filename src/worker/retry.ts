import pRetry from 'p-retry';
import { isRetryable } from '../api/errors.js';

/**
 * Retries a control-plane call on transient failures only (network, timeout, 408, 429, 5xx), with
 * jittered exponential backoff, and waits at least as long as a Retry-After asks. Used for ack and for
 * the end-of-job report; heartbeats are retried by the lease machine itself, against the deadline.
 */
export async function retryTransient<T>(
  call: (attempt: number) => Promise<T>,
  opts: { retries: number; minMs?: number; maxMs?: number; signal?: AbortSignal; onRetry?: (err: unknown, attempt: number) => void },
): Promise<T> {
  const minMs = opts.minMs ?? 200;
  const maxMs = opts.maxMs ?? 5000;
  // The first attempt goes without p-retry: most calls succeed at once, and p-retry's set-up costs ~60 µs
  // per call (four calls per item: ack, metadata, stop, confirm). A retryable failure hands the rest over.
  if (!opts.signal?.aborted) {
    try {
      return await call(1);
    } catch (error) {
      if (!isRetryable(error) || opts.retries === 0 || opts.signal?.aborted) throw error;
      opts.onRetry?.(error, 1);
      // p-retry's first delay (randomized: 1-2 x minMs), and at least what Retry-After asks.
      const wait = Math.max(Math.min(maxMs, Math.round((1 + Math.random()) * minMs)), Math.min(error.retryAfterMs ?? 0, 60_000));
      await sleep(wait, opts.signal);
    }
  }
  return pRetry((attempt) => call(attempt + 1), {
    retries: Math.max(0, opts.retries - 1),
    // Attempt k of this p-retry is attempt k + 1 of the call: the same exponential schedule goes on.
    minTimeout: minMs * 2,
    maxTimeout: maxMs,
    factor: 2,
    randomize: true,
    signal: opts.signal,
    shouldRetry: ({ error }) => isRetryable(error),
    onFailedAttempt: async ({ error, attemptNumber, retriesLeft }) => {
      if (!isRetryable(error) || retriesLeft === 0) return;
      opts.onRetry?.(error, attemptNumber + 1);
      const wait = error.retryAfterMs ?? 0;
      if (wait > 0) await sleep(Math.min(wait, 60_000), opts.signal);
    },
  });
}

/** Resolves after `ms`, or early (without throwing) when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
