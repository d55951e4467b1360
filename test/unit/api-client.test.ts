/**
 * WorkApi against a real node:http server on 127.0.0.1:0: every status class, every malformed-reply
 * shape, the headers and query strings on the wire, deadlines, aborts, refused and reset connections.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { inspect } from 'node:util';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CallCancel } from '../../src/api/cancel.js';
import { WorkApi } from '../../src/api/client.js';
import { wireBeat, wireItem } from '../support/wire.js';
import {
  ApiError,
  AuthError,
  BadRequestError,
  ConflictError,
  LeaseLostError,
  MalformedReplyError,
  NotFoundError,
  TransientError,
  isFatal,
  isRetryable,
} from '../../src/api/errors.js';
import { NO_HEARTBEAT } from '../../src/api/types.js';

const TOKEN = 'pt-Sup3rSecret-token_0123456789';
const ENV = 'env_test01';
const WORK = 'work_abc-123';
const BASE = `/api/v1/cloud/environments/${ENV}/work`;

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}
type Handler = (req: http.IncomingMessage, res: http.ServerResponse, seen: Seen) => void;

let server: http.Server;
let origin: string;
let handler: Handler;
let seen: Seen[] = [];
const sockets = new Set<Socket>();
let api: WorkApi;

const item = (over: Record<string, unknown> = {}): Record<string, unknown> =>
  wireItem({ id: WORK, environment_id: ENV, state: 'starting', acknowledged_at: '2026-07-01T08:15:07.000001Z', ...over });
const beat = wireBeat;
const envelope = (type: string, message: string, requestId?: string): Record<string, unknown> => ({
  type: 'error',
  ...(requestId === undefined ? {} : { request_id: requestId }),
  error: { type, message },
});

function json(status: number, body: unknown, headers: Record<string, string> = {}): Handler {
  return (_req, res) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(typeof body === 'string' ? body : JSON.stringify(body));
  };
}

/** Resolves the rejection of `p`, failing when it resolves. */
async function failure(p: Promise<unknown>): Promise<ApiError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    return err as ApiError;
  }
  throw new Error('expected the call to fail');
}

function expectNoToken(err: unknown): void {
  for (const text of [String(err), (err as Error).stack ?? '', inspect(err, { depth: 6 }), JSON.stringify(err)]) {
    expect(text).not.toContain(TOKEN);
    expect(text).not.toContain(TOKEN.slice(0, 12));
  }
}

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const s: Seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      seen.push(s);
      handler(req, res, s);
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

// A fresh client (and connection pool) per test: a connection a test broke on purpose is never reused.
beforeEach(() => {
  api = new WorkApi({ apiUrl: origin, token: TOKEN, environmentId: ENV });
});

