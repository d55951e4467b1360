/**
 * Malformed input, end to end: the real Worker (src/worker/loop.ts) with a real WorkApi, in --once mode,
 * against a fake control plane (node:http) that answers poll, ack, heartbeat, update-metadata and stop
 * from a generated script: every status, bodies that are not JSON, truncated, huge, not UTF-8, wrong
 * types, unknown states, bad ids, odd but valid RFC 3339 timestamps, connections reset. When a script runs
 * out, the server turns sane (poll: the item; heartbeat: 409; the rest: valid), so every case ends.
 *
 * Invariants, per case:
 *   - no crash: run() resolves with an exit code, no `worker_crashed`, no unhandled rejection, no
 *     exception; every call that failed rejected with an ApiError (nothing else escapes the client);
 *   - a job is spawned only after the server sent a fully valid accepted lease for that item (a 2xx with a
 *     body, well-formed work_heartbeat, lease_extended true, state active), and such a first reply starts it;
 *   - every precondition sent is NO_HEARTBEAT or, byte for byte, a last_heartbeat the server handed out;
 *   - every failed call the Worker saw is in a log line with a readable message and its request id;
 *   - the token is in no log line.
 *
 * Cases run five at a time (each with its own server); FUZZ_SEED replays a run, FUZZ_RUNS sets the count.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkApi } from '../../src/api/client.js';
import { ApiError } from '../../src/api/errors.js';
import { NO_HEARTBEAT } from '../../src/api/types.js';
import { monotonicClock } from '../../src/lease/clock.js';
import { createLogger } from '../../src/observe/logger.js';
import { noEvents } from '../../src/observe/snapshot.js';
import { Worker } from '../../src/worker/loop.js';
import { wireItem } from '../support/wire.js';
import { suiteEnv } from '../support/processes.js';

const TOKEN = 'pt-fuzz-worker-SECRET-5e4d3c2b1a';
const ENV = 'env_fuzz';
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);
const RUNS = Number(process.env.FUZZ_RUNS ?? 60);
const PARALLEL = 5;

type Endpoint = 'poll' | 'ack' | 'heartbeat' | 'update_metadata' | 'stop';

type Body =
  | { t: 'item'; state: string; broken: [string, unknown] | null }
  | { t: 'null' }
  | { t: 'beat'; last: string; extended: boolean; state: string; ttl: number; broken: [string, unknown] | null }
  | { t: 'text'; text: string }
  | { t: 'json'; value: unknown }
  | { t: 'huge' }
  | { t: 'badutf8' }
  | { t: 'envelope'; type: string; message: string };

interface Reply {
  status: number;
  body: Body;
  conn: 'normal' | 'reset' | 'truncate';
  retryAfter: string | null;
}

type Script = Record<Endpoint, Reply[]>;

interface Case {
  workId: string;
  script: Script;
}

// ---- generators -------------------------------------------------------------------------------

const two = (n: number): string => String(n).padStart(2, '0');
/** Odd but valid RFC 3339: t/T, 0-9 fraction digits, z/Z or any offset, leap seconds. */
const rfc3339 = fc.oneof(
  fc
    .record({
      date: fc.date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('2999-12-31T23:59:59Z'), noInvalidDate: true }),
      sep: fc.constantFrom('T', 't'),
      frac: fc.option(fc.string({ unit: fc.constantFrom(...'0123456789'.split('')), minLength: 1, maxLength: 9 }), { nil: undefined }),
      offset: fc.oneof(
        fc.constantFrom('Z', 'z', '+00:00', '-00:00'),
        fc.tuple(fc.constantFrom('+', '-'), fc.integer({ min: 0, max: 23 }), fc.integer({ min: 0, max: 59 })).map(([s, h, m]) => `${s}${two(h)}:${two(m)}`),
      ),
    })
    .map(({ date, sep, frac, offset }) => {
      const iso = date.toISOString();
      return `${iso.slice(0, 10)}${sep}${iso.slice(11, 19)}${frac === undefined ? '' : `.${frac}`}${offset}`;
    }),
  fc.constantFrom('1990-12-31T23:59:60Z', '1990-12-31T15:59:60-08:00', '1937-01-01T12:00:27.87+00:20', '2026-07-01t08:15:06.123456789z', '2026-11-28T10:00:00.000001Z'),
);
const badTimestamp = fc.constantFrom('', 'NO_HEARTBEAT', '2026-07-01T08:15:06', '2026-07-01 08:15:06Z', '2026-02-30T00:00:00Z', '2026-07-01T08:15:06.Z', '2026-07-01T24:00:00Z', 'yesterday', 1751357706, null);
const state = fc.constantFrom('queued', 'starting', 'active', 'stopping', 'stopped');
const badState = fc.constantFrom('running', '', 'ACTIVE', 'Active', null, 3, ['active']);
const idChars = fc.constantFrom(...'ABCXYZabcxyz0189_-'.split(''));
const workIdArb = fc.string({ unit: idChars, minLength: 1, maxLength: 20 }).map((s) => `work_${s}`);

