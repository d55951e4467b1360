/**
 * Properties of WorkApi against a fake server that answers with generated statuses, headers and bodies
 * (valid replies, replies with one broken field, random JSON, random bytes), sometimes cutting the
 * connection: the client only ever rejects with an ApiError of the kind the status calls for, and it
 * accepts a 2xx reply exactly when the reply is fully valid.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkApi } from '../../src/api/client.js';
import { ApiError, type ApiErrorKind } from '../../src/api/errors.js';
import { NO_HEARTBEAT } from '../../src/api/types.js';

const TOKEN = 'pt-PropTest-secret-9f8e7d6c5b4a';
const ENV = 'env_prop';

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  mode: 'normal' | 'reset_before_headers' | 'truncate_body';
}

let server: http.Server;
let origin: string;
let answer: Answer;
const sockets = new Set<Socket>();

beforeAll(async () => {
  server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (answer.mode === 'reset_before_headers') {
        req.socket.destroy();
        return;
      }
      if (answer.mode === 'truncate_body') {
        res.writeHead(answer.status, { ...answer.headers, 'content-length': String(answer.body.length + 10) });
        res.write(answer.body);
        res.socket?.end(); // flush what was written, then FIN: 10 bytes short
        return;
      }
      res.writeHead(answer.status, { ...answer.headers, 'content-length': String(answer.body.length) });
      res.end(answer.body);
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

// ---- generators -------------------------------------------------------------------------------

const idChars = fc.constantFrom(...'ABCXYZabcxyz0189_-'.split(''));
const workId = fc.string({ unit: idChars, minLength: 1, maxLength: 24 }).map((s) => `work_${s}`);
const state = fc.constantFrom('queued', 'starting', 'active', 'stopping', 'stopped');
const two = (n: number): string => String(n).padStart(2, '0');

/** Any valid RFC 3339 form: T/t, 0 to 9 fraction digits, Z/z or a numeric offset. */
const rfc3339 = fc
  .record({
    date: fc.date({ min: new Date('0001-01-01T00:00:00Z'), max: new Date('9999-12-31T23:59:59Z'), noInvalidDate: true }),
    sep: fc.constantFrom('T', 't'),
    frac: fc.option(fc.string({ unit: fc.constantFrom(...'0123456789'.split('')), minLength: 1, maxLength: 9 }), { nil: undefined }),
    offset: fc.oneof(
      fc.constantFrom('Z', 'z'),
      fc.tuple(fc.constantFrom('+', '-'), fc.integer({ min: 0, max: 23 }), fc.integer({ min: 0, max: 59 })).map(([s, h, m]) => `${s}${two(h)}:${two(m)}`),
    ),
  })
  .map(({ date, sep, frac, offset }) => {
    const iso = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
    return `${iso.slice(0, 10)}${sep}${iso.slice(11, 19)}${frac === undefined ? '' : `.${frac}`}${offset}`;
  });

const nonProtoKey = fc.string({ maxLength: 12 }).filter((k) => k !== '__proto__');
const metadata = fc.dictionary(nonProtoKey, fc.string({ maxLength: 20 }), { maxKeys: 5 });

const ITEM_KEYS = ['id', 'type', 'environment_id', 'data', 'state', 'created_at', 'acknowledged_at', 'started_at', 'latest_heartbeat_at', 'stop_requested_at', 'stopped_at', 'metadata'];
const BEAT_KEYS = ['type', 'last_heartbeat', 'lease_extended', 'state', 'ttl_seconds'];
const extras = (known: string[]): fc.Arbitrary<Record<string, unknown>> =>
  fc.dictionary(
    nonProtoKey.filter((k) => !known.includes(k)),
    fc.jsonValue({ maxDepth: 2 }),
    { maxKeys: 3 },
  );

const nullableTs = fc.option(fc.oneof(rfc3339, fc.string({ minLength: 1, maxLength: 30 })), { nil: null });

const validItem = (id: string): fc.Arbitrary<Record<string, unknown>> =>
  fc
    .record({
      data: fc.record({
        type: fc.oneof(fc.constant('session'), fc.constant('healthcheck'), fc.string({ minLength: 1, maxLength: 10 })),
        id: fc.string({ unit: fc.constantFrom(...'sess_01abcXYZ-.:'.split('')), minLength: 1, maxLength: 30 }),
      }),
      state,
      created_at: rfc3339,
      acknowledged_at: nullableTs,
      started_at: nullableTs,
      latest_heartbeat_at: nullableTs,
      stop_requested_at: nullableTs,
      stopped_at: nullableTs,
      metadata,
      extra: extras(ITEM_KEYS),
    })
    .map(({ extra, ...rest }) => ({ ...extra, id, type: 'work', environment_id: ENV, ...rest }));

