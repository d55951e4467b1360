/**
 * One exchange (src/api/exchange.ts) and the call cancel (src/api/cancel.ts), driven by hand through a
 * Dispatcher whose handler the test calls: a cancel before the request has a socket fails at once and
 * aborts the request when it starts (with the caller's reason, or an AbortError for a reason that is no
 * Error); a body over the limit is dropped, announced or counted; a body cut short is never handed on;
 * and the lease driver's CallCancel aborts once, with an AbortError by default, leaving no listener behind.
 */
import { getEventListeners } from 'node:events';
import type { Dispatcher } from 'undici';
import { describe, expect, it } from 'vitest';
import { CallCancel, abortError, onAbort } from '../../src/api/cancel.js';
import { exchange } from '../../src/api/exchange.js';

type Handler = Dispatcher.DispatchHandler;

class Controller {
  aborts: unknown[] = [];
  abort(reason: unknown): void {
    this.aborts.push(reason);
  }
  pause(): void {}
  resume(): void {}
  aborted = false;
  paused = false;
  reason = null;
}

/** Starts an exchange and hands back its handler, for the test to play undici's part. */
function start(signal: CallCancel | AbortSignal = new CallCancel(), limit = 10): { handler: Handler; result: Promise<unknown>; c: Controller } {
  let handler: Handler | undefined;
  const dispatcher = {
    dispatch(_options: unknown, h: Handler) {
      handler = h;
      return true;
    },
  } as unknown as Dispatcher;
  const result = exchange(dispatcher, { path: '/', method: 'GET' }, signal, limit).then(
    (reply) => ({ reply }),
    (error: unknown) => ({ error }),
  );
  return { handler: handler!, result, c: new Controller() };
}

describe('a cancel before the request has started', () => {
  it('fails at once with the caller\'s Error, and aborts the request with it when it starts', async () => {
    const cancel = new CallCancel();
    const { handler, result, c } = start(cancel);
    const reason = new Error('lease lost');
    cancel.abort(reason);
    expect(await result).toEqual({ error: reason });
    handler.onRequestStart?.(c as never, {});
    expect(c.aborts).toEqual([reason]);
  });

  it('a reason that is not an Error becomes an AbortError', async () => {
    const cancel = new CallCancel();
    const { handler, result, c } = start(cancel);
    cancel.abort('stop please');
    const { error } = (await result) as { error: DOMException };
    expect(error).toBeInstanceOf(DOMException);
    expect(error.name).toBe('AbortError');
    handler.onRequestStart?.(c as never, {});
    expect(c.aborts).toEqual([error]);
  });

  it('a cancel after the start aborts the running request with the reason', async () => {
    const cancel = new CallCancel();
    const { handler, result, c } = start(cancel);
    handler.onRequestStart?.(c as never, {});
    expect(c.aborts).toEqual([]);
    const reason = new Error('shutdown');
    cancel.abort(reason);
    expect(c.aborts).toEqual([reason]);
    handler.onResponseError?.(c as never, reason);
    expect(await result).toEqual({ error: reason });
  });
});

