import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { WorkHeartbeat, WorkItem } from '../api/types.js';
import { ADMIN_PREFIX, handleAdmin } from './admin-api.js';
import { realClock, type EmulatorClock } from './clock.js';
import { DEFAULT_SETTINGS, EmulatorCore, parseSettingsPatch, type QueueOptions } from './core.js';
import { ENV_ID_RE } from './ids.js';
import type { TokenView } from './tokens.js';
import type { Fault, FaultSpec } from './faults.js';
import { errorReply, fromError, readBody, resetSocket, send, sleep, type Reply } from './http.js';
import { callFingerprint, idempotencyKeyOf } from './idempotency.js';
import type { WorkQueueStats } from '../api/types.js';
import {
  EmulatorError,
  type AdminItem,
  type CallContext,
  type EmulatorEvent,
  type EmulatorOptions,
  type EmulatorSettings,
} from './types.js';
import { checkAccess, handleWork, matchWorkRoute, type WorkRoute } from './work-api.js';

/** A running emulator: its address plus in-process twins of the admin API. */
export interface Emulator {
  /** Origin, e.g. http://127.0.0.1:39117 (what QODER_API_URL takes). */
  readonly url: string;
  /** `${url}/_admin/` */
  readonly adminUrl: string;
  /** The token accepted at start-up (tokens() and changeTokens() for rotation). */
  readonly token: string;
  readonly environmentId: string;
  /** Stops listening, ends every open request (long polls, hangs), frees the port. Idempotent. */
  close(): Promise<void>;
  queue(opts?: QueueOptions): WorkItem[];
  items(): AdminItem[];
  /** Throws EmulatorError (404) for an unknown id. */
  item(id: string): AdminItem;
  requestStop(id: string, opts?: { force?: boolean }): WorkItem;
  takeover(id: string, opts?: { workerId?: string }): { heartbeat: WorkHeartbeat; item: WorkItem };
  setSettings(patch: Partial<EmulatorSettings>): EmulatorSettings;
  settings(): EmulatorSettings;
  /** Returns the fault id. */
  injectFault(spec: FaultSpec): string;
  faults(): Fault[];
  clearFaults(): void;
  /** Events with seq > since, oldest first. */
  events(since?: number): EmulatorEvent[];
  /** Calls listener for every new event; returns the unsubscribe function. */
  onEvent(listener: (e: EmulatorEvent) => void): () => void;
  /** The first event with seq > since (default: the current last seq) matching pred; rejects after timeoutMs. */
  waitForEvent(pred: (e: EmulatorEvent) => boolean, opts?: { timeoutMs?: number; since?: number }): Promise<EmulatorEvent>;
  stats(): WorkQueueStats;
  /** The accepted tokens (fingerprints, with their call counts) and the revoked ones. */
  tokens(): TokenView;
  /** Accepts and revokes tokens, as `POST /_admin/tokens`. */
  changeTokens(change: { accept?: string[]; revoke?: string[] }): TokenView;
  /** Back to the start, the start-up token the only one accepted. */
  reset(): void;
}

/** Lease expiry and reclaim windows are checked on every request and by this sweep. */
export const SWEEP_INTERVAL_MS = 50;

const statusType = (status: number): string =>
  status === 401
    ? 'authentication_error'
    : status === 403
      ? 'permission_error'
      : status === 404
        ? 'not_found_error'
        : status === 408
          ? 'timeout_error'
          : status === 412
            ? 'precondition_failed_error'
            : status === 429
              ? 'rate_limit_error'
              : status >= 500
                ? 'api_error'
                : 'invalid_request_error';

function requestIdOf(req: IncomingMessage): string {
  const h = req.headers['x-request-id'];
  const v = Array.isArray(h) ? h[0] : h;
  return v && v.length <= 200 && /^[\x21-\x7e]+$/.test(v) ? v : randomUUID();
}

function workerIdOf(req: IncomingMessage): string | null {
  const h = req.headers['worker-id'];
  const v = Array.isArray(h) ? h[0] : h;
  return v ? v : null;
}

