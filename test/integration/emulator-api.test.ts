/** The emulator's work API over real loopback sockets: routing, auth, errors, the state table, list, stats, polls. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NO_HEARTBEAT } from '../../src/api/types.js';
import { startEmulator, type Emulator } from '../../src/emulator/index.js';

const MICRO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

type Query = Record<string, string | number | undefined>;
interface Opts {
  query?: Query;
  body?: unknown;
  raw?: string;
  headers?: Record<string, string>;
  worker?: string | null;
  auth?: string | null;
  env?: string;
  signal?: AbortSignal;
}

/** A tiny client: every call resolves to status, headers, text and parsed JSON (undefined if not JSON). */
function client(em: Emulator, workerId = 'w1') {
  async function req(method: string, path: string, o: Opts = {}) {
    const url = new URL(`${em.url}/api/v1/cloud/environments/${o.env ?? em.environmentId}/work${path}`);
    for (const [k, v] of Object.entries(o.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = {
      ...(o.auth === null ? {} : { authorization: o.auth ?? `Bearer ${em.token}` }),
      ...(o.worker === null ? {} : { 'worker-id': o.worker ?? workerId }),
      ...o.headers,
    };
    let body: string | undefined;
    if (o.raw !== undefined) body = o.raw;
    else if (o.body !== undefined) body = JSON.stringify(o.body);
    if (body !== undefined) headers['content-type'] ??= 'application/json';
    const res = await fetch(url, { method, headers, ...(body !== undefined ? { body } : {}), ...(o.signal ? { signal: o.signal } : {}) });
    const text = await res.text();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, text, json };
  }
  return {
    req,
    poll: (query?: Query, o: Opts = {}) => req('GET', '/poll', { ...o, ...(query ? { query } : {}) }),
    ack: (id: string, o: Opts = {}) => req('POST', `/${id}/ack`, o),
    hb: (id: string, expected?: string, ttl?: number, o: Opts = {}) =>
      req('POST', `/${id}/heartbeat`, { ...o, query: { expected_last_heartbeat: expected, desired_ttl_seconds: ttl } }),
    stop: (id: string, body?: unknown, o: Opts = {}) => req('POST', `/${id}/stop`, { ...o, ...(body !== undefined ? { body } : {}) }),
    get: (id: string, o: Opts = {}) => req('GET', `/${id}`, o),
    meta: (id: string, body: unknown, o: Opts = {}) => req('POST', `/${id}`, { ...o, body }),
    list: (query?: Query) => req('GET', '', query ? { query } : {}),
    stats: () => req('GET', '/stats'),
  };
}

let em: Emulator;
let c: ReturnType<typeof client>;
beforeEach(async () => {
  em = await startEmulator();
  c = client(em);
});
afterEach(async () => {
  await em.close();
});

/** An item in `active` held by w1; returns its id and last_heartbeat. */
async function activeItem(cl = c) {
  const [item] = em.queue();
  expect((await cl.poll()).json.id).toBe(item!.id);
  expect((await cl.ack(item!.id)).status).toBe(200);
  const hb = await cl.hb(item!.id, NO_HEARTBEAT, 60);
  expect(hb.status).toBe(200);
  return { id: item!.id, last: hb.json.last_heartbeat as string };
}

describe('emulator: envelope, auth, routing', () => {
  it('401 authentication_error without or with a wrong bearer token; the envelope echoes x-request-id', async () => {
    for (const auth of [null, 'Bearer wrong', 'Basic cHQtZW11bGF0b3I=', `Bearer  `]) {
      const r = await c.poll(undefined, { auth, headers: { 'x-request-id': 'req-123' } });
      expect(r.status).toBe(401);
      expect(r.headers.get('x-request-id')).toBe('req-123');
      expect(r.json).toEqual({ type: 'error', request_id: 'req-123', error: { type: 'authentication_error', message: expect.any(String) } });
    }
    const ok = await c.stats();
    expect(ok.status).toBe(200);
    expect(ok.headers.get('x-request-id')).toMatch(UUID_RE); // a fresh one when the client sent none
    expect(ok.text).not.toContain(em.token);
  });

  it('404 not_found_error for an unknown environment or item; 404 for unknown paths; 405 for a wrong method', async () => {
    expect((await c.stats()).status).toBe(200);
    const r = await c.req('GET', '/stats', { env: 'env_other' });
    expect(r.status).toBe(404);
    expect(r.json.error.type).toBe('not_found_error');
    expect(r.json.request_id).toBe(r.headers.get('x-request-id'));
    for (const id of ['work_AAAAAAAAAAAAAAAAAAAAAAAA', 'nope']) {
      for (const call of [c.get(id), c.ack(id), c.hb(id, NO_HEARTBEAT), c.stop(id), c.meta(id, { metadata: {} })]) {
        const x = await call;
        expect(x.status).toBe(404);
        expect(x.json.error.type).toBe('not_found_error');
      }
    }
    const path = await c.req('GET', '/poll/');
    expect(path.status).toBe(404);
    const method = await c.req('POST', '/stats');
    expect(method.status).toBe(405);
    expect(method.headers.get('allow')).toBe('GET');
    const root = await fetch(`${em.url}/api/v1/cloud/environments`, { headers: { authorization: `Bearer ${em.token}` } });
    expect(root.status).toBe(404);
    expect(root.headers.get('x-request-id')).toMatch(UUID_RE);
  });

  it('environment_type cloud: 400 "environment is not self_hosted" on every work endpoint', async () => {
    const [item] = em.queue();
    em.setSettings({ environment_type: 'cloud' });
    const id = item!.id;
    for (const call of [c.list(), c.poll(), c.get(id), c.meta(id, { metadata: { a: 'b' } }), c.ack(id), c.hb(id, NO_HEARTBEAT), c.stop(id), c.stats()]) {
      const r = await call;
      expect(r.status).toBe(400);
      expect(r.json.error).toEqual({ type: 'invalid_request_error', message: 'environment is not self_hosted' });
    }
    expect(em.item(id).state).toBe('queued');
    const cloud = await startEmulator({ environmentType: 'cloud' });
    try {
      expect((await client(cloud).poll()).status).toBe(400);
    } finally {
      await cloud.close();
    }
  });
});

describe('emulator: the state table over HTTP', () => {
  it('poll -> ack -> first heartbeat -> heartbeats -> graceful stop -> confirm', async () => {
    const [queued] = em.queue({ metadata: { project: 'x' } });
    expect(queued).toMatchObject({ type: 'work', environment_id: 'env_emulator', state: 'queued', data: { type: 'session' }, metadata: { project: 'x' } });
    expect(queued!.id).toMatch(/^work_[A-Za-z0-9]{24}$/);
    expect(queued!.data.id).toMatch(/^sess_[A-Za-z0-9]{24}$/);
    expect(queued!.created_at).toMatch(MICRO_RE);

    const polled = await c.poll({ block_ms: 999 });
    expect(polled.json).toEqual(queued);
    const acked = await c.ack(queued!.id);
    expect(acked.json).toMatchObject({ state: 'starting', started_at: null });
    expect(acked.json.acknowledged_at).toMatch(MICRO_RE);
    expect((await c.ack(queued!.id)).json).toEqual(acked.json); // retry: 200 unchanged
    const h1 = await c.hb(queued!.id, NO_HEARTBEAT, 30);
    expect(h1.json).toEqual({ type: 'work_heartbeat', last_heartbeat: expect.stringMatching(MICRO_RE), lease_extended: true, state: 'active', ttl_seconds: 30 });
    expect((await c.get(queued!.id)).json).toMatchObject({ state: 'active', started_at: h1.json.last_heartbeat, latest_heartbeat_at: h1.json.last_heartbeat });
    const h2 = await c.hb(queued!.id, h1.json.last_heartbeat, 30);
    expect(h2.json.last_heartbeat > h1.json.last_heartbeat).toBe(true);

    const stopping = await c.stop(queued!.id);
    expect(stopping.json.state).toBe('stopping');
    expect(stopping.json.stop_requested_at).toMatch(MICRO_RE);
    const h3 = await c.hb(queued!.id, h2.json.last_heartbeat, 30);
    expect(h3.json).toMatchObject({ state: 'stopping', lease_extended: true });
    expect((await c.ack(queued!.id)).status).toBe(409);
    const stopped = await c.stop(queued!.id, {});
    expect(stopped.json.state).toBe('stopped');
    expect(stopped.json.stopped_at).toMatch(MICRO_RE);
    expect((await c.stop(queued!.id)).json).toEqual(stopped.json); // stopped -> unchanged
    expect((await c.stop(queued!.id, { force: true })).json).toEqual(stopped.json);
    const late = await c.hb(queued!.id, h3.json.last_heartbeat, 30);
    expect(late.status).toBe(409);
    expect(late.json.error.type).toBe('invalid_request_error');
    expect((await c.ack(queued!.id)).status).toBe(409);
  });

  it('stop: queued -> stopped; starting -> stopping; force from every state -> stopped', async () => {
    const [a, b] = em.queue({ count: 2 });
    expect((await c.stop(a!.id)).json.state).toBe('stopped');
    expect((await c.hb(a!.id, NO_HEARTBEAT)).status).toBe(409);
    await c.ack(b!.id);
    expect((await c.stop(b!.id, { force: false })).json.state).toBe('stopping');
    // a stopping item that never heartbeated may still take its first lease, and stays stopping
    expect((await c.hb(b!.id, NO_HEARTBEAT, 10)).json).toMatchObject({ state: 'stopping', lease_extended: true });
    for (const state of ['queued', 'starting', 'active', 'stopping'] as const) {
      const [it] = em.queue();
      if (state !== 'queued') await c.ack(it!.id);
      if (state === 'active' || state === 'stopping') await c.hb(it!.id, NO_HEARTBEAT);
      if (state === 'stopping') await c.stop(it!.id);
      expect(em.item(it!.id).state).toBe(state);
      const r = await c.stop(it!.id, { force: true });
      expect(r.json.state, state).toBe('stopped');
      expect(em.item(it!.id).lease).toBeNull();
    }
  });

  it('ack: 409 when delivered to another Worker-ID within the window, or claimed by another worker', async () => {
    const w2 = client(em, 'w2');
    const [item] = em.queue();
    await c.poll();
    const r = await w2.ack(item!.id);
    expect(r.status).toBe(409);
    expect(r.json.error.type).toBe('invalid_request_error');
    expect((await c.ack(item!.id)).status).toBe(200);
    expect((await w2.ack(item!.id)).status).toBe(409); // claimed: starting, by w1
    await c.hb(item!.id, NO_HEARTBEAT);
    expect((await w2.ack(item!.id)).status).toBe(409); // active, by w1
    expect((await c.ack(item!.id)).status).toBe(200);
    const rejected = em.events().filter((e) => e.type === 'ack_rejected');
    expect(rejected.map((e) => [e.worker_id, e.status])).toEqual([
      ['w2', 409],
      ['w2', 409],
      ['w2', 409],
    ]);
  });

  it('heartbeat 400s: bad desired_ttl_seconds or expected_last_heartbeat; 412s: wrong precondition', async () => {
    const { id, last } = await activeItem();
    for (const ttl of ['0', '-5', '1.5', 'abc', '', '1e3']) {
      const r = await c.req('POST', `/${id}/heartbeat`, { query: { expected_last_heartbeat: last, desired_ttl_seconds: ttl } });
      expect(r.status, ttl).toBe(400);
      expect(r.json.error.type).toBe('invalid_request_error');
    }
    for (const exp of ['', 'no_heartbeat', 'yesterday', '2026-07-01', '1751357706']) {
      const r = await c.hb(id, exp, 60);
      expect(r.status, exp).toBe(400);
    }
    const same = new Date(Date.parse(last)).toISOString();
    for (const exp of [NO_HEARTBEAT, same, last.replace('Z', '+00:00'), last.slice(0, -2) + 'Z']) {
      const r = await c.hb(id, exp, 60);
      expect(r.status, exp).toBe(412);
      expect(r.json.error.type).toBe('precondition_failed_error');
    }
    const ok = await c.hb(id, last, 60);
    expect(ok.status).toBe(200);
    const uncond = await c.hb(id, undefined, undefined); // no precondition, no ttl
    expect(uncond.json).toMatchObject({ lease_extended: true, ttl_seconds: 60 });
    const rejected = em.events().filter((e) => e.type === 'heartbeat_rejected').map((e) => e.status);
    expect(rejected).toEqual([400, 400, 400, 400, 400, 400, 400, 400, 400, 400, 400, 412, 412, 412, 412]);
  });

  it('heartbeat on starting with a timestamp precondition: 412; on queued: 409', async () => {
    const [item] = em.queue();
    expect((await c.hb(item!.id, NO_HEARTBEAT)).status).toBe(409);
    await c.ack(item!.id);
    expect((await c.hb(item!.id, '2026-07-01T08:15:06.120394Z')).status).toBe(412);
    expect((await c.hb(item!.id, NO_HEARTBEAT)).json.state).toBe('active');
  });

  it('stop: 400 for a body that is not JSON or a force that is not a boolean', async () => {
    const [item] = em.queue();
    expect((await c.req('POST', `/${item!.id}/stop`, { raw: '{force:' })).status).toBe(400);
    expect((await c.stop(item!.id, { force: 'yes' })).status).toBe(400);
    expect((await c.stop(item!.id, [true])).status).toBe(400);
    expect((await c.req('POST', `/${item!.id}/stop`, { raw: '{}', headers: { 'content-type': 'text/plain' } })).status).toBe(400);
    expect(em.item(item!.id).state).toBe('queued');
    expect((await c.req('POST', `/${item!.id}/stop`, { raw: '' })).json.state).toBe('stopped'); // empty body = graceful
  });
});

describe('emulator: update-metadata', () => {
  it('merge patch: upsert, delete with null, omitted keys untouched, no metadata = unchanged', async () => {
    const [item] = em.queue({ metadata: { a: '1', b: '2' } });
    const r = await c.meta(item!.id, { metadata: { a: 'x', b: null, c: '3' } });
    expect(r.status).toBe(200);
    expect(r.json.metadata).toEqual({ a: 'x', c: '3' });
    expect((await c.meta(item!.id, {})).json.metadata).toEqual({ a: 'x', c: '3' });
    const ev = em.events().find((e) => e.type === 'metadata_updated');
    expect(ev).toMatchObject({ work_id: item!.id, worker_id: 'w1', keys: ['a', 'b', 'c'], metadata: { a: 'x', c: '3' } });
  });

  it('400 for limits (16 keys, key 64, value 512), non-string values, bad JSON; nothing applied', async () => {
    const [item] = em.queue();
    const id = item!.id;
    const sixteen = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, 'v']));
    expect((await c.meta(id, { metadata: sixteen })).status).toBe(200);
    const bad = [
      { metadata: { k16: 'v' } },
      { metadata: { ['x'.repeat(65)]: 'v' } },
      { metadata: { k0: 'v'.repeat(513) } },
      { metadata: { k0: 1 } },
      { metadata: { k0: { a: 'b' } } },
      { metadata: ['a'] },
      { metadata: null },
      [1],
    ];
    for (const body of bad) {
      const r = await c.meta(id, body);
      expect(r.status, JSON.stringify(body).slice(0, 40)).toBe(400);
      expect(r.json.error.type).toBe('invalid_request_error');
    }
    expect((await c.req('POST', `/${id}`, { raw: '{"metadata":' })).status).toBe(400);
    expect((await c.req('POST', `/${id}`, { raw: '{"metadata":{}}', headers: { 'content-type': 'text/plain' } })).status).toBe(400);
    expect(em.item(id).metadata).toEqual(sixteen);
    expect((await c.meta(id, { metadata: { k0: null, k16: 'v'.repeat(512), ['y'.repeat(64)]: null } })).status).toBe(200);
  });
});

