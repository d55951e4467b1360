import type { IncomingMessage } from 'node:http';
import { NO_HEARTBEAT, type WorkItem } from '../api/types.js';
import { isRfc3339 } from '../api/parse.js';
import type { EmulatorCore } from './core.js';
import { intParam, json, parseJson, type Reply } from './http.js';
import { listItems } from './queries.js';
import { EmulatorError, badRequest, notFound, type CallContext, type WorkEndpoint } from './types.js';

export const API_PREFIX = '/api/v1/cloud/environments/';

export interface WorkRoute {
  endpoint: WorkEndpoint;
  envId: string;
  workId?: string;
}

/** A path that exists but not for this method: 405 with Allow. */
export interface WrongMethod {
  allow: string;
}

/** Exact routing of the eight endpoints; null for any other path (trailing slashes included). */
export function matchWorkRoute(method: string, pathname: string): WorkRoute | WrongMethod | null {
  if (!pathname.startsWith(API_PREFIX)) return null;
  const parts = pathname.slice(API_PREFIX.length).split('/');
  if (parts.length < 2 || parts[1] !== 'work' || !parts[0]) return null;
  const envId = parts[0];
  const [, , third, fourth, ...rest] = parts;
  const only = (allowed: string, endpoint: WorkEndpoint, workId?: string): WorkRoute | WrongMethod =>
    method === allowed ? { endpoint, envId, ...(workId ? { workId } : {}) } : { allow: allowed };
  if (rest.length > 0) return null;
  if (third === undefined) return only('GET', 'list');
  if (!third) return null;
  if (fourth === undefined) {
    if (third === 'poll') return only('GET', 'poll');
    if (third === 'stats') return only('GET', 'stats');
    if (method === 'GET') return { endpoint: 'get', envId, workId: third };
    if (method === 'POST') return { endpoint: 'update_metadata', envId, workId: third };
    return { allow: 'GET, POST' };
  }
  if (fourth === 'ack') return only('POST', 'ack', third);
  if (fourth === 'heartbeat') return only('POST', 'heartbeat', third);
  if (fourth === 'stop') return only('POST', 'stop', third);
  return null;
}

export interface WorkCall {
  route: WorkRoute;
  req: IncomingMessage;
  url: URL;
  body: Buffer;
  ctx: CallContext;
  /** The `not_extended` fault is active for this heartbeat. */
  notExtended: boolean;
  /** Aborts when the client goes away or the emulator closes (ends a long poll). */
  signal: AbortSignal;
}

export function checkAccess(core: EmulatorCore, call: WorkCall): void {
  const auth = call.req.headers.authorization;
  const m = typeof auth === 'string' ? /^Bearer +(.+)$/i.exec(auth) : null;
  if (!m) throw new EmulatorError(401, 'authentication_error', 'missing bearer token');
  const access = core.tokens.check(m[1]!, core.store.nowMs());
  if (access !== 'ok') throw new EmulatorError(401, 'authentication_error', `${access} bearer token`);
  if (call.route.envId !== core.environmentId) throw notFound(`environment ${call.route.envId} not found`);
  if (core.settings.environment_type !== 'self_hosted') throw badRequest('environment is not self_hosted');
}