const BROKEN_ITEM: [string, unknown][] = [
  ['type', 'work_heartbeat'],
  ['id', 'wrk_1'],
  ['id', 'work_a/b'],
  ['id', 'work_../x'],
  ['id', 'work_%2F'],
  ['id', 'work_ä'],
  ['id', 5],
  ['environment_id', 'env_other'],
  ['environment_id', 'env_'],
  ['data', null],
  ['data', { type: 's', id: 'a\nb' }],
  ['data', { type: 'session' }],
  ['state', 'running'],
  ['state', null],
  ['created_at', 1],
  ['metadata', { a: 1 }],
  ['metadata', []],
];
const BROKEN_BEAT: [string, unknown][] = [
  ['type', 'work'],
  ['lease_extended', 'true'],
  ['lease_extended', 1],
  ['lease_extended', null],
  ['ttl_seconds', 0],
  ['ttl_seconds', -1],
  ['ttl_seconds', 1.5],
  ['ttl_seconds', '60'],
  ['ttl_seconds', 1e300],
  ['ttl_seconds', null],
];

const statusArb = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(200, 200, 200, 201, 202, 203) },
  { weight: 4, arbitrary: fc.constantFrom(408, 409, 412, 429, 500, 502, 503, 504) },
  { weight: 1, arbitrary: fc.constantFrom(204, 301, 302, 304, 400, 401, 403, 404, 405, 418, 422) },
  { weight: 1, arbitrary: fc.integer({ min: 200, max: 599 }) },
);

const junkBody: fc.Arbitrary<Body> = fc.oneof(
  fc.constantFrom<Body>({ t: 'text', text: '' }, { t: 'text', text: 'not json' }, { t: 'text', text: '{"type":' }, { t: 'text', text: '<html>502</html>' }, { t: 'huge' }, { t: 'badutf8' }),
  fc.jsonValue({ maxDepth: 2 }).map((value): Body => ({ t: 'json', value })),
  fc.string({ maxLength: 60 }).map((s): Body => ({ t: 'envelope', type: s, message: `${s} ${TOKEN}` })),
);

const itemBody = (allowNull: boolean): fc.Arbitrary<Body> =>
  fc.oneof(
    { weight: 5, arbitrary: state.map((s): Body => ({ t: 'item', state: s, broken: null })) },
    { weight: 3, arbitrary: fc.tuple(state, fc.constantFrom(...BROKEN_ITEM)).map(([s, b]): Body => ({ t: 'item', state: s, broken: b })) },
    { weight: allowNull ? 2 : 0, arbitrary: fc.constant<Body>({ t: 'null' }) },
    { weight: 2, arbitrary: junkBody },
  );

const beatBody: fc.Arbitrary<Body> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .record({ last: rfc3339, extended: fc.boolean(), state: fc.oneof({ weight: 4, arbitrary: fc.constant('active') }, { weight: 2, arbitrary: state }), ttl: fc.integer({ min: 2, max: 600 }) })
      .map((b): Body => ({ t: 'beat', ...b, broken: null })),
  },
  {
    weight: 4,
    arbitrary: fc
      .record({ last: rfc3339, extended: fc.boolean(), state, ttl: fc.integer({ min: 2, max: 600 }), broken: fc.oneof(fc.constantFrom(...BROKEN_BEAT), badTimestamp.map((v): [string, unknown] => ['last_heartbeat', v]), badState.map((v): [string, unknown] => ['state', v])) })
      .map((b): Body => ({ t: 'beat', ...b })),
  },
  { weight: 2, arbitrary: junkBody },
);

const replyArb = (body: fc.Arbitrary<Body>): fc.Arbitrary<Reply> =>
  fc.record({
    status: statusArb,
    body,
    conn: fc.oneof({ weight: 10, arbitrary: fc.constant<Reply['conn']>('normal') }, { weight: 1, arbitrary: fc.constantFrom<Reply['conn']>('reset', 'truncate') }),
    retryAfter: fc.option(fc.constantFrom('0', '1', 'soon'), { nil: null }),
  });