describe('emulator: list and stats', () => {
  it('lists in creation order with limit, page, after_id, before_id; validates parameters', async () => {
    const ids = em.queue({ count: 25 }).map((i) => i.id);
    const first = await c.list();
    expect(first.json.data).toHaveLength(20); // default limit
    expect(first.json).toMatchObject({ first_id: ids[0], last_id: ids[19], has_more: true, next_page: ids[19] });
    const second = await c.list({ page: first.json.next_page });
    expect(second.json.data.map((i: { id: string }) => i.id)).toEqual(ids.slice(20));
    expect(second.json).toMatchObject({ has_more: false, next_page: null });
    expect((await c.list({ limit: 3, after_id: ids[5] })).json.data.map((i: { id: string }) => i.id)).toEqual(ids.slice(6, 9));
    expect((await c.list({ limit: 3, before_id: ids[5] })).json.data.map((i: { id: string }) => i.id)).toEqual(ids.slice(2, 5));
    em.queue({ count: 100 });
    expect((await c.list({ limit: 500 })).json.data).toHaveLength(100); // > 100 capped
    for (const q of [{ limit: 0 }, { limit: -1 }, { limit: 'x' }, { page: ids[0], after_id: ids[1] }, { before_id: ids[0], after_id: ids[1] }, { page: 'nope' }]) {
      const r = await c.list(q as Query);
      expect(r.status, JSON.stringify(q)).toBe(400);
    }
  });

  it('stats: depth, pending, oldest_queued_at, workers_polling (polls with Worker-ID only)', async () => {
    expect((await c.stats()).json).toEqual({ type: 'work_queue_stats', depth: 0, pending: 0, oldest_queued_at: null, workers_polling: 0 });
    const [a] = em.queue({ count: 3 });
    await c.poll();
    await client(em, 'w2').poll();
    await c.poll(undefined, { worker: null });
    const s = (await c.stats()).json;
    expect(s).toEqual({ type: 'work_queue_stats', depth: 0, pending: 3, oldest_queued_at: a!.created_at, workers_polling: 2 });
    expect((await c.poll()).json).toBeNull(); // all delivered within 5 s
  });
});