/** Handles an authenticated, routed call; throws EmulatorError for refusals. */
export async function handleWork(core: EmulatorCore, call: WorkCall): Promise<Reply> {
  const { store } = core;
  const { route, url, ctx } = call;
  const q = url.searchParams;
  const id = route.workId ?? '';
  store.sweep();
  switch (route.endpoint) {
    case 'list': {
      const limit = Math.min(100, intParam('limit', q.get('limit'), 1) ?? 20);
      const cursors = (['page', 'before_id', 'after_id'] as const).filter((k) => q.has(k));
      if (cursors.length > 1) throw badRequest('page, before_id and after_id are mutually exclusive');
      const cursor = cursors[0] ? q.get(cursors[0])! : undefined;
      if (cursor !== undefined && !/^work_[A-Za-z0-9]+$/.test(cursor)) throw badRequest(`${cursors[0]} must be a work id`);
      const page = listItems(store.records.values(), {
        limit,
        ...(cursors[0] === 'before_id' ? { before: cursor } : cursor !== undefined ? { after: cursor } : {}),
      });
      core.events.append({ type: 'list', request_id: ctx.requestId, status: 200, count: page.data.length, has_more: page.has_more });
      return json(200, page);
    }
    case 'stats': {
      const stats = core.stats();
      const { type: _type, ...counts } = stats;
      core.events.append({ type: 'stats', request_id: ctx.requestId, status: 200, ...counts });
      return json(200, stats);
    }
    case 'poll':
      return json(200, await poll(core, call));
    case 'get': {
      const item = store.get(id);
      core.events.append({ type: 'get', request_id: ctx.requestId, work_id: id, worker_id: ctx.workerId ?? undefined, status: 200, state: item.state });
      return json(200, item);
    }
    case 'update_metadata': {
      const body = parseJson(call.req, call.body);
      store.get(id); // 404 before looking at the patch
      return json(200, store.updateMetadata(id, body?.metadata, ctx));
    }
    case 'ack':
      return json(200, store.ack(id, ctx));
    case 'heartbeat': {
      const expected = q.get('expected_last_heartbeat') ?? undefined;
      if (expected !== undefined && expected !== NO_HEARTBEAT && !isRfc3339(expected)) {
        throw badRequest('expected_last_heartbeat must be NO_HEARTBEAT or an RFC 3339 timestamp');
      }
      let desiredTtl: number | undefined;
      try {
        desiredTtl = intParam('desired_ttl_seconds', q.get('desired_ttl_seconds'), 1);
      } catch {
        throw badRequest('desired_ttl_seconds must be a positive integer');
      }
      if (call.notExtended) return json(200, store.heartbeatNotExtended(id, desiredTtl, ctx));
      return json(200, store.heartbeat(id, { ...(expected !== undefined ? { expected } : {}), ...(desiredTtl !== undefined ? { desiredTtl } : {}) }, ctx));
    }
    case 'stop': {
      const body = parseJson(call.req, call.body);
      const force = body?.force ?? false;
      if (typeof force !== 'boolean') throw badRequest('force must be a boolean');
      return json(200, store.stop(id, force, ctx));
    }
  }
}

/** One poll: deliver at once, or wait up to block_ms for an item to become deliverable. */
async function poll(core: EmulatorCore, call: WorkCall): Promise<WorkItem | null> {
  const { store } = core;
  const q = call.url.searchParams;
  const blockMs = intParam('block_ms', q.get('block_ms'), 1, 999);
  const reclaimMs = intParam('reclaim_older_than_ms', q.get('reclaim_older_than_ms'), 0) ?? core.settings.reclaim_default_ms;
  const workerId = call.ctx.workerId ?? null;
  const started = store.nowMs();
  store.notePoller(workerId);
  const empty = (aborted: boolean): null => {
    store.notePoller(workerId);
    core.events.append({
      type: 'poll_empty',
      request_id: call.ctx.requestId,
      worker_id: workerId,
      status: 200,
      block_ms: blockMs ?? null,
      waited_ms: store.nowMs() - started,
      ...(aborted ? { aborted: true } : {}),
    });
    return null;
  };
  const first = store.tryDeliver(workerId, reclaimMs, call.ctx);
  if (first) return first;
  if (!blockMs || call.signal.aborted) return empty(call.signal.aborted);
  return new Promise((resolve) => {
    let done = false;
    const finish = (item: WorkItem | null, aborted = false) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      off();
      call.signal.removeEventListener('abort', onAbort);
      resolve(item ?? empty(aborted));
    };
    const check = () => {
      if (done) return;
      if (call.signal.aborted) return finish(null, true);
      const item = store.tryDeliver(workerId, reclaimMs, call.ctx);
      if (item) finish(item);
    };
    const onAbort = () => finish(null, true);
    const off = store.onChange(check);
    const timer = setTimeout(() => {
      check(); // a last look, then give up
      finish(null);
    }, blockMs);
    call.signal.addEventListener('abort', onAbort, { once: true });
  });
}
