import type { IncomingMessage } from 'node:http';
import type { EmulatorCore } from './core.js';
import { intParam, json, parseJson, type Reply } from './http.js';
import { EmulatorError, notFound, type CallContext } from './types.js';

export const ADMIN_PREFIX = '/_admin/';

const INDEX = [
  'POST   /_admin/items                 {count?, data?, metadata?} -> {items}',
  'GET    /_admin/items                 -> {items} (with lease, delivery, acked_by)',
  'GET    /_admin/items/{id}',
  'POST   /_admin/items/{id}/stop       {force?}',
  'POST   /_admin/items/{id}/takeover   {worker_id?}',
  'GET    /_admin/settings',
  'POST   /_admin/settings              {ttl_override_seconds?, reclaim_default_ms?, starting_timeout_ms?, environment_type?, default_ttl_seconds?, idempotency_ttl_ms?, idempotency_max_keys?}',
  'GET    /_admin/faults',
  'POST   /_admin/faults                {endpoint, kind, times?, work_id?, latency_ms?, status?, retry_after_s?, body?} -> {id, fault}',
  'DELETE /_admin/faults                -> {cleared}',
  'DELETE /_admin/faults/{id}',
  'GET    /_admin/events?since=SEQ      -> {events, last_seq}',
  'GET    /_admin/tokens                -> {accepted: [{fingerprint, calls, last_used_ms}], revoked}',
  'POST   /_admin/tokens                {accept?: [token], revoke?: [token]} -> the same view',
  'GET    /_admin/stats',
  'POST   /_admin/reset',
];

/** The admin API (no auth: it must stay on loopback). Throws EmulatorError for refusals. */
export function handleAdmin(core: EmulatorCore, req: IncomingMessage, url: URL, body: Buffer, ctx: CallContext): Reply {
  const method = req.method ?? 'GET';
  const parts = url.pathname.slice(ADMIN_PREFIX.length).split('/');
  const [first = '', second, third, ...rest] = parts;
  const wrong = (allow: string): never => {
    throw new EmulatorError(405, 'invalid_request_error', `method ${method} not allowed here (allow: ${allow})`);
  };
  const obj = (): Record<string, unknown> => parseJson(req, body) ?? {};
  if (rest.length > 0) throw notFound(`no admin route ${url.pathname}`);

  if (first === '' && second === undefined) return json(200, { endpoints: INDEX });

  if (first === 'items') {
    if (second === undefined) {
      if (method === 'POST') {
        const b = obj();
        return json(200, {
          items: core.queue(
            {
              ...(b.count !== undefined ? { count: b.count as number } : {}),
              ...(b.data !== undefined ? { data: b.data as Record<string, unknown> } : {}),
              ...(b.metadata !== undefined ? { metadata: b.metadata as Record<string, string> } : {}),
            },
            ctx,
          ),
        });
      }
      if (method === 'GET') return json(200, { items: core.items() });
      return wrong('GET, POST');
    }
    if (!second) throw notFound(`no admin route ${url.pathname}`);
    if (third === undefined) return method === 'GET' ? json(200, core.item(second)) : wrong('GET');
    if (third === 'stop') {
      if (method !== 'POST') wrong('POST');
      const b = obj();
      return json(200, core.requestStop(second, { force: b.force as boolean }, ctx));
    }
    if (third === 'takeover') {
      if (method !== 'POST') wrong('POST');
      const b = obj();
      return json(200, core.takeover(second, b.worker_id === undefined ? {} : { workerId: b.worker_id as string }, ctx));
    }
    throw notFound(`no admin route ${url.pathname}`);
  }

  if (first === 'settings' && second === undefined) {
    if (method === 'GET') return json(200, { ...core.settings });
    if (method === 'POST') return json(200, core.setSettings(obj(), ctx));
    return wrong('GET, POST');
  }

  if (first === 'faults') {
    if (second === undefined) {
      if (method === 'GET') return json(200, { faults: core.faults.list() });
      if (method === 'POST') {
        const fault = core.injectFault(obj(), ctx);
        return json(200, { id: fault.id, fault });
      }
      if (method === 'DELETE') return json(200, { cleared: core.clearFaults(ctx) });
      return wrong('GET, POST, DELETE');
    }
    if (third === undefined && second) {
      if (method !== 'DELETE') wrong('DELETE');
      if (!core.faults.remove(second)) throw notFound(`fault ${second} not found`);
      return json(200, { removed: second });
    }
    throw notFound(`no admin route ${url.pathname}`);
  }

  if (first === 'events' && second === undefined) {
    if (method !== 'GET') wrong('GET');
    const since = intParam('since', url.searchParams.get('since'), 0) ?? 0;
    return json(200, { events: core.eventsSince(since), last_seq: core.events.lastSeq });
  }

  if (first === 'tokens' && second === undefined) {
    if (method === 'GET') return json(200, core.tokens.view());
    if (method === 'POST') return json(200, core.changeTokens(obj(), ctx));
    return wrong('GET, POST');
  }

  if (first === 'stats' && second === undefined) {
    if (method !== 'GET') wrong('GET');
    return json(200, core.stats());
  }

  if (first === 'reset' && second === undefined) {
    if (method !== 'POST') wrong('POST');
    core.reset(ctx);
    return json(200, { reset: true });
  }

  throw notFound(`no admin route ${url.pathname}`);
}
