/** Every fault kind over real sockets: what the client sees, and whether the change was applied. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NO_HEARTBEAT } from '../../src/api/types.js';
import { startEmulator, type Emulator } from '../../src/emulator/index.js';

function client(em: Emulator, workerId = 'w1') {
  const base = `${em.url}/api/v1/cloud/environments/${em.environmentId}/work`;
  const call = async (method: string, path: string, query: Record<string, string | number | undefined> = {}, signal?: AbortSignal, key?: string) => {
    const url = new URL(base + path);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { authorization: `Bearer ${em.token}`, 'worker-id': workerId };
    if (key !== undefined) headers['idempotency-key'] = key;
    const res = await fetch(url, { method, headers, ...(signal ? { signal } : {}) });
    const text = await res.text();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, text, json };
  };
  return {
    poll: (q: Record<string, number> = {}, signal?: AbortSignal) => call('GET', '/poll', q, signal),
    ack: (id: string, signal?: AbortSignal) => call('POST', `/${id}/ack`, {}, signal),
    hb: (id: string, expected?: string, signal?: AbortSignal, key?: string) =>
      call('POST', `/${id}/heartbeat`, { expected_last_heartbeat: expected, desired_ttl_seconds: 30 }, signal, key),
    get: (id: string) => call('GET', `/${id}`),
    stop: (id: string) => call('POST', `/${id}/stop`),
    list: () => call('GET', ''),
    stats: () => call('GET', '/stats'),
  };
}

/** Resolves to the error a request failed with (or throws if it did not fail). */
async function failure(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected the request to fail');
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

async function active() {
  const [item] = em.queue();
  await c.ack(item!.id);
  const h = await c.hb(item!.id, NO_HEARTBEAT);
  return { id: item!.id, last: h.json.last_heartbeat as string };
}

describe('emulator faults', () => {
  it('status: the given status with the envelope, nothing applied; then normal again', async () => {
    const [item] = em.queue();
    for (const status of [500, 502, 503, 408]) {
      em.injectFault({ endpoint: 'ack', kind: 'status', status });
      const r = await c.ack(item!.id);
      expect(r.status).toBe(status);
      expect(r.json).toEqual({ type: 'error', request_id: r.headers.get('x-request-id'), error: { type: status === 408 ? 'timeout_error' : 'api_error', message: expect.any(String) } });
      expect(em.item(item!.id).state).toBe('queued');
    }
    expect((await c.ack(item!.id)).json.state).toBe('starting');
    const injected = em.events().filter((e) => e.type === 'fault_injected');
    expect(injected.map((e) => [e.endpoint, e.kind, e.status, e.work_id])).toEqual([500, 502, 503, 408].map((s) => ['ack', 'status', s, item!.id]));
  });

  it('rate_limit: 429 with Retry-After, nothing applied', async () => {
    const { id, last } = await active();
    em.injectFault({ endpoint: 'heartbeat', kind: 'rate_limit', retry_after_s: 7 });
    const r = await c.hb(id, last);
    expect(r.status).toBe(429);
    expect(r.headers.get('retry-after')).toBe('7');
    expect(r.json.error.type).toBe('rate_limit_error');
    expect(em.item(id).lease!.last_heartbeat).toBe(last);
    expect((await c.hb(id, last)).status).toBe(200);
  });

  it('latency: the reply comes late but normal', async () => {
    em.injectFault({ endpoint: 'stats', kind: 'latency', latency_ms: 300 });
    const t0 = Date.now();
    const r = await c.stats();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    expect(r.json.type).toBe('work_queue_stats');
    const t1 = Date.now();
    await c.stats();
    expect(Date.now() - t1).toBeLessThan(290);
  });

  it('latency past the client timeout: the change is applied anyway (the request had arrived)', async () => {
    const { id, last } = await active();
    em.injectFault({ endpoint: 'heartbeat', kind: 'latency', latency_ms: 300 });
    await failure(c.hb(id, last, AbortSignal.timeout(100)));
    const applied = await em.waitForEvent((e) => e.type === 'heartbeat_accepted' && e.previous_last_heartbeat === last, { timeoutMs: 3000, since: 0 });
    expect(em.item(id).lease!.last_heartbeat).toBe(applied.last_heartbeat);
    expect((await c.hb(id, last)).status).toBe(412);
  });

  it('reset: the connection is destroyed, nothing applied', async () => {
    const [item] = em.queue();
    em.injectFault({ endpoint: 'ack', kind: 'reset' });
    const err = await failure(c.ack(item!.id));
    expect(err).toBeInstanceOf(TypeError); // fetch failed (ECONNRESET / other side closed)
    expect(em.item(item!.id).state).toBe('queued');
    expect((await c.ack(item!.id)).status).toBe(200);
  });

  it('drop_reply: the change IS applied although the client only sees a socket error', async () => {
    const { id, last } = await active();
    em.injectFault({ endpoint: 'heartbeat', kind: 'drop_reply' });
    await failure(c.hb(id, last));
    const now = em.item(id).lease!.last_heartbeat;
    expect(now > last).toBe(true);
    expect((await c.get(id)).json.latest_heartbeat_at).toBe(now);
    // the retry with the same precondition (and no Idempotency-Key) is refused: the lost reply carried the new one
    const retry = await c.hb(id, last);
    expect(retry.status).toBe(412);
    expect((await c.hb(id, now)).status).toBe(200);
    const [q] = em.queue();
    em.injectFault({ endpoint: 'ack', kind: 'drop_reply', work_id: q!.id });
    await failure(c.ack(q!.id));
    expect(em.item(q!.id).state).toBe('starting');
    expect((await c.ack(q!.id)).status).toBe(200); // ack retry by the same worker: 200 unchanged
  });

  it('hang: never answered; the client times out; close() is still prompt', async () => {
    em.injectFault({ endpoint: 'poll', kind: 'hang' });
    const [item] = em.queue();
    const err = await failure(c.poll({}, AbortSignal.timeout(200)));
    expect(err.name).toBe('TimeoutError');
    expect(em.item(item!.id).delivery).toBeNull(); // not applied
    em.injectFault({ endpoint: '*', kind: 'hang', times: 0 });
    const pending = [c.ack(item!.id), c.stats(), c.poll({ block_ms: 999 })].map((p) => failure(p));
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    await em.close();
    expect(Date.now() - t0).toBeLessThan(500);
    for (const e of await Promise.all(pending)) expect(e).toBeInstanceOf(TypeError);
    expect(em.item(item!.id).state).toBe('queued');
  });

  it('close() also ends open long polls at once and frees the port', async () => {
    const p = failure(c.poll({ block_ms: 999 }));
    await new Promise((r) => setTimeout(r, 50));
    const t0 = Date.now();
    await em.close();
    expect(Date.now() - t0).toBeLessThan(500);
    await p;
    const port = Number(new URL(em.url).port);
    const again = await startEmulator({ port });
    try {
      expect(again.url).toBe(em.url);
    } finally {
      await again.close();
    }
    await em.close(); // idempotent
  });

  it('not_extended: 200 with lease_extended false, the current last_heartbeat and state, lease untouched', async () => {
    const { id, last } = await active();
    const before = em.item(id).lease!;
    em.injectFault({ endpoint: 'heartbeat', kind: 'not_extended' });
    const r = await c.hb(id, last);
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ type: 'work_heartbeat', last_heartbeat: last, lease_extended: false, state: 'active', ttl_seconds: 30 });
    expect(em.item(id).lease).toEqual(before);
    expect(em.events().some((e) => e.type === 'heartbeat_not_extended' && e.work_id === id)).toBe(true);
    expect((await c.hb(id, last)).status).toBe(200);
  });

  it('malformed: 200 with the raw body, nothing applied', async () => {
    const [item] = em.queue();
    em.injectFault({ endpoint: 'poll', kind: 'malformed', body: '{"id":"../../etc","type":"work"' });
    const r = await c.poll();
    expect(r.status).toBe(200);
    expect(r.text).toBe('{"id":"../../etc","type":"work"');
    expect(em.item(item!.id).delivery).toBeNull();
    expect((await c.poll()).json.id).toBe(item!.id);
  });

  it('matching: endpoint, work_id filter, times (0 = until cleared), first added first', async () => {
    const [a, b] = em.queue({ count: 2 });
    em.injectFault({ endpoint: 'get', kind: 'status', status: 503, work_id: a!.id, times: 2 });
    em.injectFault({ endpoint: '*', kind: 'status', status: 502, times: 0 });
    expect((await c.get(a!.id)).status).toBe(503);
    expect((await c.get(b!.id)).status).toBe(502);
    expect((await c.get(a!.id)).status).toBe(503);
    expect((await c.get(a!.id)).status).toBe(502);
    expect((await c.list()).status).toBe(502);
    expect(em.faults()).toHaveLength(1);
    em.clearFaults();
    expect((await c.get(a!.id)).status).toBe(200);
    expect((await c.list()).status).toBe(200);
  });

  it('faults act before auth: a gateway error hides even a bad token', async () => {
    em.injectFault({ endpoint: 'stats', kind: 'status', status: 503 });
    const r = await fetch(`${em.url}/api/v1/cloud/environments/${em.environmentId}/work/stats`);
    expect(r.status).toBe(503);
  });

  it('the admin API is never faulted', async () => {
    em.injectFault({ endpoint: '*', kind: 'reset', times: 0 });
    const r = await fetch(`${em.adminUrl}items`);
    expect(r.status).toBe(200);
  });
});
