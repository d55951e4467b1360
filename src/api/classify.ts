/**
 * Turns what came back from the control plane (a status and an error envelope, or a failure before a
 * reply) into one ApiError subclass, with a message that says what happened and what to do next.
 *
 * Server-supplied text (messages, error types, request ids) is untrusted. It is stripped of control
 * characters, cut to length, and every occurrence of the token is replaced before it reaches a message.
 */
import {
  ApiError,
  AuthError,
  BadRequestError,
  ConflictError,
  LeaseLostError,
  MalformedReplyError,
  NotFoundError,
  TransientError,
  type ApiErrorDetails,
} from './errors.js';
import type { ErrorEnvelope } from './parse.js';

export { makeScrubber } from '../redact.js';

export type Operation = 'poll' | 'ack' | 'heartbeat' | 'get' | 'update_metadata' | 'stop' | 'stats';

/** What the classifier needs to know about the call that failed. */
export interface CallContext {
  operation: Operation;
  workId?: string;
  environmentId: string;
  origin: string;
  /** The request id to report: the server's when it sent one, otherwise ours. */
  requestId: string;
  /** Removes the token (and its URL-encoded form) from any text. */
  scrub: (text: string) => string;
}

export const SERVER_TEXT_MAX = 300;

// Line breaks and tabs become spaces; every other C0, DEL and C1 control character, the Unicode
// line/paragraph separators and the bidi controls are deleted (so they cannot split a token either).
const SPACE_RE = /[\t\n\v\f\r\u0085\u2028\u2029]+/g;
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]+/g;

/** Server text made safe for a message or a log line: no control characters, no token, at most `max` characters. */
export function sanitizeServerText(text: string, scrub: (t: string) => string, max = SERVER_TEXT_MAX): string {
  const clean = scrub(scrub(text).replace(SPACE_RE, ' ').replace(CONTROL_RE, '').replace(/\s+/g, ' ').trim());
  if (clean.length <= max) return clean;
  // Do not end on half of a surrogate pair.
  let cut = clean.slice(0, max);
  if (/[\ud800-\udbff]$/.test(cut)) cut = cut.slice(0, -1);
  return `${cut}…`;
}

/** A request id we are willing to report: printable, short, token-free. */
export function sanitizeRequestId(value: unknown, scrub: (t: string) => string): string | undefined {
  if (typeof value !== 'string') return undefined;
  const clean = sanitizeServerText(value, scrub, 128);
  return clean.length > 0 ? clean : undefined;
}

const MAX_RETRY_AFTER_MS = 24 * 3600 * 1000;

/** Retry-After as milliseconds from now: delay-seconds or an HTTP date (past dates give 0). */
export function parseRetryAfter(value: string | string[] | undefined, nowMs: number = Date.now()): number | undefined {
  const raw = (Array.isArray(value) ? value[0] : value)?.trim();
  if (!raw) return undefined;
  if (/^\d+(\.\d+)?$/.test(raw)) return Math.min(Math.round(Number(raw) * 1000), MAX_RETRY_AFTER_MS);
  // An HTTP date always names a weekday or a month; this keeps Date.parse from reading bare numbers.
  if (!/[A-Za-z]{3}/.test(raw)) return undefined;
  const at = Date.parse(raw);
  if (Number.isNaN(at)) return undefined;
  return Math.min(Math.max(0, at - nowMs), MAX_RETRY_AFTER_MS);
}

function subject(ctx: CallContext): string {
  return `${ctx.operation} ${ctx.workId ?? ctx.environmentId}`;
}

function details(ctx: CallContext, extra: ApiErrorDetails): ApiErrorDetails {
  return { requestId: ctx.requestId, operation: ctx.operation, workId: ctx.workId, ...extra };
}

function transientAdvice(op: Operation): string {
  switch (op) {
    case 'heartbeat':
      return 'will retry with the same precondition and Idempotency-Key within the lease';
    case 'poll':
      return 'will poll again after a backoff';
    default:
      return 'safe to retry after a short backoff';
  }
}