/** Starts listening (default 127.0.0.1 on a free port). Rejects on bad options or when the port is taken. */
export async function startEmulator(opts: EmulatorOptions & { clock?: EmulatorClock } = {}): Promise<Emulator> {
  const host = opts.host ?? '127.0.0.1';
  const token = opts.token ?? 'pt-emulator';
  const environmentId = opts.environmentId ?? 'env_emulator';
  if (!ENV_ID_RE.test(environmentId)) throw new EmulatorError(400, 'invalid_request_error', 'environmentId must be env_ followed by [A-Za-z0-9_-]');
  if (!token) throw new EmulatorError(400, 'invalid_request_error', 'token must not be empty');
  const settings: EmulatorSettings = {
    ...DEFAULT_SETTINGS,
    ...parseSettingsPatch({
      environment_type: opts.environmentType ?? 'self_hosted',
      ttl_override_seconds: opts.ttlOverrideSeconds ?? null,
    }),
  };
  const core = new EmulatorCore(environmentId, opts.clock ?? realClock(), settings, token);
  if (opts.log) {
    const log = opts.log;
    core.events.subscribe((e) => log(JSON.stringify(e), e));
  }
  const closing = new AbortController();
  setMaxListeners(0, closing.signal); // one listener per open request

  async function onWork(route: WorkRoute, req: IncomingMessage, res: ServerResponse, url: URL, ctx: CallContext, signal: AbortSignal): Promise<void> {
    const body = await readBody(req);
    if (body === null) return; // the client went away
    const fault = core.faults.take(route.endpoint, route.workId);
    if (fault) {
      core.events.append({ type: 'fault_injected', request_id: ctx.requestId, work_id: route.workId, worker_id: ctx.workerId, endpoint: route.endpoint, kind: fault.kind, fault_id: fault.id, status: fault.status });
      switch (fault.kind) {
        case 'latency':
          // The request has arrived: it is handled after the delay even if the client gave up meanwhile.
          if (!(await sleep(fault.latency_ms ?? 0, closing.signal))) return;
          break;
        case 'status':
          return send(res, errorReply(fault.status!, statusType(fault.status!), `injected fault ${fault.id}: ${fault.status}`, ctx.requestId!));
        case 'rate_limit':
          return send(res, errorReply(429, 'rate_limit_error', `injected fault ${fault.id}: rate limited`, ctx.requestId!, { 'retry-after': String(fault.retry_after_s) }));
        case 'reset':
          return resetSocket(req);
        case 'hang':
          return; // never answered: ends when the client aborts or close() drops the connection
        case 'malformed':
          return send(res, { status: 200, body: fault.body ?? '' });
        default:
          break; // drop_reply, not_extended: handled below
      }
    }
    let reply: Reply;
    try {
      if (body === 'too_large') throw new EmulatorError(400, 'invalid_request_error', 'request body too large');
      const call = { route, req, url, body, ctx, notExtended: fault?.kind === 'not_extended', signal };
      checkAccess(core, call);
      reply = await idempotent(route, req, url, body, ctx, () => handleWork(core, call));
    } catch (err) {
      reply = refusal(err, ctx, route.endpoint, route.workId);
    }
    if (fault?.kind === 'drop_reply') return resetSocket(req);
    send(res, reply);
  }

  /**
   * Runs `handle` unless the request's Idempotency-Key was seen before: the same call gets the stored reply
   * (marked with the Idempotent-Replayed header, logged as `replayed`), a different call 422. Checked after
   * authentication, so a retry with a rotated token still replays, and a refused token stores nothing.
   * A 5xx is not stored: the retry is applied as the first attempt would have been.
   */
  async function idempotent(route: WorkRoute, req: IncomingMessage, url: URL, body: Buffer, ctx: CallContext, handle: () => Promise<Reply>): Promise<Reply> {
    const key = req.method === 'POST' ? idempotencyKeyOf(req) : undefined;
    if (key === undefined) return handle();
    const fingerprint = callFingerprint('POST', url, ctx.workerId ?? null, body);
    const call = `POST ${url.pathname}${url.search}`;
    const seen = core.idempotency.lookup(key, fingerprint, call, core.store.nowMs());
    if (seen?.kind === 'mismatch') throw seen.error;
    if (seen?.kind === 'replay') {
      core.events.append({
        type: 'replayed',
        replayed: true,
        request_id: ctx.requestId,
        work_id: route.workId,
        worker_id: ctx.workerId,
        endpoint: route.endpoint,
        status: seen.reply.status,
        idempotency_key: key,
        original_request_id: seen.originalRequestId,
      });
      return seen.reply;
    }
    let reply: Reply;
    try {
      reply = await handle();
    } catch (err) {
      reply = refusal(err, ctx, route.endpoint, route.workId);
    }
    if (reply.status < 500) core.idempotency.remember(key, fingerprint, call, reply, ctx.requestId!, core.store.nowMs());
    return reply;
  }

  function refusal(err: unknown, ctx: CallContext, endpoint: string, workId?: string): Reply {
    const e = err instanceof EmulatorError ? err : new EmulatorError(500, 'api_error', `internal error: ${(err as Error)?.message ?? String(err)}`);
    core.events.append({ type: `${endpoint}_rejected`, request_id: ctx.requestId, work_id: workId, worker_id: ctx.workerId, status: e.status, error_type: e.errorType, message: e.message });
    return fromError(e, ctx.requestId!);
  }

  async function onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = requestIdOf(req);
    res.setHeader('x-request-id', requestId);
    const ctx: CallContext = { requestId, workerId: workerIdOf(req) };
    const gone = new AbortController();
    const abort = () => gone.abort();
    res.once('close', abort);
    closing.signal.addEventListener('abort', abort, { once: true });
    res.once('close', () => closing.signal.removeEventListener('abort', abort));
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://emulator.invalid');
    } catch {
      return send(res, errorReply(400, 'invalid_request_error', 'bad request target', requestId));
    }
    const method = req.method ?? 'GET';
    if (url.pathname === '/_admin' || url.pathname.startsWith(ADMIN_PREFIX)) {
      if (url.pathname === '/_admin') url.pathname = ADMIN_PREFIX;
      const body = await readBody(req);
      if (body === null) return;
      try {
        if (body === 'too_large') throw new EmulatorError(400, 'invalid_request_error', 'request body too large');
        send(res, handleAdmin(core, req, url, body, { ...ctx, by: 'admin' }));
      } catch (err) {
        const e = err instanceof EmulatorError ? err : new EmulatorError(500, 'api_error', String((err as Error)?.message ?? err));
        send(res, fromError(e, requestId));
      }
      return;
    }
    const route = matchWorkRoute(method, url.pathname);
    if (route === null || 'allow' in route) {
      req.resume();
      const status = route === null ? 404 : 405;
      const message = route === null ? `no route for ${method} ${url.pathname}` : `method ${method} not allowed (allow: ${route.allow})`;
      core.events.append({ type: 'request_rejected', request_id: requestId, status, method, path: url.pathname });
      return send(res, errorReply(status, route === null ? 'not_found_error' : 'invalid_request_error', message, requestId, route === null ? undefined : { allow: route.allow }));
    }
    return onWork(route, req, res, url, { ...ctx, by: 'api' }, gone.signal);
  }

  const server = createServer((req, res) => {
    onRequest(req, res).catch((err: unknown) => {
      try {
        send(res, errorReply(500, 'api_error', `internal error: ${String(err)}`, String(res.getHeader('x-request-id') ?? '')));
      } catch {
        res.destroy();
      }
    });
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });

  const sweeper = setInterval(() => {
    core.store.sweep();
    core.store.notifyChange(); // reclaim windows end with time: waiting polls look again
  }, SWEEP_INTERVAL_MS);
  sweeper.unref();

  const addr = server.address() as AddressInfo;
  const urlHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const url = `http://${urlHost}:${addr.port}`;
  let closed: Promise<void> | null = null;

  const emulator: Emulator = {
    url,
    adminUrl: `${url}${ADMIN_PREFIX}`,
    token,
    environmentId,
    close() {
      closed ??= new Promise<void>((resolve) => {
        clearInterval(sweeper);
        closing.abort();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
    queue: (o) => core.queue(o),
    items: () => core.items(),
    item: (id) => core.item(id),
    requestStop: (id, o) => core.requestStop(id, o),
    takeover: (id, o) => core.takeover(id, o),
    setSettings: (patch) => core.setSettings(patch),
    settings: () => ({ ...core.settings }),
    injectFault: (spec) => core.injectFault(spec).id,
    faults: () => core.faults.list(),
    clearFaults: () => void core.clearFaults(),
    events: (since) => core.eventsSince(since),
    onEvent: (listener) => core.events.subscribe(listener),
    waitForEvent: (pred, o = {}) => waitForEvent(core, pred, o.timeoutMs ?? 10_000, o.since ?? core.events.lastSeq),
    stats: () => core.stats(),
    tokens: () => core.tokens.view(),
    changeTokens: (change) => core.changeTokens(change),
    reset: () => core.reset(),
  };
  return emulator;
}

function waitForEvent(core: EmulatorCore, pred: (e: EmulatorEvent) => boolean, timeoutMs: number, since: number): Promise<EmulatorEvent> {
  const past = core.events.since(since).find(pred);
  if (past) return Promise.resolve(past);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no matching emulator event within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = core.events.subscribe((e) => {
      if (e.seq > since && pred(e)) {
        clearTimeout(timer);
        off();
        resolve({ ...e });
      }
    });
  });
}