const caseArb: fc.Arbitrary<Case> = fc.record({
  workId: workIdArb,
  script: fc.record({
    poll: fc.array(replyArb(itemBody(true)), { minLength: 1, maxLength: 2 }),
    ack: fc.array(replyArb(itemBody(false)), { maxLength: 2 }),
    heartbeat: fc.array(replyArb(beatBody), { minLength: 1, maxLength: 5 }),
    update_metadata: fc.array(replyArb(itemBody(false)), { maxLength: 2 }),
    stop: fc.array(replyArb(itemBody(false)), { maxLength: 2 }),
  }),
});

// ---- the fake control plane --------------------------------------------------------------------

interface Sent {
  endpoint: Endpoint;
  requestId: string;
  /** A 2xx with a fully valid work_heartbeat body that grants the lease: lease_extended true, state active. */
  lease: boolean;
  /** Its last_heartbeat, when it was a fully valid work_heartbeat with lease_extended true. */
  lastHeartbeat: string | null;
  /** Precondition the request carried (heartbeats). */
  expected: string | null;
  at: number;
}

function itemJson(id: string, st: string, broken: [string, unknown] | null): string {
  const item = wireItem({ id, environment_id: ENV, data: { type: 'session', id: 'sess_fuzz' }, state: st });
  if (broken) item[broken[0]] = broken[1];
  return JSON.stringify(item);
}

const SANE: Record<Endpoint, (id: string) => Reply> = {
  // Once the script is spent, poll hands out the item (valid): the --once worker takes it and ends.
  poll: () => ({ status: 200, body: { t: 'item', state: 'queued', broken: null }, conn: 'normal', retryAfter: null }),
  ack: () => ({ status: 200, body: { t: 'item', state: 'starting', broken: null }, conn: 'normal', retryAfter: null }),
  heartbeat: () => ({ status: 409, body: { t: 'envelope', type: 'invalid_request_error', message: 'work item is stopped' }, conn: 'normal', retryAfter: null }),
  update_metadata: () => ({ status: 200, body: { t: 'item', state: 'active', broken: null }, conn: 'normal', retryAfter: null }),
  stop: () => ({ status: 200, body: { t: 'item', state: 'stopped', broken: null }, conn: 'normal', retryAfter: null }),
};

class FakePlane {
  readonly sent: Sent[] = [];
  private readonly cursor: Record<Endpoint, number> = { poll: 0, ack: 0, heartbeat: 0, update_metadata: 0, stop: 0 };
  private readonly sockets = new Set<Socket>();
  private n = 0;
  private server!: http.Server;
  origin = '';

  constructor(private readonly c: Case) {}

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => this.answer(req, res));
    });
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.origin = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private answer(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const rest = url.pathname.split(`/environments/${ENV}/work/`)[1] ?? '';
    const [a, b] = rest.split('/');
    const endpoint: Endpoint | null =
      a === 'poll' ? 'poll' : b === 'ack' ? 'ack' : b === 'heartbeat' ? 'heartbeat' : b === 'stop' ? 'stop' : b === undefined && req.method === 'POST' ? 'update_metadata' : null;
    if (endpoint === null) {
      res.writeHead(404).end();
      return;
    }
    const id = endpoint === 'poll' ? this.c.workId : (a ?? '');
    const list = this.c.script[endpoint];
    const i = this.cursor[endpoint]++;
    const r = i < list.length ? list[i]! : SANE[endpoint](id);
    const requestId = `srv-${endpoint}-${++this.n}`;
    let text: string | Buffer;
    let lease = false;
    let lastHeartbeat: string | null = null;
    const b2 = r.body;
    switch (b2.t) {
      case 'item':
        text = itemJson(this.c.workId, b2.state, b2.broken);
        break;
      case 'null':
        text = 'null';
        break;
      case 'beat': {
        const beat: Record<string, unknown> = { type: 'work_heartbeat', last_heartbeat: b2.last, lease_extended: b2.extended, state: b2.state, ttl_seconds: b2.ttl };
        if (b2.broken) beat[b2.broken[0]] = b2.broken[1];
        text = JSON.stringify(beat);
        // Any 2xx is a success; 204 and 205 carry no body (Node drops it), so they cannot grant anything.
        const ok = r.status >= 200 && r.status <= 299 && r.status !== 204 && r.status !== 205 && r.conn === 'normal' && b2.broken === null;
        if (ok && b2.extended) lastHeartbeat = b2.last;
        lease = ok && b2.extended && b2.state === 'active';
        break;
      }
      case 'text':
        text = b2.text;
        break;
      case 'json':
        text = JSON.stringify(b2.value) ?? 'null';
        break;
      case 'huge':
        text = JSON.stringify({ type: 'work_heartbeat', pad: 'x'.repeat(1_100_000) });
        break;
      case 'badutf8':
        text = Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]);
        break;
      case 'envelope':
        text = JSON.stringify({ type: 'error', request_id: requestId, error: { type: b2.type, message: b2.message } });
        break;
    }
    this.sent.push({ endpoint, requestId, lease, lastHeartbeat, expected: endpoint === 'heartbeat' ? url.searchParams.get('expected_last_heartbeat') : null, at: Date.now() });
    if (r.conn === 'reset') {
      req.socket.destroy();
      return;
    }
    const body = Buffer.isBuffer(text) ? text : Buffer.from(text, 'utf8');
    const headers: Record<string, string> = { 'content-type': 'application/json', 'x-request-id': requestId };
    if (r.retryAfter !== null) headers['retry-after'] = r.retryAfter;
    if (r.conn === 'truncate') {
      res.writeHead(r.status, { ...headers, 'content-length': String(body.length + 10) });
      res.write(body);
      res.socket?.end();
      return;
    }
    res.writeHead(r.status, { ...headers, 'content-length': String(body.length) });
    res.end(body);
  }
}