afterEach(async () => {
  seen = [];
  for (const s of sockets) s.destroy();
  await api.close();
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe('requests on the wire', () => {
  it('poll: GET …/work/poll?block_ms=999 with Worker-ID, bearer token, a uuid x-request-id and a user-agent', async () => {
    handler = json(200, null);
    const reply = await api.poll({ workerId: 'host-a.example:1' });
    expect(reply.value).toBeNull();
    expect(reply.status).toBe(200);
    const [s] = seen;
    expect(s?.method).toBe('GET');
    expect(s?.url).toBe(`${BASE}/poll?block_ms=999`);
    expect(s?.headers['worker-id']).toBe('host-a.example:1');
    expect(s?.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(s?.headers['x-request-id']).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(s?.headers['user-agent']).toMatch(/lease-keeper/);
    // No response x-request-id: the reply carries ours.
    expect(reply.requestId).toBe(s?.headers['x-request-id']);
  });

  it('poll: custom block_ms and reclaim_older_than_ms, and a returned item', async () => {
    handler = json(200, item({ state: 'queued' }));
    const reply = await api.poll({ workerId: 'w1', blockMs: 5, reclaimOlderThanMs: 0 });
    expect(reply.value?.id).toBe(WORK);
    expect(seen[0]?.url).toBe(`${BASE}/poll?block_ms=5&reclaim_older_than_ms=0`);
  });

  it('sends a fresh x-request-id on every call', async () => {
    handler = json(200, null);
    await Promise.all([api.poll({ workerId: 'w' }), api.poll({ workerId: 'w' }), api.stats().catch(() => undefined)]);
    const ids = seen.map((s) => s.headers['x-request-id']);
    expect(new Set(ids).size).toBe(3);
  });

  it('ack: POST …/{id}/ack with Worker-ID and no body or content-type', async () => {
    handler = json(200, item());
    const reply = await api.ack(WORK, { workerId: 'w1' });
    expect(reply.value.state).toBe('starting');
    expect(seen[0]).toMatchObject({ method: 'POST', url: `${BASE}/${WORK}/ack`, body: '' });
    expect(seen[0]?.headers['worker-id']).toBe('w1');
    expect(seen[0]?.headers['content-type']).toBeUndefined();
  });

  it('heartbeat: precondition and ttl in the query, Idempotency-Key header, no body', async () => {
    handler = json(200, beat());
    await api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 60, idempotencyKey: 'hb-1' });
    expect(seen[0]).toMatchObject({ method: 'POST', url: `${BASE}/${WORK}/heartbeat?expected_last_heartbeat=NO_HEARTBEAT&desired_ttl_seconds=60`, body: '' });
    expect(seen[0]?.headers['idempotency-key']).toBe('hb-1');
    expect(seen[0]?.headers['content-type']).toBeUndefined();
  });

  it('heartbeat: a + offset is percent-encoded, so the server reads it back byte for byte', async () => {
    const last = '2026-07-01T08:15:06.120394+05:30';
    handler = json(200, beat());
    await api.heartbeat(WORK, { expectedLastHeartbeat: last, desiredTtlSeconds: 30, idempotencyKey: 'k' });
    expect(seen[0]?.url).toBe(`${BASE}/${WORK}/heartbeat?expected_last_heartbeat=2026-07-01T08%3A15%3A06.120394%2B05%3A30&desired_ttl_seconds=30`);
    expect(new URL(seen[0]?.url ?? '', origin).searchParams.get('expected_last_heartbeat')).toBe(last);
  });

  it.each([
    '2026-07-01T08:15:06Z',
    '2026-07-01T08:15:06.1Z',
    '2026-07-01T08:15:06.123456789Z',
    '2026-07-01T08:15:06.120394+00:00',
    '2026-07-01T08:15:06.000000-08:00',
    '2026-07-01t08:15:06.5z',
    '2016-12-31T23:59:60Z',
  ])('heartbeat: odd but valid last_heartbeat %s is returned and echoed byte for byte', async (last) => {
    handler = (_req, res, s) => {
      const expected = new URL(s.url, origin).searchParams.get('expected_last_heartbeat');
      json(200, beat({ last_heartbeat: expected === NO_HEARTBEAT ? last : `${expected}` }))(_req, res, s);
    };
    const first = await api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 60, idempotencyKey: 'a' });
    expect(first.value.last_heartbeat).toBe(last);
    const second = await api.heartbeat(WORK, { expectedLastHeartbeat: first.value.last_heartbeat, desiredTtlSeconds: 60, idempotencyKey: 'b' });
    expect(new URL(seen[1]?.url ?? '', origin).searchParams.get('expected_last_heartbeat')).toBe(last);
    expect(second.value.last_heartbeat).toBe(last);
  });

  it('get, updateMetadata (JSON merge patch body), stats', async () => {
    handler = json(200, item({ metadata: { worker_id: 'w1' } }));
    expect((await api.get(WORK)).value.metadata).toEqual({ worker_id: 'w1' });
    expect(seen[0]).toMatchObject({ method: 'GET', url: `${BASE}/${WORK}` });

    await api.updateMetadata(WORK, { exit_code: '0', stale: null });
    expect(seen[1]).toMatchObject({ method: 'POST', url: `${BASE}/${WORK}` });
    expect(seen[1]?.headers['content-type']).toBe('application/json');
    expect(JSON.parse(seen[1]?.body ?? '')).toEqual({ metadata: { exit_code: '0', stale: null } });

    handler = json(200, { type: 'work_queue_stats', depth: 3, pending: 1, oldest_queued_at: null, workers_polling: 2 });
    expect((await api.stats()).value.depth).toBe(3);
    expect(seen[2]).toMatchObject({ method: 'GET', url: `${BASE}/stats` });
  });

  it('stop: no body and no content-type unless forced, then exactly {"force":true}', async () => {
    handler = json(200, item({ state: 'stopping' }));
    await api.stop(WORK);
    await api.stop(WORK, { force: false });
    await api.stop(WORK, { force: true });
    for (const s of seen.slice(0, 2)) {
      expect(s).toMatchObject({ method: 'POST', url: `${BASE}/${WORK}/stop`, body: '' });
      expect(s.headers['content-type']).toBeUndefined();
    }
    expect(seen[2]?.body).toBe('{"force":true}');
    expect(seen[2]?.headers['content-type']).toBe('application/json');
  });

  it('keeps a path prefix of apiUrl', async () => {
    handler = json(200, null);
    const prefixed = new WorkApi({ apiUrl: `${origin}/gw/`, token: TOKEN, environmentId: ENV, userAgent: 'custom/1' });
    try {
      await prefixed.poll({ workerId: 'w' });
      expect(seen[0]?.url).toBe(`/gw${BASE}/poll?block_ms=999`);
      expect(seen[0]?.headers['user-agent']).toBe('custom/1');
    } finally {
      await prefixed.close();
    }
  });
});

