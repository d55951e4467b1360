/**
 * The control-plane client: one method per work endpoint, each one HTTP exchange, no retries.
 *
 * Every call either resolves a `Reply<T>` whose value passed validation (parse.ts) or rejects with an
 * ApiError (errors.ts); nothing else escapes. Deadlines are AbortSignals (undici's own header/body
 * timers tick in whole seconds, so they are switched off). The token lives in a private field (the
 * headers sent with every request) and is scrubbed from every piece of server text that reaches an
 * error message.
 *
 * Token rotation (spec §5): a 401/403 makes the client re-read its Credential; if that now holds another
 * token than the one the refused request carried, the same request (same path, so the same precondition;
 * same headers, so the same Idempotency-Key) is sent once more, at once, with the new token. The caller
 * never sees the first refusal: no lease is lost, no job signalled. An unchanged token is the AuthError
 * it always was.
 */
import { randomUUID } from 'node:crypto';
import type { Dispatcher } from 'undici';
import {
  errorForFailure,
  errorForStatus,
  makeScrubber,
  malformed,
  parseRetryAfter,
  sanitizeRequestId,
  type AbortCause,
  type CallContext,
  type Operation,
} from './classify.js';
import { type CallSignal, onAbort } from './cancel.js';
import { ApiError, BadRequestError, MalformedReplyError } from './errors.js';
import { type RawReply, exchange } from './exchange.js';
import { Pool } from './pool.js';
import {
  ENV_ID_RE,
  ReplyShapeError,
  WORK_ID_RE,
  describeJson,
  parseErrorEnvelope,
  parseHeartbeat,
  parseStats,
  parseWorkItem,
  parseWorkItemOrNull,
} from './parse.js';
import type { Reply, WorkHeartbeat, WorkItem, WorkQueueStats } from './types.js';

/** The most reply body we read; a bigger 2xx body is malformed. */
export const MAX_REPLY_BYTES = 1024 * 1024;
/** Deadline of a call when the caller gives none (poll adds its block_ms). */
export const DEFAULT_TIMEOUT_MS = 30_000;
/** The longest delay setTimeout accepts. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Strict UTF-8; one-shot decode() calls keep no state between replies, so one decoder serves all. */
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Where the bearer token comes from: fixed, or a source that can be re-read (QODER_PAT_FILE, the systemd
 * credential) so that a rotated token is picked up without a restart. config/token.ts has the real one.
 */
export interface Credential {
  /** The token to send now. */
  current(): string;
  /**
   * Called after a 401/403: re-reads the source and returns the token to send now. The same token when the
   * source still holds it, cannot change (QODER_PAT) or holds a new one that was refused (its owner logs why).
   */
  reread(): string;
  /** Every token held so far, the current one included; only grows. Scrubbed from every message. */
  readonly held: readonly string[];
}

/** A token that never changes (QODER_PAT, tests). */
export function fixedCredential(token: string): Credential {
  const held = [token];
  return { current: () => token, reread: () => token, held };
}

export interface WorkApiOptions {
  /** Gateway origin, e.g. `https://api.qoder.com` (a path prefix is kept; `/api/v1/cloud/...` is appended). */
  apiUrl: string;
  /** Bearer token, or a Credential that can be re-read (rotation). Never logged, never in a message. */
  token: string | Credential;
  /** `env_…` */
  environmentId: string;
  /** Defaults to a keep-alive undici Pool for the origin (at most MAX_CONNECTIONS), closed by close(); an injected one is never closed. */
  dispatcher?: Dispatcher;
  userAgent?: string;
  /** Deadline of a call without `timeoutMs`. Default 30 000 ms (poll: block_ms + this). */
  defaultTimeoutMs?: number;
}

/** Per-call options: the caller's signal (e.g. the lease's) and a deadline in milliseconds. */
export interface CallOptions {
  /** An AbortSignal, or the lighter CallCancel (cancel.ts). */
  signal?: CallSignal;
  /**
   * Deadline of this call; default: the client's. `null`: no timer of the client's own, the caller's
   * `signal` (then required) is the only deadline. The lease driver uses it for heartbeats, whose cutoff
   * its own timer already watches: one timer and one AbortController less per heartbeat.
   */
  timeoutMs?: number | null;
}