/** `HTTP 404 (not_found_error: "Environment env_x not found")` */
function serverPart(status: number, errorType: string | undefined, message: string | undefined): string {
  const inner = [errorType, message === undefined ? undefined : `"${message}"`].filter(Boolean).join(': ');
  return inner ? `HTTP ${status} (${inner})` : `HTTP ${status}`;
}

/** A non-2xx reply as an ApiError. `envelope` holds whatever the body offered (possibly nothing). */
export function errorForStatus(status: number, envelope: ErrorEnvelope, retryAfterMs: number | undefined, ctx: CallContext): ApiError {
  const errorType = envelope.errorType === undefined ? undefined : sanitizeServerText(envelope.errorType, ctx.scrub, 64);
  const message = envelope.message === undefined ? undefined : sanitizeServerText(envelope.message, ctx.scrub);
  const server = serverPart(status, errorType, message);
  const rid = `request id ${ctx.requestId}`;
  const d = details(ctx, { status, errorType, retryAfterMs });
  const who = subject(ctx);

  if (status === 408 || status === 429 || (status >= 500 && status <= 599)) {
    const wait = retryAfterMs === undefined ? '' : `; the server asked to wait ${(retryAfterMs / 1000).toFixed(retryAfterMs % 1000 === 0 ? 0 : 1)} s`;
    return new TransientError(`${who}: the control plane answered ${server} (${rid})${wait}; ${transientAdvice(ctx.operation)}`, d);
  }
  switch (status) {
    case 412:
      return new LeaseLostError(
        `${who}: the lease is lost, another holder took over: ${server} (${rid}); stop the job and send no more heartbeats for this item`,
        d,
      );
    case 409:
      return new ConflictError(`${who}: ${conflictMeaning(ctx.operation)}: ${server} (${rid}); ${conflictAdvice(ctx.operation)}`, d);
    case 401:
    case 403:
      return new AuthError(
        `${who}: the control plane refused the token: ${server} (${rid}); check QODER_PAT (or QODER_PAT_FILE / the qoder-pat credential): ` +
          `the token must be valid, unexpired, for this region's gateway (${ctx.origin}) and allowed to use environment ${ctx.environmentId}`,
        d,
      );
    case 404:
      return new NotFoundError(`${who}: ${notFoundWhat(ctx, message)} not found: ${server} (${rid}); ${notFoundAdvice(ctx, message)}`, d);
  }
  if (status >= 400 && status <= 499) {
    const selfHosted = message !== undefined && /self[_ -]?hosted/i.test(message);
    const advice = selfHosted
      ? `environment ${ctx.environmentId} is not a self_hosted environment: set QODER_ENVIRONMENT_ID to a self_hosted one`
      : 'the request was rejected as invalid; this is not retryable, check the configuration (QODER_ENVIRONMENT_ID, QODER_API_URL) and the keeper version';
    return new BadRequestError(`${who}: ${server} (${rid}); ${advice}`, d);
  }
  return new BadRequestError(
    `${who}: unexpected ${server} from ${ctx.origin} (${rid}); check that QODER_API_URL points at the Qoder API gateway`,
    d,
  );
}

function conflictMeaning(op: Operation): string {
  switch (op) {
    case 'ack':
      return 'the item was claimed by another worker, changed state, or is stopping/stopped';
    case 'heartbeat':
      return 'the item is stopped or back in the queue, so it cannot hold a lease';
    default:
      return 'the item changed state concurrently';
  }
}

function conflictAdvice(op: Operation): string {
  switch (op) {
    case 'ack':
      return 'drop the item and poll again';
    case 'heartbeat':
      return 'stop the job now; no stop confirmation is needed';
    default:
      return 'read the item again before acting on it';
  }
}

