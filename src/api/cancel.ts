import { EventEmitter } from 'node:events';

/**
 * A one-shot cancel for a call, accepted wherever a call takes an AbortSignal. It is an EventEmitter,
 * which undici accepts as a request's `signal` (`once('abort')` / `removeListener`), and it is much
 * lighter than an AbortController: the lease driver makes one per heartbeat attempt (~300 a second at
 * 1000 leases), and there the AbortController's lazily built signal and its EventTarget listeners cost
 * ~4 % of the keeper's CPU (bench/README.md).
 */
export class CallCancel extends EventEmitter {
  aborted = false;
  reason: unknown = undefined;

  /** Cancels the call (once; later calls do nothing). The reason defaults to an AbortError, as AbortController's. */
  abort(reason?: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason ?? abortError();
    this.emit('abort');
  }
}

/** The error an abort without a reason carries, as AbortController's. */
export function abortError(): DOMException {
  return new DOMException('This operation was aborted', 'AbortError');
}

/** What a call accepts as its caller's signal. */
export type CallSignal = AbortSignal | CallCancel;

/** Runs `listener` once when `signal` aborts; returns the function that removes it. */
export function onAbort(signal: CallSignal, listener: () => void): () => void {
  if (signal instanceof CallCancel) {
    signal.once('abort', listener);
    return () => signal.removeListener('abort', listener);
  }
  signal.addEventListener('abort', listener, { once: true });
  return () => signal.removeEventListener('abort', listener);
}