describe('request ids', () => {
  it('takes the response header first', async () => {
    handler = json(200, null, { 'x-request-id': 'srv-123' });
    expect((await api.poll({ workerId: 'w' })).requestId).toBe('srv-123');
    handler = json(503, envelope('api_error', 'down', 'body-1'), { 'x-request-id': 'srv-456' });
    expect((await failure(api.get(WORK))).requestId).toBe('srv-456');
  });

  it('then the envelope request_id, then ours', async () => {
    handler = json(500, envelope('api_error', 'boom', 'body-789'));
    const a = await failure(api.get(WORK));
    expect(a.requestId).toBe('body-789');
    expect(a.message).toContain('body-789');
    handler = json(500, 'oops');
    const b = await failure(api.get(WORK));
    expect(b.requestId).toBe(seen[1]?.headers['x-request-id']);
    expect(b.message).toContain(b.requestId);
  });
});

describe('status classes', () => {
  it.each<[number, new (...a: never[]) => ApiError, string]>([
    [408, TransientError, 'transient'],
    [429, TransientError, 'transient'],
    [500, TransientError, 'transient'],
    [502, TransientError, 'transient'],
    [503, TransientError, 'transient'],
    [504, TransientError, 'transient'],
    [412, LeaseLostError, 'lease_lost'],
    [409, ConflictError, 'conflict'],
    [401, AuthError, 'auth'],
    [403, AuthError, 'auth'],
    [404, NotFoundError, 'not_found'],
    [400, BadRequestError, 'bad_request'],
    [405, BadRequestError, 'bad_request'],
    [422, BadRequestError, 'bad_request'],
    [302, BadRequestError, 'bad_request'],
  ])('%i → %o', async (status, cls, kind) => {
    handler = json(status, envelope('some_error', `server says ${status}`, 'rid-1'));
    const err = await failure(api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 60, idempotencyKey: 'k' }));
    expect(err).toBeInstanceOf(cls);
    expect(err.kind).toBe(kind);
    expect(err).toMatchObject({ status, errorType: 'some_error', requestId: 'rid-1', operation: 'heartbeat', workId: WORK });
    expect(err.message).toContain(`server says ${status}`);
    expect(err.message).toContain('rid-1');
    expect(err.message.startsWith(`heartbeat ${WORK}: `)).toBe(true);
    expect(isRetryable(err)).toBe(kind === 'transient');
  });

  it('a 5xx with an HTML or truncated body is still transient', async () => {
    handler = json(502, '<html>bad gateway</html>');
    const err = await failure(api.poll({ workerId: 'w' }));
    expect(err).toBeInstanceOf(TransientError);
    expect(err.message).not.toContain('<html>');
    handler = (_req, res) => {
      res.writeHead(503, { 'content-length': '100' });
      res.write('{"type":"err');
      setTimeout(() => res.socket?.destroy(), 10);
    };
    expect(await failure(api.poll({ workerId: 'w' }))).toBeInstanceOf(TransientError);
  });

  it('401 says the token was refused and to check QODER_PAT', async () => {
    handler = json(401, envelope('authentication_error', 'PAT invalid or expired'));
    const err = await failure(api.poll({ workerId: 'w' }));
    expect(err.message).toMatch(/refused the token/);
    expect(err.message).toContain('QODER_PAT');
    expect(isFatal(err)).toBe(true);
  });

  it('a 400 saying the environment is not self_hosted is recognisable', async () => {
    handler = json(400, envelope('invalid_request_error', 'Environment env_test01 is not self_hosted'));
    const err = await failure(api.poll({ workerId: 'w' }));
    expect(err).toBeInstanceOf(BadRequestError);
    expect(err.message).toMatch(/not a self_hosted environment/);
    expect(err.message).toContain('QODER_ENVIRONMENT_ID');
  });

  it('404 names the environment or the item from the envelope', async () => {
    handler = json(404, envelope('not_found_error', 'Environment env_test01 not found'));
    expect((await failure(api.get(WORK))).message).toMatch(/environment env_test01 not found.*QODER_ENVIRONMENT_ID/);
    handler = json(404, envelope('not_found_error', `Work item ${WORK} not found`));
    expect((await failure(api.get(WORK))).message).toMatch(/work item work_abc-123 not found.*drop it/);
    handler = json(404, '');
    expect((await failure(api.get(WORK))).message).toMatch(/environment env_test01 or work item work_abc-123 not found/);
    expect((await failure(api.stats())).message).toMatch(/environment env_test01 not found/);
  });

  it('409 on ack says to drop the item, on heartbeat to stop the job', async () => {
    handler = json(409, envelope('invalid_request_error', 'claimed by another worker'));
    expect((await failure(api.ack(WORK, { workerId: 'w' }))).message).toMatch(/drop the item and poll again/);
    expect((await failure(api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 10, idempotencyKey: 'k' }))).message).toMatch(
      /stop the job/,
    );
  });

  it('Retry-After in seconds and as an HTTP date', async () => {
    handler = json(429, envelope('rate_limit_error', 'slow down'), { 'retry-after': '7' });
    const a = await failure(api.poll({ workerId: 'w' }));
    expect(a.retryAfterMs).toBe(7000);
    expect(a.message).toMatch(/wait 7 s/);
    handler = json(503, '', { 'retry-after': new Date(Date.now() + 5000).toUTCString() });
    const b = await failure(api.poll({ workerId: 'w' }));
    expect(b.retryAfterMs).toBeGreaterThanOrEqual(3000);
    expect(b.retryAfterMs).toBeLessThanOrEqual(5000);
    handler = json(503, '', { 'retry-after': 'whenever' });
    expect((await failure(api.poll({ workerId: 'w' }))).retryAfterMs).toBeUndefined();
  });

  it('server text is cleaned: control characters removed, cut to about 300 characters', async () => {
    handler = json(500, envelope('api\u0007_error', `line1\nline2\u0000\u001b[2J${'y'.repeat(2000)}`));
    const err = await failure(api.get(WORK));
    expect(err.message).not.toMatch(/[\u0000-\u001f\u007f]/);
    expect(err.message).toContain('line1 line2');
    expect(err.message.length).toBeLessThan(600);
    expect(err.errorType).toBe('api_error');
  });
});

