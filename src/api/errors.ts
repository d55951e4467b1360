/**
 * One errors module: every failure of a control-plane call is an ApiError with a `kind` the
 * lease logic switches on. Messages never contain the token (the client never puts it in one).
 */

export type ApiErrorKind =
  | 'transient' //   network, timeout, 408, 429, 5xx: retry within the deadline
  | 'lease_lost' //  412 on heartbeat: another holder took over
  | 'conflict' //    409: on heartbeat the item is stopped/queued; on ack someone else has it
  | 'auth' //        401/403: bad or expired token; fatal, exit 77
  | 'not_found' //   404: environment or item not found
  | 'bad_request' // 400 (incl. environment not self_hosted) and other 4xx
  | 'malformed'; //  a 2xx reply we cannot trust: not JSON, wrong shape, bad ids

export interface ApiErrorDetails {
  /** HTTP status, absent for network errors and timeouts. */
  status?: number;
  /** The envelope's error.type, when the server sent one. */
  errorType?: string;
  /** The request id of the failed call (the server's if it echoed one, otherwise ours). */
  requestId?: string;
  /** Milliseconds from Retry-After (seconds or HTTP date), when the server sent one. */
  retryAfterMs?: number;
  /** Which call failed: 'poll', 'ack', 'heartbeat', 'get', 'update_metadata', 'stop', 'stats'. */
  operation?: string;
  /** The work item the call was about, when it had one. */
  workId?: string;
  cause?: unknown;
}

export class ApiError extends Error {
  override readonly name: string = 'ApiError';
  readonly kind: ApiErrorKind;
  readonly status?: number;
  readonly errorType?: string;
  readonly requestId?: string;
  readonly retryAfterMs?: number;
  readonly operation?: string;
  readonly workId?: string;

  constructor(kind: ApiErrorKind, message: string, details: ApiErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.kind = kind;
    this.status = details.status;
    this.errorType = details.errorType;
    this.requestId = details.requestId;
    this.retryAfterMs = details.retryAfterMs;
    this.operation = details.operation;
    this.workId = details.workId;
  }
}

export class TransientError extends ApiError {
  override readonly name = 'TransientError';
  constructor(message: string, details: ApiErrorDetails = {}) {
    super('transient', message, details);
  }
}
export class LeaseLostError extends ApiError {
  override readonly name = 'LeaseLostError';
  constructor(message: string, details: ApiErrorDetails = {}) {
    super('lease_lost', message, details);
  }
}
export class ConflictError extends ApiError {
  override readonly name = 'ConflictError';
  constructor(message: string, details: ApiErrorDetails = {}) {
    super('conflict', message, details);
  }
}
export class AuthError extends ApiError {
  override readonly name = 'AuthError';
  constructor(message: string, details: ApiErrorDetails = {}) {
    super('auth', message, details);
  }
}
export class NotFoundError extends ApiError {
  override readonly name = 'NotFoundError';
  constructor(message: string, details: ApiErrorDetails = {}) {
    super('not_found', message, details);
  }
}
export class BadRequestError extends ApiError {
  override readonly name = 'BadRequestError';
  constructor(message: string, details: ApiErrorDetails = {}) {
    super('bad_request', message, details);
  }
}
export class MalformedReplyError extends ApiError {
  override readonly name = 'MalformedReplyError';
  constructor(message: string, details: ApiErrorDetails = {}) {
    super('malformed', message, details);
  }
}

/** Worth another attempt while the lease (or the poll backoff) allows. */
export function isRetryable(err: unknown): err is ApiError {
  return err instanceof ApiError && err.kind === 'transient';
}

/** Ends the daemon: retrying cannot help (bad token, wrong environment). */
export function isFatal(err: unknown): err is ApiError {
  return err instanceof ApiError && (err.kind === 'auth' || err.kind === 'not_found' || err.kind === 'bad_request');
}
