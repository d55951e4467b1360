/**
 * What an operator reads when a control-plane call fails (src/api/classify.ts): the error kind the lease
 * logic switches on, and a message that says what happened and what to do, for every status class, every
 * operation whose advice differs, and every failure before a reply. Messages are pinned whole: they are
 * the keeper's user interface when something goes wrong.
 */
import { describe, expect, it } from 'vitest';
import { type CallContext, type Operation, errorCode, errorForFailure, errorForStatus, malformed, sanitizeRequestId, sanitizeServerText } from '../../src/api/classify.js';
import { ApiError, isFatal, isRetryable } from '../../src/api/errors.js';

const ctx = (operation: Operation, workId?: string): CallContext => ({
  operation,
  ...(workId === undefined ? {} : { workId }),
  environmentId: 'env_1',
  origin: 'https://api.example',
  requestId: 'rid-1',
  scrub: (t) => t.replaceAll('pt-secret', '[REDACTED]'),
});
const status = (code: number, op: Operation, env: { errorType?: string; message?: string } = {}, workId?: string, retryAfterMs?: number) =>
  errorForStatus(code, env, retryAfterMs, ctx(op, workId));

describe('errorForStatus: transient answers', () => {
  it('408, 429 and every 5xx are transient, with the advice of the operation', () => {
    expect(status(503, 'heartbeat', {}, 'work_1').message).toBe(
      'heartbeat work_1: the control plane answered HTTP 503 (request id rid-1); will retry with the same precondition and Idempotency-Key within the lease',
    );
    expect(status(500, 'poll').message).toBe('poll env_1: the control plane answered HTTP 500 (request id rid-1); will poll again after a backoff');
    expect(status(599, 'stop', {}, 'work_1').message).toBe('stop work_1: the control plane answered HTTP 599 (request id rid-1); safe to retry after a short backoff');
    for (const code of [408, 429, 500, 599]) expect(status(code, 'get').kind, String(code)).toBe('transient');
    for (const code of [400, 499, 600, 302]) expect(status(code, 'get').kind, String(code)).toBe('bad_request');
  });

  it('says how long the server asked to wait, in whole or tenths of seconds', () => {
    expect(status(429, 'poll', {}, undefined, 2000).message).toBe(
      'poll env_1: the control plane answered HTTP 429 (request id rid-1); the server asked to wait 2 s; will poll again after a backoff',
    );
    expect(status(429, 'poll', {}, undefined, 1500).message).toContain('the server asked to wait 1.5 s;');
    expect(status(429, 'poll', {}, undefined, 2000)).toMatchObject({ retryAfterMs: 2000, status: 429, requestId: 'rid-1', operation: 'poll' });
  });

  it('quotes the server envelope (type and message), cleaned of control characters and the token', () => {
    const err = status(502, 'ack', { errorType: 'api_error', message: 'upstream\n pt-secret\u0000 down' }, 'work_1');
    expect(err.message).toBe(
      'ack work_1: the control plane answered HTTP 502 (api_error: "upstream [REDACTED] down") (request id rid-1); safe to retry after a short backoff',
    );
    expect(err).toMatchObject({ errorType: 'api_error', workId: 'work_1' });
    expect(status(502, 'ack', { message: 'only a message' }).message).toContain('HTTP 502 ("only a message")');
    expect(status(502, 'ack', { errorType: 'only_type' }).message).toContain('HTTP 502 (only_type)');
  });
});