describe('the token never leaks', () => {
  it('not even when the server echoes it in its message, error type and request id', async () => {
    handler = (req, res) => {
      const auth = req.headers.authorization ?? '';
      const raw = auth.replace(/^Bearer /, '');
      res.writeHead(401, { 'content-type': 'application/json', 'x-request-id': `rid-${raw}` });
      res.end(JSON.stringify({ type: 'error', request_id: raw, error: { type: raw, message: `bad header "${auth}" token=${encodeURIComponent(raw)}` } }));
    };
    const err = await failure(api.poll({ workerId: 'w' }));
    expect(err).toBeInstanceOf(AuthError);
    expect(err.message).toContain('[REDACTED]');
    expectNoToken(err);
    expect(inspect(api)).not.toContain(TOKEN);
    expect(JSON.stringify(api)).not.toContain(TOKEN);
  });

  it('nor in network, timeout and malformed errors', async () => {
    handler = (req) => req.socket.destroy();
    expectNoToken(await failure(api.poll({ workerId: 'w' })));
    handler = () => undefined;
    expectNoToken(await failure(api.poll({ workerId: 'w' }, { timeoutMs: 50 })));
    handler = json(200, { token: TOKEN });
    expectNoToken(await failure(api.get(WORK)));
  });
});

describe('malformed 2xx replies', () => {
  it.each<[string, Handler, RegExp]>([
    ['not JSON', json(200, 'hello'), /not JSON/],
    ['empty', json(200, ''), /empty/],
    ['invalid UTF-8', (_q, res) => res.end(Buffer.from([0x7b, 0xff, 0x7d])), /UTF-8/],
    ['wrong type', json(200, item({ type: 'job' })), /field type/],
    ['unknown state', json(200, item({ state: 'running' })), /field state/],
    ['id prefix', json(200, item({ id: 'job_abc-123' })), /field id/],
    ['id with ../', json(200, item({ id: 'work_../../admin' })), /field id/],
    ['id with %2F', json(200, item({ id: 'work_%2Fetc' })), /field id/],
    ['environment prefix', json(200, item({ environment_id: 'test01' })), /field environment_id/],
    ['another environment', json(200, item({ environment_id: 'env_other' })), /field environment_id is env_other/],
    ['another item', json(200, item({ id: 'work_other' })), /field id is work_other, not the requested/],
    ['metadata value', json(200, item({ metadata: { n: 1 } })), /field metadata\["n"\]/],
    ['missing data', json(200, item({ data: undefined })), /field data is missing/],
    ['an array', json(200, [item()]), /field \(body\)/],
    ['null', json(200, 'null'), /field \(body\)/],
  ])('get: %s', async (_name, h, re) => {
    handler = h;
    const err = await failure(api.get(WORK));
    expect(err).toBeInstanceOf(MalformedReplyError);
    expect(err.status).toBe(200);
    expect(err.message).toMatch(re);
    expect(err.message).toContain(err.requestId);
  });

  it.each<[string, Record<string, unknown>, RegExp]>([
    ['ttl zero', beat({ ttl_seconds: 0 }), /ttl_seconds/],
    ['ttl fraction', beat({ ttl_seconds: 2.5 }), /ttl_seconds/],
    ['ttl string', beat({ ttl_seconds: '60' }), /ttl_seconds/],
    ['last_heartbeat empty', beat({ last_heartbeat: '' }), /last_heartbeat/],
    ['last_heartbeat without offset', beat({ last_heartbeat: '2026-07-01T08:15:06.120394' }), /last_heartbeat/],
    ['last_heartbeat number', beat({ last_heartbeat: 1 }), /last_heartbeat/],
    ['lease_extended string', beat({ lease_extended: 'yes' }), /lease_extended/],
    ['unknown state', beat({ state: 'alive' }), /field state/],
  ])('heartbeat: %s', async (_name, body, re) => {
    handler = json(200, body);
    const err = await failure(api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 60, idempotencyKey: 'k' }));
    expect(err).toBeInstanceOf(MalformedReplyError);
    expect(err.message).toMatch(re);
  });

  it('tolerates unknown extra fields and an unknown data.type', async () => {
    handler = json(200, item({ secret: { x: 1 }, data: { type: 'healthcheck', id: 'hc_1', extra: [1] }, future_field: true }));
    const reply = await api.get(WORK);
    expect(reply.value.data.type).toBe('healthcheck');
    handler = json(200, beat({ something_new: 1 }));
    expect((await api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 60, idempotencyKey: 'k' })).value.ttl_seconds).toBe(60);
  });

  it('truncated: the connection closes mid-body (Content-Length and chunked)', async () => {
    const body = JSON.stringify(item());
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(body.length) });
      res.write(body.slice(0, 40));
      setTimeout(() => res.socket?.destroy(), 10);
    };
    const a = await failure(api.get(WORK));
    expect(a).toBeInstanceOf(MalformedReplyError);
    expect(a.message).toMatch(/truncated/);
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write(body.slice(0, 40));
      setTimeout(() => res.socket?.destroy(), 10);
    };
    expect(await failure(api.get(WORK))).toBeInstanceOf(MalformedReplyError);
  });

  it('oversized: more than 1 MiB, announced or streamed', async () => {
    const big = JSON.stringify(item({ metadata: { pad: 'x'.repeat(1024 * 1024) } }));
    handler = json(200, big);
    const a = await failure(api.get(WORK));
    expect(a).toBeInstanceOf(MalformedReplyError);
    expect(a.message).toMatch(/larger than 1048576 bytes/);
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      for (let i = 0; i < big.length; i += 64 * 1024) res.write(big.slice(i, i + 64 * 1024));
      res.end();
    };
    expect((await failure(api.get(WORK))).message).toMatch(/larger than/);
    // The client still works afterwards.
    handler = json(200, item());
    expect((await api.get(WORK)).value.id).toBe(WORK);
  });

  it('a body just under 1 MiB is read', async () => {
    const base = JSON.stringify(item({ metadata: { pad: '' } }));
    handler = json(200, item({ metadata: { pad: 'x'.repeat(1024 * 1024 - base.length) } }));
    expect((await api.get(WORK)).value.metadata.pad?.length).toBe(1024 * 1024 - base.length);
  });
});

