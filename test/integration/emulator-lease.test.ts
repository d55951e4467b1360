/** Leases over real sockets: the byte-exact heartbeat chain, ttl grants, expiry in real time, takeover, the event log. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NO_HEARTBEAT } from '../../src/api/types.js';
import { startEmulator, type Emulator, type EmulatorEvent } from '../../src/emulator/index.js';

const MICRO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

function client(em: Emulator, workerId: string) {
  const base = `${em.url}/api/v1/cloud/environments/${em.environmentId}/work`;
  const call = async (method: string, path: string, query: Record<string, string | number | undefined> = {}) => {
    const url = new URL(base + path);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, String(v));
    const res = await fetch(url, { method, headers: { authorization: `Bearer ${em.token}`, 'worker-id': workerId } });
    return { status: res.status, json: (await res.json()) as any, requestId: res.headers.get('x-request-id') };
  };
  return {
    poll: (q: Record<string, number> = {}) => call('GET', '/poll', q),
    ack: (id: string) => call('POST', `/${id}/ack`),
    hb: (id: string, expected?: string, ttl?: number) => call('POST', `/${id}/heartbeat`, { expected_last_heartbeat: expected, desired_ttl_seconds: ttl }),
    get: (id: string) => call('GET', `/${id}`),
    stop: (id: string) => call('POST', `/${id}/stop`),
  };
}

const admin = async (em: Emulator, method: string, path: string, body?: unknown) => {
  const res = await fetch(`${em.adminUrl}${path}`, {
    method,
    ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}),
  });
  return { status: res.status, json: (await res.json()) as any };
};

let em: Emulator;
afterEach(async () => {
  await em?.close();
});

describe('emulator leases: the heartbeat chain', () => {
  beforeEach(async () => {
    em = await startEmulator();
  });

  it('every last_heartbeat is RFC 3339 UTC with µs, strictly increasing, and only the exact echo works', async () => {
    const w1 = client(em, 'w1');
    const [item] = em.queue();
    await w1.ack(item!.id);
    let last = (await w1.hb(item!.id, NO_HEARTBEAT, 30)).json.last_heartbeat as string;
    const seen = [last];
    for (let i = 0; i < 40; i++) {
      const r = await w1.hb(item!.id, last, 30);
      expect(r.status).toBe(200);
      expect(r.json.last_heartbeat).toMatch(MICRO_RE);
      expect(r.json.last_heartbeat > last).toBe(true);
      last = r.json.last_heartbeat;
      seen.push(last);
    }
    expect(new Set(seen).size).toBe(seen.length);
    // the GET view carries the same bytes (a keeper may re-sync from it)
    expect((await w1.get(item!.id)).json.latest_heartbeat_at).toBe(last);
    // any re-formatting of the same instant is detected
    const reformatted = [new Date(Date.parse(last)).toISOString(), last.replace('Z', '+00:00'), last.replace(/\.(\d+)Z/, '.$1000Z'), last.toLowerCase()];
    for (const r of reformatted) expect((await w1.hb(item!.id, r, 30)).status, r).toBe(412);
    expect((await w1.hb(item!.id, last, 30)).status).toBe(200);
    const accepted = em.events().filter((e) => e.type === 'heartbeat_accepted');
    expect(accepted.map((e) => e.last_heartbeat)).toEqual([...seen, expect.any(String)]);
    for (let i = 1; i < accepted.length; i++) expect(accepted[i]!.previous_last_heartbeat).toBe(accepted[i - 1]!.last_heartbeat);
  });

  it('grants clamp(desired_ttl_seconds, 10, 600); ttl_override_seconds grants exactly that', async () => {
    const w1 = client(em, 'w1');
    const [item] = em.queue();
    await w1.ack(item!.id);
    await w1.hb(item!.id, NO_HEARTBEAT);
    const grant = async (ttl?: number) => (await w1.hb(item!.id, undefined, ttl)).json.ttl_seconds as number;
    expect([await grant(1), await grant(10), await grant(11), await grant(600), await grant(601), await grant(100000), await grant()]).toEqual([10, 10, 11, 600, 600, 600, 60]);
    expect((await admin(em, 'POST', 'settings', { ttl_override_seconds: 3 })).json.ttl_override_seconds).toBe(3);
    expect([await grant(1), await grant(60), await grant()]).toEqual([3, 3, 3]);
    const lease = em.item(item!.id).lease!;
    expect(lease.ttl_seconds).toBe(3);
    await admin(em, 'POST', 'settings', { ttl_override_seconds: null });
    expect(await grant(5)).toBe(10);
    const ev = em.events().filter((e) => e.type === 'heartbeat_accepted').at(-1)!;
    expect(ev.lease_expires_at_ms).toBe(ev.t_ms + 10_000);
  });
});

describe('emulator leases: expiry in real time (ttl override 1 s)', () => {
  beforeEach(async () => {
    em = await startEmulator({ ttlOverrideSeconds: 1 });
  });

  it('active -> queued after the ttl; the old holder gets 409, then 412 once another worker holds it', async () => {
    const w1 = client(em, 'w1');
    const w2 = client(em, 'w2');
    const [item] = em.queue();
    await w1.poll();
    await w1.ack(item!.id);
    const h = await w1.hb(item!.id, NO_HEARTBEAT, 60);
    expect(h.json.ttl_seconds).toBe(1);
    const accepted = em.events().find((e) => e.type === 'heartbeat_accepted')!;
    // well inside the lease it is still held
    await new Promise((r) => setTimeout(r, 300));
    expect(em.item(item!.id).state).toBe('active');
    const expired = await em.waitForEvent((e) => e.type === 'lease_expired', { timeoutMs: 5000, since: 0 });
    expect(expired).toMatchObject({ work_id: item!.id, worker_id: 'w1', reason: 'ttl', from_state: 'active', to_state: 'queued', last_heartbeat: h.json.last_heartbeat, lease_expires_at_ms: accepted.lease_expires_at_ms });
    expect(expired.t_ms).toBeGreaterThan(accepted.lease_expires_at_ms as number);
    expect(expired.t_ms - (accepted.lease_expires_at_ms as number)).toBeLessThan(1000); // sweep every 50 ms; generous
    expect(em.item(item!.id)).toMatchObject({ state: 'queued', acknowledged_at: null, started_at: null, lease: null, delivery: null });
    expect((await w1.hb(item!.id, h.json.last_heartbeat, 60)).status).toBe(409);
    // redeliverable at once, even to another worker
    expect((await w2.poll()).json.id).toBe(item!.id);
    await w2.ack(item!.id);
    const h2 = await w2.hb(item!.id, NO_HEARTBEAT, 60);
    expect(h2.status).toBe(200);
    expect(h2.json.last_heartbeat > h.json.last_heartbeat).toBe(true);
    const stale = await w1.hb(item!.id, h.json.last_heartbeat, 60);
    expect(stale.status).toBe(412);
    expect(stale.json.error.type).toBe('precondition_failed_error');
    const newLease = em.events().find((e) => e.type === 'heartbeat_accepted' && e.worker_id === 'w2')!;
    expect(newLease.new_lease).toBe(true);
    expect(newLease.lease_epoch).toBe((accepted.lease_epoch as number) + 1);
    expect(newLease.t_ms).toBeGreaterThan(accepted.lease_expires_at_ms as number); // the two leases never overlap
  });

  it('heartbeats keep a 1 s lease alive indefinitely', async () => {
    const w1 = client(em, 'w1');
    const [item] = em.queue();
    await w1.ack(item!.id);
    let last = (await w1.hb(item!.id, NO_HEARTBEAT)).json.last_heartbeat as string;
    const end = Date.now() + 1800;
    while (Date.now() < end) {
      await new Promise((r) => setTimeout(r, 150));
      const r = await w1.hb(item!.id, last);
      expect(r.status).toBe(200);
      last = r.json.last_heartbeat;
    }
    expect(em.events().some((e) => e.type === 'lease_expired')).toBe(false);
  });

  it('stopping -> stopped when its lease runs out; starting -> queued after starting_timeout_ms', async () => {
    const w1 = client(em, 'w1');
    const [a, b] = em.queue({ count: 2 });
    await w1.ack(a!.id);
    await w1.hb(a!.id, NO_HEARTBEAT);
    em.requestStop(a!.id);
    await admin(em, 'POST', 'settings', { starting_timeout_ms: 300 });
    await w1.ack(b!.id);
    const ev = await em.waitForEvent((e) => e.type === 'stopped' && e.work_id === a!.id, { timeoutMs: 5000, since: 0 });
    expect(ev).toMatchObject({ reason: 'lease_expired', from_state: 'stopping' });
    expect((await w1.get(a!.id)).json.state).toBe('stopped');
    const q = await em.waitForEvent((e) => e.type === 'lease_expired' && e.work_id === b!.id, { timeoutMs: 5000, since: 0 });
    expect(q).toMatchObject({ reason: 'starting_timeout', from_state: 'starting', to_state: 'queued' });
    expect((await w1.get(b!.id)).json).toMatchObject({ state: 'queued', acknowledged_at: null });
  });
});

describe('emulator leases: takeover', () => {
  beforeEach(async () => {
    em = await startEmulator();
  });

  it('POST /_admin/items/{id}/takeover: the next heartbeat of the old holder gets 412', async () => {
    const w1 = client(em, 'w1');
    const [item] = em.queue();
    await w1.ack(item!.id);
    const h = await w1.hb(item!.id, NO_HEARTBEAT, 30);
    const t = await admin(em, 'POST', `items/${item!.id}/takeover`, {});
    expect(t.status).toBe(200);
    expect(t.json.heartbeat).toMatchObject({ type: 'work_heartbeat', lease_extended: true, state: 'active', ttl_seconds: 30 });
    expect(t.json.heartbeat.last_heartbeat > h.json.last_heartbeat).toBe(true);
    const lease = em.item(item!.id).lease!;
    expect(lease.holder_worker_id).toBe('emulator-takeover');
    expect(lease.expires_at_ms).toBeGreaterThan(Date.now() + 25_000);
    const r = await w1.hb(item!.id, h.json.last_heartbeat, 30);
    expect(r.status).toBe(412);
    expect(r.json.error.type).toBe('precondition_failed_error');
    const ev = em.events().find((e) => e.type === 'takeover')!;
    expect(ev).toMatchObject({ work_id: item!.id, previous_holder_worker_id: 'w1', holder_worker_id: 'emulator-takeover', previous_last_heartbeat: h.json.last_heartbeat, last_heartbeat: t.json.heartbeat.last_heartbeat });
    // in process, with a named phantom; queued/stopped items cannot be taken over
    expect(em.takeover(item!.id, { workerId: 'ghost' }).heartbeat.last_heartbeat > t.json.heartbeat.last_heartbeat).toBe(true);
    expect(em.item(item!.id).lease!.holder_worker_id).toBe('ghost');
    const [q] = em.queue();
    expect((await admin(em, 'POST', `items/${q!.id}/takeover`)).status).toBe(409);
    expect((await admin(em, 'POST', 'items/work_AAAAAAAAAAAAAAAAAAAAAAAA/takeover')).status).toBe(404);
  });
});

describe('emulator event log', () => {
  beforeEach(async () => {
    em = await startEmulator();
  });

  it('records a whole lifecycle with request ids, workers, statuses and lease details', async () => {
    const w1 = client(em, 'w1');
    const [item] = em.queue();
    const id = item!.id;
    const p = await w1.poll();
    const a = await w1.ack(id);
    const h = await w1.hb(id, NO_HEARTBEAT, 20);
    const bad = await w1.hb(id, NO_HEARTBEAT, 20);
    const s1 = await w1.stop(id);
    const s2 = await w1.stop(id);
    const s3 = await w1.stop(id);
    const evs = em.events().filter((e) => e.work_id === id);
    const pick = (e: EmulatorEvent) => [e.type, e.request_id ?? null, e.status ?? null];
    expect(evs.map(pick)).toEqual([
      ['queued', null, null],
      ['poll_delivered', p.requestId, 200],
      ['ack', a.requestId, 200],
      ['heartbeat_accepted', h.requestId, 200],
      ['heartbeat_rejected', bad.requestId, 412],
      ['stop_requested', s1.requestId, 200],
      ['stopped', s2.requestId, 200],
      ['stop_unchanged', s3.requestId, 200],
    ]);
    for (const e of evs.slice(1)) expect(e.worker_id).toBe('w1');
    const hb = evs[3]!;
    expect(hb).toMatchObject({ ttl_seconds: 20, desired_ttl_seconds: 20, expected: NO_HEARTBEAT, last_heartbeat: h.json.last_heartbeat, new_lease: true, from_state: 'starting', state: 'active' });
    expect(hb.lease_expires_at_ms).toBe(hb.t_ms + 20_000);
    expect(evs[4]).toMatchObject({ error_type: 'precondition_failed_error' });
    expect(evs[6]).toMatchObject({ from_state: 'stopping', force: false, by: 'api', lease_epoch: hb.lease_epoch });
    const all = em.events();
    for (let i = 0; i < all.length; i++) {
      expect(all[i]!.seq).toBe(i + 1);
      expect(all[i]!.at).toBe(new Date(all[i]!.t_ms).toISOString());
      if (i > 0) expect(all[i]!.t_ms).toBeGreaterThanOrEqual(all[i - 1]!.t_ms);
    }
    const since = await admin(em, 'GET', `events?since=${all.length - 2}`);
    expect(since.json.events.map((e: EmulatorEvent) => e.seq)).toEqual([all.length - 1, all.length]);
    expect(since.json.last_seq).toBe(all.length);
  });
});
