/**
 * The edges of the failure classifier that api-classify.test.ts leaves open: every network error code
 * in the words an operator reads, the boundary between a rejected request (4xx) and "not the API
 * gateway", which 404s blame the item, Retry-After forms, the original error kept as the cause (it is
 * what a debug log shows), the class names that prefix every logged error, and server text cleaning.
 */
import { describe, expect, it } from 'vitest';
import { type CallContext, type Operation, errorForFailure, errorForStatus, parseRetryAfter, sanitizeServerText } from '../../src/api/classify.js';
import {
  ApiError,
  AuthError,
  BadRequestError,
  ConflictError,
  LeaseLostError,
  MalformedReplyError,
  NotFoundError,
  TransientError,
} from '../../src/api/errors.js';

const ctx = (operation: Operation, workId?: string): CallContext => ({
  operation,
  ...(workId === undefined ? {} : { workId }),
  environmentId: 'env_1',
  origin: 'https://api.example',
  requestId: 'rid-1',
  scrub: (t) => t,
});

describe('network failures in words', () => {
  it.each([
    ['ECONNREFUSED', 'connection refused'],
    ['ECONNRESET', 'connection reset'],
    ['EPIPE', 'connection reset'],
    ['UND_ERR_SOCKET', 'connection reset'],
    ['UND_ERR_CLOSED', 'the HTTP client was already closed'],
    ['UND_ERR_DESTROYED', 'the HTTP client was already closed'],
    ['UND_ERR_CONNECT_TIMEOUT', 'connection attempt timed out'],
    ['UND_ERR_HEADERS_TIMEOUT', 'no reply headers in time'],
    ['UND_ERR_BODY_TIMEOUT', 'the reply body stalled'],
    ['ENOTFOUND', 'host name not found'],
    ['EAI_AGAIN', 'host name lookup failed temporarily'],
    ['ETIMEDOUT', 'connection timed out'],
    ['EHOSTUNREACH', 'host unreachable'],
    ['ENETUNREACH', 'network unreachable'],
    ['ENETDOWN', 'network down'],
  ])('%s: %s', (code, words) => {
    const cause = Object.assign(new Error('x'), { code });
    const err = errorForFailure(cause, undefined, ctx('get', 'work_1'), 'request');
    expect(err.message).toBe(`get work_1: ${words} before a reply from https://api.example (request id rid-1); safe to retry after a short backoff`);
    expect(err.cause).toBe(cause);
  });

  it('the original error stays the cause of a timeout, a cancel and an invalid request', () => {
    const cause = new Error('underlying');
    expect(errorForFailure(cause, { kind: 'timeout', timeoutMs: 5 }, ctx('poll'), 'request').cause).toBe(cause);
    expect(errorForFailure(cause, { kind: 'caller' }, ctx('poll'), 'request').cause).toBe(cause);
    const invalid = Object.assign(new Error('bad header'), { code: 'UND_ERR_INVALID_ARG' });
    expect(errorForFailure(invalid, undefined, ctx('poll'), 'request').cause).toBe(invalid);
  });
});