const validBeat: fc.Arbitrary<Record<string, unknown>> = fc
  .record({
    last_heartbeat: rfc3339,
    lease_extended: fc.boolean(),
    state,
    ttl_seconds: fc.integer({ min: 1, max: 100_000 }),
    extra: extras(BEAT_KEYS),
  })
  .map(({ extra, ...rest }) => ({ ...extra, type: 'work_heartbeat', ...rest }));

const MISSING = Symbol('missing');
const wrongTimestamps = ['', 'NO_HEARTBEAT', '2026-07-01T08:15:06', '2026-07-01 08:15:06Z', '2026-02-30T00:00:00Z', '2026-07-01T08:15:06.Z', 1751357706, null];
const BAD_BEAT: Record<string, unknown[]> = {
  type: ['work', '', 1, null, MISSING],
  last_heartbeat: [...wrongTimestamps, MISSING],
  lease_extended: ['true', 1, 0, null, MISSING],
  state: ['running', '', 'ACTIVE', null, 3, MISSING],
  ttl_seconds: [0, -1, 1.5, '60', null, true, 1e300, MISSING],
};
const BAD_ITEM = (id: string): Record<string, unknown[]> => ({
  type: ['work_heartbeat', 'Work', MISSING],
  id: ['wrk_1', 'work_', 'work_a/b', 'work_../x', 'work_%2F', 'work_ä', `${id}x`, 5, null, MISSING],
  environment_id: ['env_other', 'env_', 'environment', 'env_a/b', null, MISSING],
  data: [null, 'x', [], { type: 'session' }, { id: 'x' }, { type: 1, id: 'x' }, { type: 's', id: 'a\nb' }, { type: 's', id: '' }, MISSING],
  state: ['running', '', 'ACTIVE', null, 3, MISSING],
  created_at: [null, 1, '', MISSING],
  acknowledged_at: [1, '', {}, MISSING],
  stopped_at: [false, '', MISSING],
  metadata: [null, [], { a: 1 }, { a: null }, { a: { b: 'c' } }, 'x', MISSING],
});

function breakOne(valid: fc.Arbitrary<Record<string, unknown>>, bad: Record<string, unknown[]>): fc.Arbitrary<Record<string, unknown>> {
  const fields = Object.keys(bad);
  return fc.tuple(valid, fc.constantFrom(...fields), fc.nat()).map(([v, field, n]) => {
    const choices = bad[field] ?? [];
    const value = choices[n % choices.length];
    const out = { ...v };
    if (value === MISSING) delete out[field];
    else out[field] = value;
    return out;
  });
}

type Op = 'get' | 'heartbeat';
interface Case {
  op: Op;
  workId: string;
  status: number;
  body: Buffer;
  /** The reply is exactly what a correct server would send (only meaningful for 2xx). */
  valid: boolean;
  headers: Record<string, string>;
  mode: Answer['mode'];
}

const statusCode = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(200, 201, 202) },
  { weight: 3, arbitrary: fc.constantFrom(400, 401, 403, 404, 408, 409, 412, 422, 429, 500, 502, 503, 504) },
  { weight: 2, arbitrary: fc.integer({ min: 200, max: 599 }).filter((s) => s !== 204 && s !== 205 && s !== 304) },
);

const headerText = fc.string({ unit: fc.constantFrom(...'abcXYZ019-_:/ .,;=+'.split('')), minLength: 1, maxLength: 40 }).map((s) => `r${s}`);
const headers = fc.record(
  {
    'x-request-id': fc.oneof(headerText, fc.constant(`rid-${TOKEN}`)),
    'retry-after': fc.oneof(fc.nat({ max: 100_000 }).map(String), fc.date({ noInvalidDate: true }).map((d) => d.toUTCString()), headerText),
    'content-type': fc.constantFrom('application/json', 'text/html', 'application/json; charset=utf-8'),
  },
  { requiredKeys: [] },
);

const utf8 = (text: string): Buffer => Buffer.from(text, 'utf8');
const junk: fc.Arbitrary<Buffer> = fc.oneof(
  fc.jsonValue().map((v) => utf8(JSON.stringify(v) ?? 'null')),
  fc.string({ maxLength: 200 }).map(utf8),
  fc.string({ maxLength: 80 }).map((s) => utf8(JSON.stringify({ type: 'error', request_id: s, error: { type: s, message: `${s} ${TOKEN}` } }))),
  fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
);

