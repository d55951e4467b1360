/** Idempotency-Key over real sockets: the same call replays, a different call is refused, keys are bounded. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NO_HEARTBEAT } from '../../src/api/types.js';
import { startEmulator, type Emulator } from '../../src/emulator/index.js';
import { callFingerprint, IdempotencyKeys, REPLAYED_HEADER } from '../../src/emulator/idempotency.js';

let em: Emulator;
beforeEach(async () => {
  em = await startEmulator();
});
afterEach(async () => {
  await em.close();
});

interface CallOpts {
  key?: string;
  keyHeader?: string;
  query?: Record<string, string | number>;
  body?: string;
  workerId?: string;
  token?: string;
}

async function post(path: string, o: CallOpts = {}) {
  const url = new URL(`${em.url}/api/v1/cloud/environments/${em.environmentId}/work${path}`);
  for (const [k, v] of Object.entries(o.query ?? {})) url.searchParams.set(k, String(v));
  const headers: Record<string, string> = { authorization: `Bearer ${o.token ?? em.token}`, 'worker-id': o.workerId ?? 'w1' };
  if (o.key !== undefined) headers[o.keyHeader ?? 'idempotency-key'] = o.key;
  if (o.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(url, { method: 'POST', headers, ...(o.body !== undefined ? { body: o.body } : {}) });
  return { status: res.status, replayed: res.headers.get(REPLAYED_HEADER), json: (await res.json()) as any };
}

async function acked(): Promise<string> {
  const [item] = em.queue();
  expect((await post(`/${item!.id}/ack`)).status).toBe(200);
  return item!.id;
}

const hb = (id: string, expected: string, key?: string, extra: Partial<CallOpts> = {}) =>
  post(`/${id}/heartbeat`, { key, query: { expected_last_heartbeat: expected, desired_ttl_seconds: 30 }, ...extra });

describe('emulator Idempotency-Key', () => {
  it('the same key on the same call replays the stored reply, marked, without applying it again', async () => {
    const id = await acked();
    const first = await hb(id, NO_HEARTBEAT, 'k-1');
    expect(first.status).toBe(200);
    expect(first.replayed).toBeNull();
    const again = await hb(id, NO_HEARTBEAT, 'k-1');
    expect(again).toEqual({ ...first, replayed: 'true' });
    expect(em.item(id).lease!.heartbeats).toBe(1); // applied once
    const replays = em.events().filter((e) => e.type === 'replayed');
    expect(replays).toEqual([expect.objectContaining({ replayed: true, work_id: id, endpoint: 'heartbeat', status: 200, idempotency_key: 'k-1' })]);
    expect(em.events().filter((e) => e.type === 'heartbeat_accepted')).toHaveLength(1);
    // X-Idempotency-Key is the same key; the query's order does not make it another call.
    const url = `/${id}/heartbeat?desired_ttl_seconds=30&expected_last_heartbeat=${NO_HEARTBEAT}`;
    expect((await post(url, { key: 'k-1', keyHeader: 'x-idempotency-key' })).replayed).toBe('true');
  });

  it('a lost reply (drop_reply) then the retry with the same key: the lease is kept, no 412', async () => {
    const id = await acked();
    const first = await hb(id, NO_HEARTBEAT, 'k-1');
    em.injectFault({ endpoint: 'heartbeat', kind: 'drop_reply' });
    await expect(hb(id, first.json.last_heartbeat, 'k-2')).rejects.toThrow(); // applied, reply lost
    const retry = await hb(id, first.json.last_heartbeat, 'k-2');
    expect(retry.status).toBe(200);
    expect(retry.replayed).toBe('true');
    expect(retry.json.last_heartbeat).toBe(em.item(id).lease!.last_heartbeat); // the beat the server applied
    expect((await hb(id, retry.json.last_heartbeat, 'k-3')).status).toBe(200); // and the chain goes on
    expect(em.events().filter((e) => e.type === 'heartbeat_rejected')).toEqual([]);
  });

  it('a retry after a token rotation (the same key, the new token) still gets the stored reply', async () => {
    const id = await acked();
    const first = await hb(id, NO_HEARTBEAT, 'k-1');
    em.injectFault({ endpoint: 'heartbeat', kind: 'drop_reply' });
    await expect(hb(id, first.json.last_heartbeat, 'k-2')).rejects.toThrow();
    em.changeTokens({ accept: ['pt-rotated'], revoke: [em.token] });
    expect((await hb(id, first.json.last_heartbeat, 'k-2')).status).toBe(401); // the old token: refused, nothing stored
    const retry = await hb(id, first.json.last_heartbeat, 'k-2', { token: 'pt-rotated' });
    expect([retry.status, retry.replayed]).toEqual([200, 'true']);
    expect(retry.json.last_heartbeat).toBe(em.item(id).lease!.last_heartbeat);
  });

  it('a refusal on the merits is stored too (a 412 replays as 412); a fault or a 5xx is not', async () => {
    const id = await acked();
    await hb(id, NO_HEARTBEAT, 'k-1');
    const lost = await hb(id, NO_HEARTBEAT, 'k-412');
    expect(lost.status).toBe(412);
    expect(await hb(id, NO_HEARTBEAT, 'k-412')).toEqual({ ...lost, replayed: 'true' });
    // A 503 injected before the call (like a gateway) stores nothing: the retry is applied.
    const last = em.item(id).lease!.last_heartbeat;
    em.injectFault({ endpoint: 'heartbeat', kind: 'status', status: 503 });
    expect((await hb(id, last, 'k-5')).status).toBe(503);
    const applied = await hb(id, last, 'k-5');
    expect([applied.status, applied.replayed]).toEqual([200, null]);
  });

  it('the same key on a different call is 422 with the error envelope saying so; nothing applied', async () => {
    const id = await acked();
    const first = await hb(id, NO_HEARTBEAT, 'k-1');
    const cases = [
      hb(id, first.json.last_heartbeat, 'k-1'), // another precondition
      hb(id, NO_HEARTBEAT, 'k-1', { query: { expected_last_heartbeat: NO_HEARTBEAT, desired_ttl_seconds: 60 } }), // another ttl
      hb(id, NO_HEARTBEAT, 'k-1', { workerId: 'w2' }), // another Worker-ID
      post(`/${id}/stop`, { key: 'k-1' }), // another endpoint
      post(`/${id}`, { key: 'k-1', body: '{"metadata":{}}' }), // another path and a body
    ];
    for (const r of await Promise.all(cases)) {
      expect(r.status).toBe(422);
      expect(r.json).toEqual({
        type: 'error',
        request_id: expect.any(String),
        error: { type: 'invalid_request_error', message: expect.stringMatching(/^Idempotency-Key k-1 was already used for a different call \(POST .*\/heartbeat\?.*\); reuse a key only to retry the same call/) },
      });
    }
    expect(em.item(id).state).toBe('active');
    expect(em.item(id).lease!.heartbeats).toBe(1);
    expect(em.events().filter((e) => e.type.endsWith('_rejected')).map((e) => e.status)).toEqual([422, 422, 422, 422, 422]);
  });

  it('a body is part of the call byte for byte; a malformed key is 400; a refused token stores nothing', async () => {
    const id = await acked();
    expect((await post(`/${id}`, { key: 'm', body: '{"metadata":{"a":"1"}}' })).status).toBe(200);
    expect((await post(`/${id}`, { key: 'm', body: '{"metadata":{"a":"1"}}' })).replayed).toBe('true');
    expect((await post(`/${id}`, { key: 'm', body: '{"metadata":{"a":"2"}}' })).status).toBe(422);
    expect(em.item(id).metadata).toEqual({ a: '1' });
    expect((await post(`/${id}/stop`, { key: 'bad key' })).status).toBe(400);
    expect((await post(`/${id}/stop`, { key: 's', token: 'pt-wrong' })).status).toBe(401);
    const stop = await post(`/${id}/stop`, { key: 's' });
    expect([stop.status, stop.replayed, stop.json.state]).toEqual([200, null, 'stopping']);
    expect((await post(`/${id}/stop`, { key: 's' })).json.state).toBe('stopping'); // replayed: not confirmed to stopped
    expect(em.item(id).state).toBe('stopping');
  });

  it('keys are kept for a bounded time and count (settings idempotency_ttl_ms, idempotency_max_keys); reset forgets them', async () => {
    const id = await acked();
    em.setSettings({ idempotency_max_keys: 2 });
    await post(`/${id}`, { key: 'a', body: '{"metadata":{"n":"a"}}' });
    await post(`/${id}`, { key: 'b', body: '{"metadata":{"n":"b"}}' });
    await post(`/${id}`, { key: 'c', body: '{"metadata":{"n":"c"}}' });
    expect((await post(`/${id}`, { key: 'a', body: '{"metadata":{"n":"a"}}' })).replayed).toBeNull(); // the oldest went first
    expect((await post(`/${id}`, { key: 'c', body: '{"metadata":{"n":"c"}}' })).replayed).toBe('true');

    let now = 1000;
    const keys = new IdempotencyKeys(() => ({ ttlMs: 500, maxKeys: 10 }));
    const fp = callFingerprint('POST', new URL('http://x/p?b=2&a=1'), 'w', Buffer.from('{}'));
    expect(callFingerprint('POST', new URL('http://x/p?a=1&b=2'), 'w', Buffer.from('{}'))).toBe(fp);
    keys.remember('k', fp, 'POST /p', { status: 200, body: '{}' }, 'r1', now);
    expect(keys.lookup('k', fp, 'POST /p', (now += 499))?.kind).toBe('replay');
    expect(keys.lookup('k', fp, 'POST /p', (now += 1))).toBeNull();
    expect(keys.size).toBe(0);

    em.reset();
    const [item] = em.queue();
    await post(`/${item!.id}/ack`);
    expect((await hb(item!.id, NO_HEARTBEAT, 'c')).replayed).toBeNull();
  });
});
