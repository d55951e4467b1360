import pRetry from 'p-retry';
import { isRetryable } from '../api/errors.js';

/**
 * Retries a control-plane call on transient failures only (network, timeout, 408, 429, 5xx), with
 * jittered exponential backoff, and waits at least as long as a Retry-After asks. Used for ack and for
 * the end-of-job report; heartbeats are retried by the lease machine itself, against the deadline.
 */
export function retryTransient<T>(
  call: (attempt: number) => Promise<T>,
  opts: { retries: number; minMs?: number; maxMs?: number; signal?: AbortSignal; onRetry?: (err: unknown, attempt: number) => void },
): Promise<T> {
  return pRetry(call, {
    retries: opts.retries,
    minTimeout: opts.minMs ?? 200,
    maxTimeout: opts.maxMs ?? 5000,
    factor: 2,
    randomize: true,
    signal: opts.signal,
    shouldRetry: ({ error }) => isRetryable(error),
    onFailedAttempt: async ({ error, attemptNumber, retriesLeft }) => {
      if (!isRetryable(error) || retriesLeft === 0) return;
      opts.onRetry?.(error, attemptNumber);
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