export interface PollParams {
  workerId: string;
  /** 1..999; default 999. */
  blockMs?: number;
  /** Redeliver items delivered but not acked for this long (server default 5000). */
  reclaimOlderThanMs?: number;
}

export interface HeartbeatParams {
  /** `NO_HEARTBEAT` or the previous reply's `last_heartbeat`, sent byte for byte. */
  expectedLastHeartbeat: string;
  desiredTtlSeconds: number;
  /** Same key for every retry of one heartbeat. */
  idempotencyKey: string;
}

const DEFAULT_USER_AGENT = `qoder-lease-keeper (node ${process.version})`;
// Visible ASCII, inner spaces allowed: safe as an HTTP header value.
const HEADER_VALUE_RE = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;

interface CallSpec<T> {
  operation: Operation;
  workId?: string;
  method: 'GET' | 'POST';
  /** Below `…/work`, already encoded. */
  path: string;
  headers?: Record<string, string>;
  body?: string;
  parse: (value: unknown) => T;
  defaultTimeoutMs: number;
}

/**
 * Connections to the control plane at most. Uncapped, a burst of due heartbeats (10,000 leases after an
 * event-loop stall) opened one connection per call: thousands of sockets, the server's accept queue
 * overflowed, and calls hung until their leases were fenced. 64 keep-alive connections carry ~1,000
 * calls a second even at a 60 ms round trip; the claims in flight use at most 8 of them.
 */
export const MAX_CONNECTIONS = 64;

export class WorkApi {
  readonly origin: string;
  readonly environmentId: string;
  readonly #basePath: string;
  readonly #dispatcher: Dispatcher;
  readonly #ownsDispatcher: boolean;
  readonly #defaultTimeoutMs: number;
  readonly #credential: Credential;
  readonly #userAgent: string;
  /** Scrubs every token held so far; rebuilt when a rotation adds one. */
  #scrub: (text: string) => string = (t) => t;
  #scrubbedCount = 0;
  /** The headers every request carries (the token among them), rebuilt only when the token changes. */
  #headers: Readonly<Record<string, string>> = {};
  #headersToken: string | null = null;
  #closing: Promise<void> | undefined;