/** Which resource a 404 is about, from the server's message: the item only when it names one. */
function notFoundTarget(ctx: CallContext, message: string | undefined): 'item' | 'environment' | 'either' {
  if (ctx.workId === undefined) return 'environment';
  if (message !== undefined && /\bwork[ _]item\b|\bwork_[A-Za-z0-9]/i.test(message)) return 'item';
  if (message !== undefined && /environment/i.test(message)) return 'environment';
  return 'either';
}

function notFoundWhat(ctx: CallContext, message: string | undefined): string {
  switch (notFoundTarget(ctx, message)) {
    case 'item':
      return `work item ${ctx.workId}`;
    case 'environment':
      return `environment ${ctx.environmentId}`;
    case 'either':
      return `environment ${ctx.environmentId} or work item ${ctx.workId}`;
  }
}

function notFoundAdvice(ctx: CallContext, message: string | undefined): string {
  switch (notFoundTarget(ctx, message)) {
    case 'item':
      return 'the item no longer exists; drop it';
    case 'environment':
      return 'check QODER_ENVIRONMENT_ID and that the token belongs to the same region and organisation';
    case 'either':
      return 'drop the item; if every call fails this way, check QODER_ENVIRONMENT_ID';
  }
}

/** Node/undici error codes that we can describe in words. Everything else is "a network error". */
const NETWORK_WORDS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection reset',
  UND_ERR_SOCKET: 'connection reset',
  UND_ERR_CLOSED: 'the HTTP client was already closed',
  UND_ERR_DESTROYED: 'the HTTP client was already closed',
  UND_ERR_CONNECT_TIMEOUT: 'connection attempt timed out',
  UND_ERR_HEADERS_TIMEOUT: 'no reply headers in time',
  UND_ERR_BODY_TIMEOUT: 'the reply body stalled',
  ENOTFOUND: 'host name not found',
  EAI_AGAIN: 'host name lookup failed temporarily',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ENETDOWN: 'network down',
};

export function errorCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e !== null && typeof e === 'object' && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code !== 'UND_ERR_REQ_RETRY') return code;
  }
  return undefined;
}

/** Why the per-call signal fired: our deadline, or the caller. */
export type AbortCause = { kind: 'timeout'; timeoutMs: number } | { kind: 'caller' };

/** A failure before a usable reply: our deadline, the caller's abort, or the network. */
export function errorForFailure(err: unknown, aborted: AbortCause | undefined, ctx: CallContext, phase: 'request' | 'body'): ApiError {
  const who = subject(ctx);
  const rid = `request id ${ctx.requestId}`;
  const when = phase === 'body' ? 'while reading the reply' : 'before a reply';
  if (aborted?.kind === 'timeout') {
    return new TransientError(
      `${who}: no complete reply within ${aborted.timeoutMs} ms (${rid}); ${transientAdvice(ctx.operation)}`,
      details(ctx, { cause: err }),
    );
  }
  if (aborted?.kind === 'caller') {
    return new TransientError(`${who}: the call was cancelled by the caller ${when} (${rid})`, details(ctx, { cause: err }));
  }
  const code = errorCode(err);
  if (code === 'UND_ERR_INVALID_ARG') {
    return new BadRequestError(`${who}: the HTTP client rejected the request as invalid (${rid}); this is a bug in lease-keeper`, details(ctx, { cause: err }));
  }
  const words = (code !== undefined && NETWORK_WORDS[code]) || `network error${code ? ` ${code}` : ''}`;
  return new TransientError(`${who}: ${words} ${when} from ${ctx.origin} (${rid}); ${transientAdvice(ctx.operation)}`, details(ctx, { cause: err }));
}

/** A 2xx reply we cannot trust. */
export function malformed(ctx: CallContext, status: number, what: string, cause?: unknown): MalformedReplyError {
  return new MalformedReplyError(
    `${subject(ctx)}: the control plane answered HTTP ${status} but ${what} (request id ${ctx.requestId}); the reply was not used, ` +
      'treat the outcome as unknown (check the item state before acting on it)',
    details(ctx, { status, cause }),
  );
}