describe('emulator: poll', () => {
  it('returns JSON null when nothing is available; validates block_ms and reclaim_older_than_ms', async () => {
    const r = await c.poll();
    expect(r.status).toBe(200);
    expect(r.text).toBe('null');
    for (const q of [{ block_ms: 0 }, { block_ms: 1000 }, { block_ms: 'x' }, { block_ms: -1 }, { reclaim_older_than_ms: -1 }, { reclaim_older_than_ms: '1.5' }]) {
      expect((await c.poll(q as Query)).status, JSON.stringify(q)).toBe(400);
    }
    const t0 = Date.now();
    expect((await c.poll({ block_ms: 300 })).json).toBeNull();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    const empties = em.events().filter((e) => e.type === 'poll_empty');
    expect(empties.at(-1)).toMatchObject({ worker_id: 'w1', block_ms: 300 });
  });

  it('a long poll returns as soon as an item is queued', async () => {
    const t0 = Date.now();
    const p = c.poll({ block_ms: 999 });
    await new Promise((r) => setTimeout(r, 150));
    const [item] = em.queue();
    const r = await p;
    const elapsed = Date.now() - t0;
    expect(r.json.id).toBe(item!.id);
    expect(elapsed).toBeGreaterThanOrEqual(140);
    expect(elapsed).toBeLessThan(900); // well before block_ms ran out
  });

  it('two long polls, one item: exactly one gets it', async () => {
    const w2 = client(em, 'w2');
    const p1 = c.poll({ block_ms: 600 });
    const p2 = w2.poll({ block_ms: 600 });
    await new Promise((r) => setTimeout(r, 100));
    const [item] = em.queue();
    const got = [(await p1).json, (await p2).json];
    expect(got.filter((x) => x !== null).map((x) => x.id)).toEqual([item!.id]);
  });

  it('redelivers an unacked item after reclaim_older_than_ms (long poll wakes for it), oldest first', async () => {
    const [a, b] = em.queue({ count: 2 });
    expect((await c.poll()).json.id).toBe(a!.id);
    const w2 = client(em, 'w2');
    expect((await w2.poll({ reclaim_older_than_ms: 60_000 })).json.id).toBe(b!.id);
    const t0 = Date.now();
    const r = await w2.poll({ block_ms: 999, reclaim_older_than_ms: 250 });
    expect(r.json.id).toBe(a!.id);
    expect(Date.now() - t0).toBeLessThan(900);
    const ev = em.events().filter((e) => e.type === 'poll_delivered' && e.work_id === a!.id);
    expect(ev.map((e) => [e.worker_id, e.redelivery])).toEqual([
      ['w1', false],
      ['w2', true],
    ]);
    expect(ev[1]!.t_ms - ev[0]!.t_ms).toBeGreaterThanOrEqual(250);
    // now w2's delivery counts: w1 may no longer ack it within the window, w2 may
    expect((await c.ack(a!.id)).status).toBe(409);
    expect((await w2.ack(a!.id)).status).toBe(200);
  });

  it('a client that gives up on a long poll takes nothing with it', async () => {
    await c.poll({ block_ms: 999 }, { signal: AbortSignal.timeout(100) }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 50));
    const [item] = em.queue();
    expect((await client(em, 'w2').poll()).json.id).toBe(item!.id);
    expect(em.events().filter((e) => e.type === 'poll_delivered').length).toBe(1);
  });
});
