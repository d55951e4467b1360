/**
 * One HTTP exchange over undici's `dispatch()`, collecting the reply into memory. `request()` would
 * wrap each reply in a Readable stream and a request handler with its own signal listener; at 1000
 * leases (~300 replies a second) those were ~6 % of the keeper's CPU (bench/README.md), and every
 * reply here is a small JSON document read whole anyway.
 */
import type { Dispatcher } from 'undici';
import { type CallSignal, abortError, onAbort } from './cancel.js';

export interface ReplyBody {
  /** More than the limit (by Content-Length or by count): dropped, `bytes` is empty. */
  tooBig: boolean;
  bytes: Uint8Array;
}

export interface RawReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: ReplyBody;
  /** Set when the connection failed after the headers (a truncated body, or an abort mid-body). */
  bodyError?: unknown;
}

type Controller = Dispatcher.DispatchController;

/**
 * Sends the request and resolves once the whole reply (at most `limit` body bytes) is in, or the body
 * failed after the headers (`bodyError`). Rejects with the transport's error when no headers arrived.
 * `signal` aborts the exchange at any point.
 */
export function exchange(dispatcher: Dispatcher, options: Dispatcher.DispatchOptions, signal: CallSignal, limit: number): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const collector = new ReplyCollector(limit, resolve, reject);
    collector.removeAbortListener = onAbort(signal, () => collector.abort(signal.reason));
    dispatcher.dispatch(options, collector);
  });
}

class ReplyCollector implements Dispatcher.DispatchHandler {
  removeAbortListener: (() => void) | undefined;
  #controller: Controller | undefined;
  /** Set once the caller aborted. */
  #abortReason: Error | undefined;
  #settled = false;
  #status = 0;
  #headers: RawReply['headers'] | null = null;
  #chunks: Buffer[] = [];
  #total = 0;
  #tooBig = false;

  constructor(
    readonly limit: number,
    readonly resolve: (reply: RawReply) => void,
    readonly reject: (err: unknown) => void,
  ) {}

  /** The caller's abort: before the request has a socket, fail at once and abort it when it starts. */
  abort(reason: unknown): void {
    if (this.#abortReason) return;
    const err = reason instanceof Error ? reason : abortError();
    this.#abortReason = err;
    if (this.#controller) this.#controller.abort(err);
    else this.#fail(err);
  }

  onRequestStart(controller: Controller): void {
    this.#controller = controller;
    if (this.#abortReason) controller.abort(this.#abortReason);
  }

  onResponseStart(controller: Controller, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    if (statusCode < 200) return; // informational: the real reply follows
    this.#status = statusCode;
    this.#headers = headers;
    const declared = Number(headers['content-length']);
    if (Number.isFinite(declared) && declared > this.limit) this.#drop(controller);
  }

  onResponseData(controller: Controller, chunk: Buffer): void {
    if (this.#tooBig) return;
    this.#total += chunk.length;
    if (this.#total > this.limit) this.#drop(controller);
    else this.#chunks.push(chunk);
  }

  onResponseEnd(): void {
    this.#succeed();
  }

  onResponseError(_controller: Controller, err: Error): void {
    if (this.#headers === null) this.#fail(err);
    else if (this.#tooBig) this.#succeed();
    else this.#succeed(err);
  }

  /** A body over the limit: stop reading it; the reply is reported as too big. */
  #drop(controller: Controller): void {
    this.#tooBig = true;
    this.#chunks = [];
    controller.abort(new Error('reply body over the limit'));
  }

  #succeed(bodyError?: unknown): void {
    if (this.#settled) return;
    this.#settled = true;
    this.removeAbortListener?.();
    const bytes = this.#tooBig || bodyError !== undefined ? new Uint8Array(0) : this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks, this.#total);
    const reply: RawReply = { status: this.#status, headers: this.#headers ?? {}, body: { tooBig: this.#tooBig, bytes } };
    if (bodyError !== undefined) reply.bodyError = bodyError;
    this.resolve(reply);
  }

  #fail(err: unknown): void {
    if (this.#settled) return;
    this.#settled = true;
    this.removeAbortListener?.();
    this.reject(err);
  }
}