const caseArb: fc.Arbitrary<Case> = fc
  .tuple(fc.constantFrom<Op>('get', 'heartbeat'), workId)
  .chain(([op, id]) => {
    const valid = op === 'get' ? validItem(id) : validBeat;
    const broken = op === 'get' ? breakOne(validItem(id), BAD_ITEM(id)) : breakOne(validBeat, BAD_BEAT);
    const body = fc.oneof(
      { weight: 4, arbitrary: valid.map((v) => ({ bytes: utf8(JSON.stringify(v)), valid: true })) },
      { weight: 4, arbitrary: broken.map((v) => ({ bytes: utf8(JSON.stringify(v)), valid: false })) },
      { weight: 2, arbitrary: junk.map((bytes) => ({ bytes, valid: false })) },
    );
    const mode = fc.oneof(
      { weight: 8, arbitrary: fc.constant<Answer['mode']>('normal') },
      { weight: 1, arbitrary: fc.constant<Answer['mode']>('reset_before_headers') },
      { weight: 1, arbitrary: fc.constant<Answer['mode']>('truncate_body') },
    );
    return fc
      .record({ status: statusCode, body, headers, mode })
      .map(({ status, body: b, headers: h, mode: m }) => ({ op, workId: id, status, body: b.bytes, valid: b.valid, headers: h, mode: m }));
  });

// ---- oracle -----------------------------------------------------------------------------------

function expectedKind(c: Case): ApiErrorKind | 'ok' {
  if (c.mode === 'reset_before_headers') return 'transient';
  const s = c.status;
  if (s >= 200 && s <= 299) return c.mode === 'normal' && c.valid ? 'ok' : 'malformed';
  if (s === 408 || s === 429 || s >= 500) return 'transient';
  if (s === 412) return 'lease_lost';
  if (s === 409) return 'conflict';
  if (s === 401 || s === 403) return 'auth';
  if (s === 404) return 'not_found';
  return 'bad_request';
}

async function run(c: Case): Promise<void> {
  answer = { status: c.status, headers: c.headers, body: c.body, mode: c.mode };
  const api = new WorkApi({ apiUrl: origin, token: TOKEN, environmentId: ENV });
  try {
    const call =
      c.op === 'get'
        ? api.get(c.workId, { timeoutMs: 5000 })
        : api.heartbeat(c.workId, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 60, idempotencyKey: 'k' }, { timeoutMs: 5000 });
    const outcome = await call.then(
      (reply) => ({ reply }),
      (error: unknown) => ({ error }),
    );
    const want = expectedKind(c);
    if ('reply' in outcome) {
      expect(want).toBe('ok');
      expect(outcome.reply.status).toBe(c.status);
      expect(outcome.reply.value).toEqual(JSON.parse(c.body.toString('utf8')));
      return;
    }
    const err = outcome.error;
    expect(err).toBeInstanceOf(ApiError);
    const e = err as ApiError;
    expect(e.kind).toBe(want);
    expect(e.message.length).toBeGreaterThan(0);
    expect(e.message).not.toMatch(/[\u0000-\u001f\u007f]/);
    expect(e.message).not.toContain(TOKEN);
    expect(e.requestId).toBeTypeOf('string');
    expect(e.requestId).not.toContain(TOKEN);
    if (e.retryAfterMs !== undefined) expect(Number.isFinite(e.retryAfterMs) && e.retryAfterMs >= 0).toBe(true);
    if (c.mode !== 'reset_before_headers') expect(e.status).toBe(c.status);
  } finally {
    for (const s of sockets) s.destroy();
    await api.close();
  }
}

describe('WorkApi against arbitrary replies', () => {
  it('only ever rejects with an ApiError of the right kind, and accepts a 2xx reply exactly when it is fully valid', async () => {
    await fc.assert(fc.asyncProperty(caseArb, run), { numRuns: Number(process.env.API_PROPERTY_RUNS ?? 300) });
  }, 60_000);

  it('a 200 reply with any one field broken is rejected as malformed, never accepted', async () => {
    const brokenOnly = fc
      .tuple(fc.constantFrom<Op>('get', 'heartbeat'), workId)
      .chain(([op, id]) => (op === 'get' ? breakOne(validItem(id), BAD_ITEM(id)) : breakOne(validBeat, BAD_BEAT)).map((v) => ({ op, id, v })));
    await fc.assert(
      fc.asyncProperty(brokenOnly, ({ op, id, v }) =>
        run({ op, workId: id, status: 200, body: Buffer.from(JSON.stringify(v), 'utf8'), valid: false, headers: {}, mode: 'normal' }),
      ),
      { numRuns: Number(process.env.API_PROPERTY_RUNS ?? 400) },
    );
  }, 60_000);

  it('generated valid replies are accepted (the generators themselves are sound)', async () => {
    const validOnly = fc
      .tuple(fc.constantFrom<Op>('get', 'heartbeat'), workId)
      .chain(([op, id]) => (op === 'get' ? validItem(id) : validBeat).map((v) => ({ op, id, v })));
    await fc.assert(
      fc.asyncProperty(validOnly, ({ op, id, v }) =>
        run({ op, workId: id, status: 200, body: Buffer.from(JSON.stringify(v), 'utf8'), valid: true, headers: {}, mode: 'normal' }),
      ),
      { numRuns: 100 },
    );
  }, 60_000);
});