describe('arguments are checked before anything is sent', () => {
  it.each(['../x', 'work_../x', 'work_%2F', 'work_a/b', 'work_', 'work_a?b', 'WORK_a', '', 'work_a b'])('work id %j', async (bad) => {
    handler = json(200, item());
    for (const call of [
      () => api.get(bad),
      () => api.ack(bad, { workerId: 'w' }),
      () => api.heartbeat(bad, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 60, idempotencyKey: 'k' }),
      () => api.updateMetadata(bad, {}),
      () => api.stop(bad),
    ]) {
      const err = await failure(call());
      expect(err).toBeInstanceOf(MalformedReplyError);
    }
    expect(seen).toHaveLength(0);
  });

  it('other parameters', async () => {
    const bad: Promise<unknown>[] = [
      api.poll({ workerId: 'w', blockMs: 0 }),
      api.poll({ workerId: 'w', blockMs: 1000 }),
      api.poll({ workerId: 'w', reclaimOlderThanMs: -1 }),
      api.poll({ workerId: 'bad\r\nx-injected: 1' }),
      api.poll({ workerId: '' }),
      api.heartbeat(WORK, { expectedLastHeartbeat: '', desiredTtlSeconds: 60, idempotencyKey: 'k' }),
      api.heartbeat(WORK, { expectedLastHeartbeat: '\ud800', desiredTtlSeconds: 60, idempotencyKey: 'k' }),
      api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 0, idempotencyKey: 'k' }),
      api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 1.5, idempotencyKey: 'k' }),
      api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 60, idempotencyKey: 'k\n' }),
      api.updateMetadata(WORK, { n: 1 as unknown as string }),
      api.get(WORK, { timeoutMs: 0 }),
      api.get(WORK, { timeoutMs: Number.NaN }),
    ];
    for (const p of bad) expect(await failure(p)).toBeInstanceOf(BadRequestError);
    expect(seen).toHaveLength(0);
  });

  it('the constructor rejects a bad URL, token or environment without echoing the token', () => {
    expect(() => new WorkApi({ apiUrl: 'ftp://x', token: TOKEN, environmentId: ENV })).toThrow(BadRequestError);
    expect(() => new WorkApi({ apiUrl: 'not a url', token: TOKEN, environmentId: ENV })).toThrow(BadRequestError);
    expect(() => new WorkApi({ apiUrl: origin, token: '', environmentId: ENV })).toThrow(/QODER_PAT/);
    expect(() => new WorkApi({ apiUrl: origin, token: `${TOKEN}\n`, environmentId: ENV })).toThrow(/QODER_PAT/);
    expect(() => new WorkApi({ apiUrl: origin, token: TOKEN, environmentId: 'env_../x' })).toThrow(/QODER_ENVIRONMENT_ID/);
    try {
      new WorkApi({ apiUrl: origin, token: `${TOKEN}\n`, environmentId: ENV });
    } catch (err) {
      expectNoToken(err);
    }
  });
});