describe('errorForStatus: answers that end the call', () => {
  it('412: the lease is lost', () => {
    const err = status(412, 'heartbeat', {}, 'work_1');
    expect(err.kind).toBe('lease_lost');
    expect(err.message).toBe(
      'heartbeat work_1: the lease is lost, another holder took over: HTTP 412 (request id rid-1); stop the job and send no more heartbeats for this item',
    );
  });

  it('409 means something different on ack, on heartbeat and elsewhere', () => {
    expect(status(409, 'ack', {}, 'work_1').message).toBe(
      'ack work_1: the item was claimed by another worker, changed state, or is stopping/stopped: HTTP 409 (request id rid-1); drop the item and poll again',
    );
    expect(status(409, 'heartbeat', {}, 'work_1').message).toBe(
      'heartbeat work_1: the item is stopped or back in the queue, so it cannot hold a lease: HTTP 409 (request id rid-1); stop the job now; no stop confirmation is needed',
    );
    expect(status(409, 'update_metadata', {}, 'work_1').message).toBe(
      'update_metadata work_1: the item changed state concurrently: HTTP 409 (request id rid-1); read the item again before acting on it',
    );
    expect(status(409, 'ack').kind).toBe('conflict');
  });

  it('401 and 403: the token was refused; the message names where the token comes from and what it must allow', () => {
    for (const code of [401, 403]) {
      const err = status(code, 'poll');
      expect(err.kind).toBe('auth');
      expect(err.message).toBe(
        `poll env_1: the control plane refused the token: HTTP ${code} (request id rid-1); check QODER_PAT (or QODER_PAT_FILE / the qoder-pat credential): ` +
          'the token must be valid, unexpired, for this region\'s gateway (https://api.example) and allowed to use environment env_1',
      );
    }
  });

  it('404 names the environment, the item, or either, from what the server said', () => {
    expect(status(404, 'poll').message).toBe(
      'poll env_1: environment env_1 not found: HTTP 404 (request id rid-1); check QODER_ENVIRONMENT_ID and that the token belongs to the same region and organisation',
    );
    expect(status(404, 'get', { message: 'work item work_1 not found' }, 'work_1').message).toBe(
      'get work_1: work item work_1 not found: HTTP 404 ("work item work_1 not found") (request id rid-1); the item no longer exists; drop it',
    );
    expect(status(404, 'get', { message: 'no such work_1' }, 'work_1').message).toContain('work item work_1 not found');
    expect(status(404, 'get', { message: 'Environment env_1 not found' }, 'work_1').message).toContain(': environment env_1 not found:');
    expect(status(404, 'get', {}, 'work_1').message).toBe(
      'get work_1: environment env_1 or work item work_1 not found: HTTP 404 (request id rid-1); drop the item; if every call fails this way, check QODER_ENVIRONMENT_ID',
    );
    expect(status(404, 'get', { message: 'gone' }, 'work_1').message).toContain('environment env_1 or work item work_1 not found');
    expect(status(404, 'get').kind).toBe('not_found');
  });

  it('other 4xx: rejected as invalid, or the environment is not self_hosted', () => {
    expect(status(400, 'poll').message).toBe(
      'poll env_1: HTTP 400 (request id rid-1); the request was rejected as invalid; this is not retryable, check the configuration (QODER_ENVIRONMENT_ID, QODER_API_URL) and the keeper version',
    );
    for (const text of ['environment is not self_hosted', 'Self-Hosted only', 'selfhosted required', 'self hosted']) {
      expect(status(400, 'poll', { message: text }).message, text).toContain(
        '; environment env_1 is not a self_hosted environment: set QODER_ENVIRONMENT_ID to a self_hosted one',
      );
    }
  });

  it('anything else (a redirect, 1xx, 6xx): not the API gateway', () => {
    const err = status(302, 'poll');
    expect(err.kind).toBe('bad_request');
    expect(err.message).toBe('poll env_1: unexpected HTTP 302 from https://api.example (request id rid-1); check that QODER_API_URL points at the Qoder API gateway');
  });
});