  constructor(options: WorkApiOptions) {
    const { apiUrl, environmentId } = options;
    const credential = typeof options.token === 'string' ? fixedCredential(options.token) : options.token;
    const token = credential?.current();
    let url: URL;
    try {
      url = new URL(apiUrl);
    } catch {
      throw new BadRequestError('apiUrl is not a valid URL; set QODER_API_URL to the gateway origin, e.g. https://api.qoder.com');
    }
    if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
      throw new BadRequestError(`apiUrl must be an http(s) origin without query, fragment or credentials, got ${url.protocol}//${url.host}; set QODER_API_URL`);
    }
    if (typeof token !== 'string' || !HEADER_VALUE_RE.test(token) || token.length > 8192) {
      throw new BadRequestError('the token is empty or contains characters not allowed in an HTTP header; check QODER_PAT');
    }
    if (typeof environmentId !== 'string' || !ENV_ID_RE.test(environmentId)) {
      throw new BadRequestError('environmentId must be env_ followed by 1 to 128 of [A-Za-z0-9_-]; check QODER_ENVIRONMENT_ID');
    }
    const timeout = options.defaultTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!isPositiveFinite(timeout)) throw new BadRequestError('defaultTimeoutMs must be a positive number of milliseconds');

    this.origin = url.origin;
    this.environmentId = environmentId;
    this.#basePath = `${url.pathname.replace(/\/+$/, '')}/api/v1/cloud/environments/${environmentId}/work`;
    const userAgent = options.userAgent ?? DEFAULT_USER_AGENT;
    if (!HEADER_VALUE_RE.test(userAgent)) throw new BadRequestError('userAgent contains characters not allowed in an HTTP header');
    this.#userAgent = userAgent;
    this.#credential = credential;
    this.#defaultTimeoutMs = timeout;
    this.#useToken(token);
    this.#ownsDispatcher = options.dispatcher === undefined;
    this.#dispatcher =
      options.dispatcher ??
      // Keep-alive with undici's idle defaults, at most MAX_CONNECTIONS (calls beyond wait in the pool's
      // queue). Deadlines are AbortSignals; undici's own timers tick in whole seconds, so they are off.
      new Pool(this.origin, { headersTimeout: 0, bodyTimeout: 0, connections: MAX_CONNECTIONS });
  }

  // The methods `return await` their call: awaiting a native promise costs one microtask, returning it from
  // an async function three (a heartbeat's reply passes here ~300 times a second at 1000 leases).

  /** GET …/work/poll: a queued item, or null when none arrived within `blockMs`. */
  async poll(params: PollParams, opts: CallOptions = {}): Promise<Reply<WorkItem | null>> {
    const blockMs = params.blockMs ?? 999;
    const query = [`block_ms=${intParam('poll', 'blockMs', blockMs, 1, 999)}`];
    if (params.reclaimOlderThanMs !== undefined) {
      query.push(`reclaim_older_than_ms=${intParam('poll', 'reclaimOlderThanMs', params.reclaimOlderThanMs, 0, Number.MAX_SAFE_INTEGER)}`);
    }
    return await this.#call(
      {
        operation: 'poll',
        method: 'GET',
        path: `/poll?${query.join('&')}`,
        headers: { 'worker-id': headerParam('poll', 'workerId', params.workerId) },
        parse: (v) => this.#checkItem(parseWorkItemOrNull(v)),
        defaultTimeoutMs: blockMs + this.#defaultTimeoutMs,
      },
      opts,
    );
  }

  /** POST …/work/{id}/ack with the same Worker-ID as the poll. 409: someone else has it. */
  async ack(workId: string, params: { workerId: string }, opts: CallOptions = {}): Promise<Reply<WorkItem>> {
    const id = workIdParam('ack', workId);
    return await this.#call(
      {
        operation: 'ack',
        workId: id,
        method: 'POST',
        path: `/${id}/ack`,
        headers: { 'worker-id': headerParam('ack', 'workerId', params.workerId) },
        parse: (v) => this.#checkItem(parseWorkItem(v), id),
        defaultTimeoutMs: this.#defaultTimeoutMs,
      },
      opts,
    );
  }

  /**
   * POST …/work/{id}/heartbeat?expected_last_heartbeat=…&desired_ttl_seconds=… with an Idempotency-Key.
   * 412: the lease is lost. 409: the item is stopped or queued.
   */
  async heartbeat(workId: string, params: HeartbeatParams, opts: CallOptions = {}): Promise<Reply<WorkHeartbeat>> {
    const id = workIdParam('heartbeat', workId);
    const expected = params.expectedLastHeartbeat;
    if (typeof expected !== 'string' || expected.length === 0 || expected.length > 256) {
      throw invalidArg('heartbeat', 'expectedLastHeartbeat', 'must be NO_HEARTBEAT or the previous last_heartbeat (1 to 256 characters)');
    }
    let encoded: string;
    try {
      encoded = encodeURIComponent(expected);
    } catch {
      throw invalidArg('heartbeat', 'expectedLastHeartbeat', 'is not well-formed Unicode');
    }
    const ttl = intParam('heartbeat', 'desiredTtlSeconds', params.desiredTtlSeconds, 1, Number.MAX_SAFE_INTEGER);
    return await this.#call(
      {
        operation: 'heartbeat',
        workId: id,
        method: 'POST',
        path: `/${id}/heartbeat?expected_last_heartbeat=${encoded}&desired_ttl_seconds=${ttl}`,
        headers: { 'idempotency-key': headerParam('heartbeat', 'idempotencyKey', params.idempotencyKey) },
        parse: parseHeartbeat,
        defaultTimeoutMs: this.#defaultTimeoutMs,
      },
      opts,
    );
  }

  /** GET …/work/{id}. */
  async get(workId: string, opts: CallOptions = {}): Promise<Reply<WorkItem>> {
    const id = workIdParam('get', workId);
    return await this.#call(
      {
        operation: 'get',
        workId: id,
        method: 'GET',
        path: `/${id}`,
        parse: (v) => this.#checkItem(parseWorkItem(v), id),
        defaultTimeoutMs: this.#defaultTimeoutMs,
      },
      opts,
    );
  }

  /** POST …/work/{id} with `{metadata}`: a string upserts a key, null deletes it. */
  async updateMetadata(workId: string, metadata: Record<string, string | null>, opts: CallOptions = {}): Promise<Reply<WorkItem>> {
    const id = workIdParam('update_metadata', workId);
    if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
      throw invalidArg('update_metadata', 'metadata', `must be an object, got ${describeJson(metadata)}`);
    }
    for (const [k, v] of Object.entries(metadata)) {
      if (v !== null && typeof v !== 'string') throw invalidArg('update_metadata', `metadata[${JSON.stringify(k.slice(0, 64))}]`, 'must be a string or null');
    }
    return await this.#call(
      {
        operation: 'update_metadata',
        workId: id,
        method: 'POST',
        path: `/${id}`,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ metadata }),
        parse: (v) => this.#checkItem(parseWorkItem(v), id),
        defaultTimeoutMs: this.#defaultTimeoutMs,
      },
      opts,
    );
  }

  /** POST …/work/{id}/stop: graceful (no body) unless `force` is true (`{"force":true}`). */
  async stop(workId: string, params: { force?: boolean } = {}, opts: CallOptions = {}): Promise<Reply<WorkItem>> {
    const id = workIdParam('stop', workId);
    if (params.force !== undefined && typeof params.force !== 'boolean') throw invalidArg('stop', 'force', 'must be a boolean');
    const force = params.force === true;
    return await this.#call(
      {
        operation: 'stop',
        workId: id,
        method: 'POST',
        path: `/${id}/stop`,
        ...(force ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ force: true }) } : {}),
        parse: (v) => this.#checkItem(parseWorkItem(v), id),
        defaultTimeoutMs: this.#defaultTimeoutMs,
      },
      opts,
    );
  }

  /** GET …/work/stats. */
  async stats(opts: CallOptions = {}): Promise<Reply<WorkQueueStats>> {
    return await this.#call({ operation: 'stats', method: 'GET', path: '/stats', parse: parseStats, defaultTimeoutMs: this.#defaultTimeoutMs }, opts);
  }

  /** Closes the dispatcher if this client created it (waits for calls in flight); an injected one is left alone. */
  close(): Promise<void> {
    if (!this.#ownsDispatcher) return Promise.resolve();
    this.#closing ??= this.#dispatcher.close();
    return this.#closing;
  }

  /** Items must belong to our environment and, when we asked about one, be that one. */
  #checkItem<T extends WorkItem | null>(item: T, expectedId?: string): T {
    if (item === null) return item;
    if (item.environment_id !== this.environmentId) throw new ReplyShapeError('environment_id', `is ${item.environment_id}, not ${this.environmentId}`);
    if (expectedId !== undefined && item.id !== expectedId) throw new ReplyShapeError('id', `is ${item.id}, not the requested ${expectedId}`);
    return item;
  }

  /**
   * Sends with `token` from now on (a rotation, or a SIGHUP re-read seen at the next call). A token that
   * cannot go into a header is never sent: the one in use stays. The scrubber always covers every token held.
   */
  #useToken(token: string): void {
    let changed = false;
    if (token !== this.#headersToken && HEADER_VALUE_RE.test(token) && token.length <= 8192) {
      this.#headers = { authorization: `Bearer ${token}`, 'user-agent': this.#userAgent, accept: 'application/json' };
      this.#headersToken = token;
      changed = true;
    }
    const held = this.#credential.held;
    if (changed || held.length !== this.#scrubbedCount) {
      this.#scrub = makeScrubber([...held, this.#headersToken ?? token]);
      this.#scrubbedCount = held.length;
    }
  }

  async #call<T>(spec: CallSpec<T>, opts: CallOptions): Promise<Reply<T>> {
    const now = this.#credential.current();
    if (now !== this.#headersToken) this.#useToken(now);
    let deadline: Deadline;
    if (opts.timeoutMs === null) {
      if (opts.signal === undefined) throw invalidArg(spec.operation, 'timeoutMs', 'may be null only with a signal (a call needs a deadline)');
      deadline = callerDeadline(opts.signal);
    } else {
      const timeoutMs = opts.timeoutMs ?? spec.defaultTimeoutMs;
      if (!isPositiveFinite(timeoutMs)) throw invalidArg(spec.operation, 'timeoutMs', 'must be a positive number of milliseconds');
      deadline = linkDeadline(opts.signal, timeoutMs);
    }
    const sentWith = this.#headersToken;
    try {
      for (let retried = false; ; retried = true) {
        const ourRequestId = randomUUID();
        const ctx: CallContext = {
          operation: spec.operation,
          workId: spec.workId,
          environmentId: this.environmentId,
          origin: this.origin,
          requestId: ourRequestId,
          scrub: this.#scrub,
        };
        try {
          if (deadline.cause() !== undefined) throw errorForFailure(opts.signal?.reason, deadline.cause(), ctx, 'request');
          let reply: RawReply;
          try {
            reply = await exchange(
              this.#dispatcher,
              {
                origin: this.origin,
                path: this.#basePath + spec.path,
                method: spec.method,
                headers: { ...this.#headers, 'x-request-id': ourRequestId, ...spec.headers },
                body: spec.body ?? null,
                headersTimeout: 0,
                bodyTimeout: 0,
              },
              deadline.signal,
              MAX_REPLY_BYTES,
            );
          } catch (err) {
            throw errorForFailure(err, deadline.cause(), ctx, 'request');
          }
          const status = reply.status;
          const ok = status >= 200 && status <= 299;
          ctx.requestId = sanitizeRequestId(reply.headers['x-request-id'], this.#scrub) ?? ourRequestId;

          let body = reply.body;
          if (reply.bodyError !== undefined) {
            if (deadline.cause() !== undefined) throw errorForFailure(reply.bodyError, deadline.cause(), ctx, 'body');
            if (ok) throw malformed(ctx, status, 'the connection closed before the whole body arrived (truncated reply)', reply.bodyError);
            body = { tooBig: false, bytes: new Uint8Array(0) }; // the status alone decides
          }

          if (!ok) {
            const envelope = body.tooBig ? {} : parseErrorEnvelope(tryJson(body.bytes));
            if (ctx.requestId === ourRequestId) ctx.requestId = sanitizeRequestId(envelope.requestId, this.#scrub) ?? ourRequestId;
            // Rotation: a refused token the source has since replaced. The same request once more, at once, within
            // the same deadline (same path and headers: same precondition and Idempotency-Key); a second refusal is final.
            if ((status === 401 || status === 403) && !retried && this.#rotatedFrom(sentWith)) continue;
            throw errorForStatus(status, envelope, parseRetryAfter(reply.headers['retry-after']), ctx);
          }
          if (body.tooBig) throw malformed(ctx, status, `the body is larger than ${MAX_REPLY_BYTES} bytes`);
          let text: string;
          try {
            text = UTF8.decode(body.bytes);
          } catch (err) {
            throw malformed(ctx, status, 'the body is not valid UTF-8', err);
          }
          if (text.trim() === '') throw malformed(ctx, status, 'the body is empty');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch (err) {
            throw malformed(ctx, status, 'the body is not JSON', err);
          }
          try {
            return { value: spec.parse(json), status, requestId: ctx.requestId };
          } catch (err) {
            if (err instanceof ReplyShapeError) throw malformed(ctx, status, `its ${err.message}`, err);
            throw malformed(ctx, status, 'its body could not be validated', err);
          }
        } catch (err) {
          // Anything that is not already an ApiError is a bug here; still, never let it escape as-is.
          if (err instanceof ApiError) throw err;
          throw errorForFailure(err, deadline.cause(), ctx, 'request');
        }
      }
    } finally {
      deadline.dispose();
    }
  }

  /** After a 401/403: re-reads the token source; true when it now holds another usable token than `sentWith`. */
  #rotatedFrom(sentWith: string | null): boolean {
    const reread = this.#credential.reread();
    if (reread === sentWith) return false;
    this.#useToken(reread);
    return this.#headersToken !== sentWith;
  }
}

function tryJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return undefined;
  }
}