describe('deadlines, aborts and the network', () => {
  it('timeoutMs on a hanging server fires within tolerance and is transient', async () => {
    handler = () => undefined; // never answers
    const started = performance.now();
    const err = await failure(api.get(WORK, { timeoutMs: 100 }));
    const took = performance.now() - started;
    expect(err).toBeInstanceOf(TransientError);
    expect(err.message).toMatch(/no complete reply within 100 ms/);
    expect(err.status).toBeUndefined();
    expect(took).toBeGreaterThanOrEqual(90);
    expect(took).toBeLessThan(1000);
  });

  it('a body that stalls after the headers is cut off by the same deadline', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '500' });
      res.write('{"id":');
    };
    const started = performance.now();
    const err = await failure(api.get(WORK, { timeoutMs: 150 }));
    expect(err).toBeInstanceOf(TransientError);
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it("the caller's abort cancels the call; an already aborted signal sends nothing", async () => {
    handler = () => undefined;
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('lease ended')), 50);
    const started = performance.now();
    const err = await failure(api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 60, idempotencyKey: 'k' }, { signal: ac.signal }));
    expect(err).toBeInstanceOf(TransientError);
    expect(err.message).toMatch(/cancelled by the caller/);
    expect(performance.now() - started).toBeLessThan(1000);

    seen = [];
    const err2 = await failure(api.get(WORK, { signal: AbortSignal.abort() }));
    expect(err2).toBeInstanceOf(TransientError);
    expect(seen).toHaveLength(0);
  });

  it('a caller signal that never fires is left without listeners after the call', async () => {
    handler = json(200, item());
    const ac = new AbortController();
    let added = 0;
    let removed = 0;
    const add = ac.signal.addEventListener.bind(ac.signal);
    const remove = ac.signal.removeEventListener.bind(ac.signal);
    ac.signal.addEventListener = ((...a: Parameters<typeof add>) => (added++, add(...a))) as typeof add;
    ac.signal.removeEventListener = ((...a: Parameters<typeof remove>) => (removed++, remove(...a))) as typeof remove;
    for (let i = 0; i < 5; i++) await api.get(WORK, { signal: ac.signal });
    expect(added).toBe(5);
    expect(removed).toBe(5);
  });

  it('timeoutMs null: the caller\'s signal is the only deadline (no timer, no listener of the client\'s own)', async () => {
    handler = () => undefined; // never answers
    const ac = new AbortController();
    let added = 0;
    const add = ac.signal.addEventListener.bind(ac.signal);
    ac.signal.addEventListener = ((...a: Parameters<typeof add>) => (added++, add(...a))) as typeof add;
    const call = api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 60, idempotencyKey: 'k' }, { signal: ac.signal, timeoutMs: null });
    await new Promise((r) => setTimeout(r, 150)); // longer than any timer would matter here: still pending
    expect(seen).toHaveLength(1);
    expect(added).toBe(1); // the exchange's listener only (linkDeadline would add a second)
    ac.abort();
    const err = await failure(call);
    expect(err).toBeInstanceOf(TransientError);
    expect(err.message).toMatch(/cancelled by the caller/);
  });

  it('a CallCancel works as the signal: cancels a hanging call, sends nothing when already cancelled, leaves no listener', async () => {
    handler = () => undefined; // never answers
    const cancel = new CallCancel();
    const call = api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 60, idempotencyKey: 'k' }, { signal: cancel, timeoutMs: null });
    await new Promise((r) => setTimeout(r, 50));
    expect(seen).toHaveLength(1);
    expect(cancel.listenerCount('abort')).toBe(1); // the exchange's
    cancel.abort();
    cancel.abort(); // once
    const err = await failure(call);
    expect(err).toBeInstanceOf(TransientError);
    expect(err.message).toMatch(/cancelled by the caller/);
    expect(cancel.listenerCount('abort')).toBe(0);

    seen = [];
    expect(await failure(api.get(WORK, { signal: cancel }))).toBeInstanceOf(TransientError);
    expect(seen).toHaveLength(0);

    handler = json(200, item());
    const live = new CallCancel();
    await api.get(WORK, { signal: live, timeoutMs: 1000 }); // with a timer of the client's own too
    expect(live.listenerCount('abort')).toBe(0);
  });

  it('timeoutMs null without a signal is refused before anything is sent', async () => {
    handler = json(200, item());
    const err = await failure(api.get(WORK, { timeoutMs: null }));
    expect(err).toBeInstanceOf(BadRequestError);
    expect(err.message).toMatch(/timeoutMs may be null only with a signal/);
    expect(seen).toHaveLength(0);
  });

  it('reads a chunked reply (no Content-Length) as well as a sized one', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const text = JSON.stringify(item());
      res.write(text.slice(0, 10));
      setTimeout(() => res.end(text.slice(10)), 20);
    };
    const chunked = await api.get(WORK);
    expect(chunked.value.id).toBe(WORK);
    handler = json(200, item());
    const sized = await api.get(WORK);
    expect(sized.value).toEqual(chunked.value);
  });

  it('connection reset before a reply is transient', async () => {
    handler = (req) => req.socket.destroy();
    const err = await failure(api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 60, idempotencyKey: 'k' }));
    expect(err).toBeInstanceOf(TransientError);
    expect(err.message).toMatch(/^heartbeat work_abc-123: connection reset before a reply .*request id [0-9a-f-]{36}.*within the lease/);
  });

  it('connection refused is transient', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const dead = new WorkApi({ apiUrl: `http://127.0.0.1:${port}`, token: TOKEN, environmentId: ENV });
    try {
      const err = await failure(dead.poll({ workerId: 'w' }, { timeoutMs: 2000 }));
      expect(err).toBeInstanceOf(TransientError);
      expect(err.message).toMatch(/connection refused/);
      expectNoToken(err);
    } finally {
      await dead.close();
    }
  });

  it('after close(), calls fail as ApiErrors', async () => {
    const own = new WorkApi({ apiUrl: origin, token: TOKEN, environmentId: ENV });
    await own.close();
    await own.close();
    expect(await failure(own.stats())).toBeInstanceOf(ApiError);
  });
});