describe('errorForFailure: no usable reply', () => {
  it('our own deadline: no complete reply within the timeout', () => {
    const err = errorForFailure(new Error('aborted'), { kind: 'timeout', timeoutMs: 1500 }, ctx('heartbeat', 'work_1'), 'body');
    expect(err.kind).toBe('transient');
    expect(err.message).toBe(
      'heartbeat work_1: no complete reply within 1500 ms (request id rid-1); will retry with the same precondition and Idempotency-Key within the lease',
    );
  });

  it('the caller cancelled, before a reply or while reading it', () => {
    expect(errorForFailure(new Error('x'), { kind: 'caller' }, ctx('poll'), 'request').message).toBe(
      'poll env_1: the call was cancelled by the caller before a reply (request id rid-1)',
    );
    expect(errorForFailure(new Error('x'), { kind: 'caller' }, ctx('poll'), 'body').message).toContain('while reading the reply');
  });

  it('network errors in words, found through the cause chain', () => {
    const refused = Object.assign(new Error('connect'), { code: 'ECONNREFUSED' });
    expect(errorForFailure(refused, undefined, ctx('poll'), 'request').message).toBe(
      'poll env_1: connection refused before a reply from https://api.example (request id rid-1); will poll again after a backoff',
    );
    const wrapped = new Error('fetch failed', { cause: Object.assign(new Error('x'), { code: 'UND_ERR_SOCKET' }) });
    expect(errorForFailure(wrapped, undefined, ctx('get', 'work_1'), 'body').message).toContain('get work_1: connection reset while reading the reply from');
    const odd = Object.assign(new Error('x'), { code: 'EWEIRD' });
    expect(errorForFailure(odd, undefined, ctx('poll'), 'request').message).toContain('poll env_1: network error EWEIRD before a reply');
    expect(errorForFailure(new Error('x'), undefined, ctx('poll'), 'request').message).toContain('poll env_1: network error before a reply');
    expect(errorForFailure(refused, undefined, ctx('poll'), 'request')).toMatchObject({ kind: 'transient', cause: refused, requestId: 'rid-1' });
  });

  it('an argument undici rejects is a bug of ours, not retryable', () => {
    const err = errorForFailure(Object.assign(new Error('bad'), { code: 'UND_ERR_INVALID_ARG' }), undefined, ctx('poll'), 'request');
    expect(err.kind).toBe('bad_request');
    expect(err.message).toBe('poll env_1: the HTTP client rejected the request as invalid (request id rid-1); this is a bug in lease-keeper');
  });

  it('errorCode looks five causes deep and skips undici\'s retry wrapper', () => {
    let e: unknown = Object.assign(new Error('root'), { code: 'ECONNRESET' });
    for (let i = 0; i < 4; i++) e = new Error(`wrap ${i}`, { cause: e });
    expect(errorCode(e)).toBe('ECONNRESET');
    expect(errorCode(new Error('one more', { cause: e }))).toBeUndefined();
    expect(errorCode(Object.assign(new Error('r'), { code: 'UND_ERR_REQ_RETRY', cause: Object.assign(new Error('c'), { code: 'ETIMEDOUT' }) }))).toBe('ETIMEDOUT');
    expect(errorCode(Object.assign(new Error('n'), { code: 42 }))).toBeUndefined();
    expect(errorCode(null)).toBeUndefined();
    expect(errorCode('ECONNRESET')).toBeUndefined();
  });
});

describe('malformed 2xx replies and server text', () => {
  it('a 2xx that cannot be trusted says so and says what to do', () => {
    const cause = new Error('bad json');
    const err = malformed(ctx('heartbeat', 'work_1'), 200, 'the body is not JSON', cause);
    expect(err).toMatchObject({ kind: 'malformed', status: 200, cause, workId: 'work_1' });
    expect(err.message).toBe(
      'heartbeat work_1: the control plane answered HTTP 200 but the body is not JSON (request id rid-1); the reply was not used, treat the outcome as unknown (check the item state before acting on it)',
    );
  });

  it('server text: spaces for line breaks, no controls, the token replaced, cut at the limit with an ellipsis', () => {
    const scrub = (t: string) => t.replaceAll('pt-secret', '[REDACTED]');
    expect(sanitizeServerText('  a\tb\r\nc  ', scrub)).toBe('a b c');
    expect(sanitizeServerText('x'.repeat(10), scrub, 10)).toBe('x'.repeat(10));
    expect(sanitizeServerText('x'.repeat(11), scrub, 10)).toBe(`${'x'.repeat(10)}…`);
    expect(sanitizeServerText(`${'x'.repeat(9)}\u{1F600}`, scrub, 10)).toBe(`${'x'.repeat(9)}…`); // not half an emoji
    expect(sanitizeServerText('pt-sec\u0000ret', scrub)).toBe('[REDACTED]');
  });

  it('a request id is kept only when it is a non-empty string, cut to 128 characters', () => {
    const scrub = (t: string) => t;
    expect(sanitizeRequestId('req-1', scrub)).toBe('req-1');
    expect(sanitizeRequestId(42, scrub)).toBeUndefined();
    expect(sanitizeRequestId('\u0000\u0001', scrub)).toBeUndefined();
    expect(sanitizeRequestId('r'.repeat(200), scrub)).toBe(`${'r'.repeat(128)}…`);
  });

  it('only transient errors are retried; auth, not found and bad requests end the daemon', () => {
    const kinds = ['transient', 'lease_lost', 'conflict', 'auth', 'not_found', 'bad_request', 'malformed'] as const;
    expect(kinds.filter((k) => isRetryable(new ApiError(k, 'm')))).toEqual(['transient']);
    expect(kinds.filter((k) => isFatal(new ApiError(k, 'm')))).toEqual(['auth', 'not_found', 'bad_request']);
    expect(isRetryable(Object.assign(new Error('x'), { kind: 'transient' }))).toBe(false);
    expect(isFatal(Object.assign(new Error('x'), { kind: 'auth' }))).toBe(false);
  });
});