describe('statuses at the edges', () => {
  it('499 is still a rejected request; 399 and 600 are not the API gateway', () => {
    expect(errorForStatus(499, {}, undefined, ctx('get', 'work_1')).message).toBe(
      'get work_1: HTTP 499 (request id rid-1); the request was rejected as invalid; this is not retryable, check the configuration ' +
        '(QODER_ENVIRONMENT_ID, QODER_API_URL) and the keeper version',
    );
    for (const code of [399, 600]) {
      expect(errorForStatus(code, {}, undefined, ctx('get', 'work_1')).message).toBe(
        `get work_1: unexpected HTTP ${code} from https://api.example (request id rid-1); check that QODER_API_URL points at the Qoder API gateway`,
      );
    }
  });

  it('a 400 whose message says something else is not taken for a self_hosted refusal', () => {
    expect(errorForStatus(400, { errorType: 'invalid_request_error', message: 'metadata is too large' }, undefined, ctx('update_metadata', 'work_1')).message).toBe(
      'update_metadata work_1: HTTP 400 (invalid_request_error: "metadata is too large") (request id rid-1); the request was rejected as invalid; ' +
        'this is not retryable, check the configuration (QODER_ENVIRONMENT_ID, QODER_API_URL) and the keeper version',
    );
  });

  it('a 404 blames the item when the server names a work item, however written', () => {
    const what = (message: string) => errorForStatus(404, { message }, undefined, ctx('get', 'work_1')).message;
    expect(what('Work item not found')).toMatch(/^get work_1: work item work_1 not found: .*; the item no longer exists; drop it$/);
    expect(what('no such work_item')).toMatch(/^get work_1: work item work_1 not found: /);
    expect(what('work_abc-123 does not exist')).toMatch(/^get work_1: work item work_1 not found: /);
    // Neither named: either could be gone.
    expect(what('workitem gone')).toMatch(/^get work_1: environment env_1 or work item work_1 not found: .*; drop the item; if every call fails this way, check QODER_ENVIRONMENT_ID$/);
    expect(what('work_ missing')).toMatch(/^get work_1: environment env_1 or work item work_1 not found: /);
  });
});

describe('Retry-After forms', () => {
  const now = Date.parse('2026-11-28T10:00:00Z');
  it('delay-seconds of several digits and with a fraction', () => {
    expect(parseRetryAfter('12', now)).toBe(12_000);
    expect(parseRetryAfter('1.5', now)).toBe(1500);
    expect(parseRetryAfter('0.25', now)).toBe(250);
    expect(parseRetryAfter('1.', now)).toBeUndefined();
  });
  it('a date that is not an HTTP date (no weekday or month name) is ignored', () => {
    expect(parseRetryAfter('2026-11-28T10:00:05Z', now)).toBeUndefined();
    expect(parseRetryAfter('Sat, 28 Nov 2026 10:00:07 GMT', now)).toBe(7000);
  });
});

describe('server text', () => {
  it('keeps ordinary letters (a capital V is not a vertical tab)', () => {
    expect(sanitizeServerText('Version\u000bVault', (t) => t)).toBe('Version Vault');
  });
  it('a cut keeps an emoji written before the cut whole', () => {
    const text = `\u{1F600}${'x'.repeat(20)}`;
    expect(sanitizeServerText(text, (t) => t, 10)).toBe(`\u{1F600}${'x'.repeat(8)}…`);
  });
});

describe('error classes', () => {
  it('each kind has its class name (the prefix of every logged error) and its kind', () => {
    const made: [ApiError, string, string][] = [
      [new ApiError('transient', 'm'), 'ApiError', 'transient'],
      [new TransientError('m'), 'TransientError', 'transient'],
      [new LeaseLostError('m'), 'LeaseLostError', 'lease_lost'],
      [new ConflictError('m'), 'ConflictError', 'conflict'],
      [new AuthError('m'), 'AuthError', 'auth'],
      [new NotFoundError('m'), 'NotFoundError', 'not_found'],
      [new BadRequestError('m'), 'BadRequestError', 'bad_request'],
      [new MalformedReplyError('m'), 'MalformedReplyError', 'malformed'],
    ];
    for (const [err, name, kind] of made) {
      expect(err.name).toBe(name);
      expect(String(err)).toBe(`${name}: m`);
      expect(err.kind).toBe(kind);
      expect(err).toBeInstanceOf(Error);
    }
  });

  it('an error without a cause carries none; one with a cause keeps it', () => {
    expect(Object.hasOwn(new TransientError('m'), 'cause')).toBe(false);
    expect(Object.hasOwn(new TransientError('m', { status: 503 }), 'cause')).toBe(false);
    const cause = new Error('c');
    expect(new TransientError('m', { cause }).cause).toBe(cause);
  });
});