describe('the body limit', () => {
  it('announced over the limit: aborted before any byte is read, reported too big', async () => {
    const { handler, result, c } = start(undefined, 10);
    handler.onRequestStart?.(c as never, {});
    handler.onResponseStart?.(c as never, 200, { 'content-length': '11' }, '');
    expect(c.aborts).toHaveLength(1);
    expect(String(c.aborts[0])).toBe('Error: reply body over the limit');
    handler.onResponseData?.(c as never, Buffer.from('0123456789A'));
    handler.onResponseError?.(c as never, c.aborts[0] as Error);
    const { reply } = (await result) as { reply: { status: number; body: { tooBig: boolean; bytes: Uint8Array }; bodyError?: unknown } };
    expect(reply.status).toBe(200);
    expect(reply.body.tooBig).toBe(true);
    expect(reply.body.bytes).toHaveLength(0);
    expect(reply.bodyError).toBeUndefined();
    expect(c.aborts).toHaveLength(1);
  });

  it('announced at the limit, and counted up to it: read whole', async () => {
    const { handler, result, c } = start(undefined, 10);
    handler.onRequestStart?.(c as never, {});
    handler.onResponseStart?.(c as never, 200, { 'content-length': '10' }, '');
    handler.onResponseData?.(c as never, Buffer.from('01234'));
    handler.onResponseData?.(c as never, Buffer.from('56789'));
    handler.onResponseEnd?.(c as never, {});
    const { reply } = (await result) as { reply: { body: { tooBig: boolean; bytes: Uint8Array } } };
    expect(c.aborts).toEqual([]);
    expect(reply.body.tooBig).toBe(false);
    expect(Buffer.from(reply.body.bytes).toString()).toBe('0123456789');
  });

  it('counted over the limit without an announcement: dropped once, the rest ignored', async () => {
    const { handler, result, c } = start(undefined, 10);
    handler.onRequestStart?.(c as never, {});
    handler.onResponseStart?.(c as never, 200, {}, '');
    handler.onResponseData?.(c as never, Buffer.from('0123456'));
    handler.onResponseData?.(c as never, Buffer.from('789AB'));
    handler.onResponseData?.(c as never, Buffer.from('CD'));
    expect(c.aborts).toHaveLength(1);
    handler.onResponseError?.(c as never, c.aborts[0] as Error);
    const { reply } = (await result) as { reply: { body: { tooBig: boolean; bytes: Uint8Array } } };
    expect(reply.body).toEqual({ tooBig: true, bytes: new Uint8Array(0) });
  });
});

describe('a body cut short', () => {
  it('is not handed on: no bytes, the error kept', async () => {
    const { handler, result, c } = start();
    handler.onRequestStart?.(c as never, {});
    handler.onResponseStart?.(c as never, 503, { 'retry-after': '2' }, '');
    handler.onResponseData?.(c as never, Buffer.from('{"err'));
    const cut = new Error('other side closed');
    handler.onResponseError?.(c as never, cut);
    const { reply } = (await result) as { reply: { status: number; headers: Record<string, string>; body: { bytes: Uint8Array }; bodyError: unknown } };
    expect(reply.status).toBe(503);
    expect(reply.headers['retry-after']).toBe('2');
    expect(reply.body.bytes).toHaveLength(0);
    expect(reply.bodyError).toBe(cut);
  });

  it('no headers at all: the transport error is the rejection', async () => {
    const { handler, result, c } = start();
    handler.onRequestStart?.(c as never, {});
    const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    handler.onResponseError?.(c as never, refused);
    expect(await result).toEqual({ error: refused });
  });
});

describe('CallCancel', () => {
  it('aborts once: the first reason stays, listeners hear it once', () => {
    const cancel = new CallCancel();
    let heard = 0;
    cancel.on('abort', () => heard++);
    const first = new Error('first');
    cancel.abort(first);
    cancel.abort(new Error('second'));
    expect(cancel.aborted).toBe(true);
    expect(cancel.reason).toBe(first);
    expect(heard).toBe(1);
  });

  it('without a reason, the reason is an AbortError as AbortController gives', () => {
    const cancel = new CallCancel();
    cancel.abort();
    const reason = cancel.reason as DOMException;
    expect(reason).toBeInstanceOf(DOMException);
    expect(reason.name).toBe('AbortError');
    expect(reason.message).toBe('This operation was aborted');
    const native = new AbortController();
    native.abort();
    expect(abortError().name).toBe((native.signal.reason as DOMException).name);
    expect(abortError().message).toBe((native.signal.reason as DOMException).message);
  });

  it('onAbort on an AbortSignal: runs once and leaves no listener, removed or fired', () => {
    const ac = new AbortController();
    let ran = 0;
    const remove = onAbort(ac.signal, () => ran++);
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(1);
    remove();
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
    onAbort(ac.signal, () => ran++);
    ac.abort();
    expect(ran).toBe(1);
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
  });

  it('onAbort on a CallCancel: removed, it does not run', () => {
    const cancel = new CallCancel();
    let ran = 0;
    const remove = onAbort(cancel, () => ran++);
    expect(cancel.listenerCount('abort')).toBe(1);
    remove();
    expect(cancel.listenerCount('abort')).toBe(0);
    cancel.abort();
    expect(ran).toBe(0);
  });
});