// ---- one case ---------------------------------------------------------------------------------

interface LogEntry {
  level: number;
  msg: string;
  time: string;
  work_id?: string;
  [k: string]: unknown;
}

const unexpected: unknown[] = [];
const onUnhandled = (err: unknown): void => {
  unexpected.push(err);
};
let scratch = '';

beforeAll(() => {
  process.on('unhandledRejection', onUnhandled);
  scratch = mkdtempSync(join(tmpdir(), 'lk-fuzz-worker-'));
});
afterAll(() => {
  process.off('unhandledRejection', onUnhandled);
  rmSync(scratch, { recursive: true, force: true });
});

let caseNo = 0;

/** Every string inside a log entry, at any depth. */
function strings(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v)) return v.flatMap(strings);
  if (v !== null && typeof v === 'object') return Object.values(v).flatMap(strings);
  return [];
}

const seen = { cases: 0, jobs: 0, failures: 0, leases: 0, budgetShutdowns: 0 };

async function runCase(c: Case): Promise<string[]> {
  seen.cases++;
  const problems: string[] = [];
  const plane = new FakePlane(c);
  await plane.start();
  const spawns = join(scratch, `spawns-${++caseNo}`);
  const lines: string[] = [];
  const log = createLogger({
    level: 'debug',
    format: 'json',
    secrets: [TOKEN],
    base: { worker_id: 'fuzz-worker' },
    destination: new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(...chunk.toString().split('\n').filter((l) => l !== ''));
        done();
      },
    }),
  });
  const real = new WorkApi({ apiUrl: plane.origin, token: TOKEN, environmentId: ENV });
  const failures: unknown[] = [];
  const api = new Proxy(real, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      const fn = (v as (...a: unknown[]) => unknown).bind(target);
      if (!['poll', 'ack', 'heartbeat', 'updateMetadata', 'stop'].includes(String(prop))) return fn;
      return async (...args: unknown[]) => {
        try {
          return await fn(...args);
        } catch (err) {
          failures.push(err);
          throw err;
        }
      };
    },
  });
  const worker = new Worker({
    api,
    settings: { desiredTtlSeconds: 2, heartbeatFraction: 0.33, stopSignal: 'SIGTERM', graceMs: 300, fenceMarginMs: null, onShutdown: 'stop', workerId: 'fuzz-worker' },
    workerId: 'fuzz-worker',
    command: ['/bin/sh', '-c', 'echo "$LEASE_KEEPER_WORK_ID" >> "$FUZZ_SPAWNS"; sleep 0.2'],
    tokens: [TOKEN],
    concurrency: 1,
    once: true,
    baseEnv: { PATH: process.env.PATH, FUZZ_SPAWNS: spawns, ...suiteEnv() },
    log,
    clock: monotonicClock,
    events: noEvents,
    blockMs: 20,
    random: () => 0.5,
  });
  const ran = worker.run();
  // Most cases end by themselves; one that keeps finding no work is asked to shut down after 3 s.
  const budget = setTimeout(() => {
    seen.budgetShutdowns++;
    worker.shutdown();
  }, 3000);
  let limit: NodeJS.Timeout | undefined;
  const result = await Promise.race([ran, new Promise<null>((r) => (limit = setTimeout(() => r(null), 15_000)))]);
  clearTimeout(budget);
  clearTimeout(limit);
  await real.close();
  await plane.close();

  const entries = lines.map((l) => JSON.parse(l) as LogEntry);
  if (result === null) problems.push('the worker did not end within 15 s (3 s budget, then shutdown)');
  else if (!Number.isInteger(result.exitCode)) problems.push(`exit code ${String(result.exitCode)}`);
  if (entries.some((e) => e.msg === 'worker_crashed')) problems.push('worker_crashed');
  if (lines.some((l) => l.includes(TOKEN))) problems.push('the token is in a log line');
  for (const f of failures) if (!(f instanceof ApiError)) problems.push(`a call rejected with a non-ApiError: ${String(f)}`);

  // A job only after a fully valid accepted lease, and such a first reply starts it.
  let spawned: string[] = [];
  try {
    spawned = readFileSync(spawns, 'utf8').split('\n').filter(Boolean);
  } catch {
    /* none */
  }
  const started = entries.filter((e) => e.msg === 'job_started');
  if (spawned.length !== started.length) problems.push(`${spawned.length} jobs ran but ${started.length} job_started lines`);
  const leases = plane.sent.filter((s) => s.endpoint === 'heartbeat' && s.lease);
  seen.jobs += started.length;
  seen.leases += leases.length;
  seen.failures += failures.length;
  for (const e of started) {
    const t = Date.parse(e.time);
    if (!leases.some((s) => s.at <= t)) problems.push(`job started at ${e.time} without any valid accepted lease sent before it`);
  }
  const beats = plane.sent.filter((s) => s.endpoint === 'heartbeat');
  if (beats[0]?.lease && result !== null && started.length === 0) {
    problems.push('the first heartbeat reply was a valid active lease, yet the job never started');
  }
  // Preconditions: NO_HEARTBEAT or a last_heartbeat handed out before, byte for byte.
  const handedOut = new Set<string>();
  for (const s of beats) {
    if (s.expected !== NO_HEARTBEAT && (s.expected === null || !handedOut.has(s.expected))) {
      problems.push(`heartbeat sent expected_last_heartbeat=${JSON.stringify(s.expected)}, which the server never handed out`);
    }
    if (s.lastHeartbeat !== null) handedOut.add(s.lastHeartbeat);
  }
  // Every failure the worker saw is logged with its message and request id (cancellations excepted).
  for (const f of failures) {
    if (!(f instanceof ApiError) || /cancelled by the caller/.test(f.message)) continue;
    const rid = f.requestId ?? '';
    const logged = entries.some((e) => {
      const texts = strings(e);
      return texts.some((t) => t.includes(rid)) && (e.msg.startsWith('ack_conflict') || texts.some((t) => t.includes(f.message)));
    });
    if (!logged) problems.push(`failure not logged with its message and request id: ${f.message}`);
  }
  if (problems.length > 0) problems.push(`log:\n${lines.slice(-25).join('\n')}`);
  return problems;
}

describe('Worker against a control plane that answers anything (fuzz)', () => {
  it(`never crashes, never runs a job without a valid lease, always logs the error (seed ${SEED}, FUZZ_SEED to replay)`, async () => {
    const cases = fc.sample(caseArb, { seed: SEED, numRuns: RUNS });
    const failed: string[] = [];
    let next = 0;
    const lane = async (): Promise<void> => {
      for (let i = next++; i < cases.length; i = next++) {
        const p = await runCase(cases[i]!);
        if (p.length > 0) failed.push(`case ${i} (FUZZ_SEED=${SEED}): ${JSON.stringify(cases[i])}\n${p.join('\n')}`);
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, lane));
    expect(unexpected).toEqual([]);
    expect(failed).toEqual([]);
    // Not vacuous: jobs ran, leases were refused and failures seen.
    expect(seen.jobs).toBeGreaterThan(0);
    expect(seen.leases).toBeGreaterThan(0);
    expect(seen.failures).toBeGreaterThan(seen.cases);
  }, 120_000);
});