interface Deadline {
  signal: CallSignal;
  /** Why the signal fired, if it did: the caller's signal wins over our timer. */
  cause(): AbortCause | undefined;
  dispose(): void;
}

/**
 * The caller's signal plus a timer, as one signal. Equivalent to `AbortSignal.any([signal,
 * AbortSignal.timeout(ms)])`, but the timer is cleared and the listener removed as soon as the call
 * ends, so a long-lived lease signal does not collect one dependant per heartbeat.
 */
function linkDeadline(callerSignal: CallSignal | undefined, timeoutMs: number): Deadline {
  const controller = new AbortController();
  let cause: AbortCause | undefined;
  const onCallerAbort = (): void => {
    cause ??= { kind: 'caller' };
    controller.abort(callerSignal?.reason);
  };
  let removeListener: (() => void) | undefined;
  if (callerSignal?.aborted) onCallerAbort();
  else if (callerSignal) removeListener = onAbort(callerSignal, onCallerAbort);
  const timer = setTimeout(
    () => {
      cause ??= { kind: 'timeout', timeoutMs };
      controller.abort(new DOMException(`no reply within ${timeoutMs} ms`, 'TimeoutError'));
    },
    Math.min(Math.ceil(timeoutMs), MAX_TIMER_MS),
  );
  timer.unref();
  return {
    signal: controller.signal,
    cause: () => cause,
    dispose: () => {
      clearTimeout(timer);
      removeListener?.();
    },
  };
}

/** The caller's signal alone as the deadline: no controller, timer or listener of our own. */
function callerDeadline(signal: CallSignal): Deadline {
  return { signal, cause: () => (signal.aborted ? { kind: 'caller' } : undefined), dispose: () => {} };
}

function isPositiveFinite(n: unknown): n is number {
  return typeof n === 'number' && Number.isFinite(n) && n > 0;
}

function invalidArg(operation: Operation, name: string, problem: string): BadRequestError {
  return new BadRequestError(`${operation}: not sent: ${name} ${problem}`, { operation });
}

function intParam(operation: Operation, name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw invalidArg(operation, name, max === Number.MAX_SAFE_INTEGER ? `must be an integer >= ${min}` : `must be an integer in ${min}..${max}`);
  }
  return value;
}

function headerParam(operation: Operation, name: string, value: unknown): string {
  if (typeof value !== 'string' || value.length > 256 || !HEADER_VALUE_RE.test(value)) {
    throw invalidArg(operation, name, 'must be 1 to 256 visible ASCII characters');
  }
  return value;
}

/** A work id is checked before it goes anywhere near a URL path. */
function workIdParam(operation: Operation, workId: unknown): string {
  if (typeof workId !== 'string' || !WORK_ID_RE.test(workId)) {
    const shown = typeof workId === 'string' ? JSON.stringify(workId.slice(0, 64)) : describeJson(workId);
    throw new MalformedReplyError(`${operation}: not sent: work id ${shown} is not work_ followed by 1 to 128 of [A-Za-z0-9_-]; drop the item`, {
      operation,
    });
  }
  return workId;
}
