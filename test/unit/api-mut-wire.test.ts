/**
 * The client on the wire, through an injected Dispatcher that records every request and answers as told
 * (no sockets, no timing): the headers each call carries (token, User-Agent, Accept, x-request-id,
 * Worker-ID, Idempotency-Key, content-type), which token goes out after a SIGHUP re-read or a rotation
 * (and which never does), how many requests a refusal costs, the 2xx range, the exact malformed-reply
 * messages, the deadline and the caller's cancel at each point of an exchange, and close().
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Dispatcher } from 'undici';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CallCancel } from '../../src/api/cancel.js';
import { MAX_REPLY_BYTES, WorkApi, type Credential } from '../../src/api/client.js';
import { ApiError, AuthError, MalformedReplyError, NotFoundError, TransientError } from '../../src/api/errors.js';
import { NO_HEARTBEAT } from '../../src/api/types.js';
import { wireBeat, wireItem } from '../support/wire.js';

const TOKEN = 'pt-Wire-secret-token-0001';
const NEW = 'pt-Wire-secret-token-0002';
const ENV = 'env_wire';
const WORK = 'work_w1';
const ORIGIN = 'https://api.qoder.test';
const BASE = `/api/v1/cloud/environments/${ENV}/work`;

type Handler = Dispatcher.DispatchHandler;
type Answer = (handler: Handler, controller: FakeController) => void;

class FakeController {
  aborted = false;
  paused = false;
  reason: Error | null = null;
  abortedWith: unknown[] = [];
  onAbort: ((err: Error) => void) | undefined;
  abort(reason: Error): void {
    this.abortedWith.push(reason);
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.onAbort?.(reason);
  }
  pause(): void {}
  resume(): void {}
}

interface Sent {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string | null;
}

/** A Dispatcher that records each request and answers it with the next of `answers` (then 500s). */
class Recorder {
  sent: Sent[] = [];
  answers: Answer[] = [];
  dispatch(options: Dispatcher.DispatchOptions, handler: Handler): boolean {
    this.sent.push({
      method: options.method,
      path: options.path,
      headers: options.headers as Record<string, string>,
      body: (options.body as string | null | undefined) ?? null,
    });
    const answer = this.answers.shift() ?? reply(500, {});
    const controller = new FakeController();
    queueMicrotask(() => {
      handler.onRequestStart?.(controller as never, {});
      if (!controller.aborted) answer(handler, controller);
    });
    return true;
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

function reply(status: number, body: unknown, headers: Record<string, string> = {}): Answer {
  return (h, c) => {
    const bytes = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    h.onResponseStart?.(c as never, status, { 'content-type': 'application/json', ...headers }, '');
    if (bytes.length > 0) h.onResponseData?.(c as never, bytes);
    h.onResponseEnd?.(c as never, {});
  };
}

/** Headers, then nothing until the controller is aborted (which fails the body). */
function stallAfterHeaders(status = 200): Answer {
  return (h, c) => {
    c.onAbort = (err) => h.onResponseError?.(c as never, err);
    h.onResponseStart?.(c as never, status, { 'content-type': 'application/json' }, '');
    h.onResponseData?.(c as never, Buffer.from('{"type":'));
  };
}

/** No reply at all until the controller is aborted. */
const hang: Answer = (h, c) => {
  c.onAbort = (err) => h.onResponseError?.(c as never, err);
};

function client(rec: Recorder, token: string | Credential = TOKEN, extra: Partial<ConstructorParameters<typeof WorkApi>[0]> = {}): WorkApi {
  return new WorkApi({ apiUrl: ORIGIN, token, environmentId: ENV, dispatcher: rec as unknown as Dispatcher, ...extra });
}

async function failure(p: Promise<unknown>): Promise<ApiError> {
  const err = await p.then(
    () => {
      throw new Error('expected the call to fail');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ApiError);
  for (const t of [TOKEN, NEW]) expect(String(err)).not.toContain(t);
  return err as ApiError;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const item = (over: Record<string, unknown> = {}) => wireItem({ id: WORK, environment_id: ENV, ...over });
const stats = { type: 'work_queue_stats', depth: 0, pending: 0, oldest_queued_at: null, workers_polling: 0 };

/** A credential whose source the test changes: `next` is what a re-read finds. */
function rotating(first: string): Credential & { set(t: string): void; next: string } {
  const held = [first];
  let now = first;
  return {
    next: first,
    current: () => now,
    reread() {
      if (this.next !== now) {
        now = this.next;
        if (!held.includes(now)) held.push(now);
      }
      return now;
    },
    held,
    set(t: string) {
      now = t;
      if (!held.includes(t)) held.push(t);
    },
  };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('what every call sends', () => {
  it('each operation: method, path, the common headers and its own', async () => {
    const rec = new Recorder();
    const api = client(rec);
    rec.answers = [
      reply(200, null),
      reply(200, item({ state: 'starting' })),
      reply(200, wireBeat()),
      reply(200, item()),
      reply(200, item()),
      reply(200, item()),
      reply(200, item({ state: 'stopping' })),
      reply(200, stats),
    ];
    await api.poll({ workerId: 'host-a:1', reclaimOlderThanMs: 2500 });
    await api.ack(WORK, { workerId: 'host-a:1' });
    await api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 30, idempotencyKey: 'idem-1' });
    await api.get(WORK);
    await api.updateMetadata(WORK, { exit_code: '0', old: null });
    await api.stop(WORK);
    await api.stop(WORK, { force: true });
    await api.stats();
    expect(rec.sent.map((s) => [s.method, s.path, s.body])).toEqual([
      ['GET', `${BASE}/poll?block_ms=999&reclaim_older_than_ms=2500`, null],
      ['POST', `${BASE}/${WORK}/ack`, null],
      ['POST', `${BASE}/${WORK}/heartbeat?expected_last_heartbeat=NO_HEARTBEAT&desired_ttl_seconds=30`, null],
      ['GET', `${BASE}/${WORK}`, null],
      ['POST', `${BASE}/${WORK}`, '{"metadata":{"exit_code":"0","old":null}}'],
      ['POST', `${BASE}/${WORK}/stop`, null],
      ['POST', `${BASE}/${WORK}/stop`, '{"force":true}'],
      ['GET', `${BASE}/stats`, null],
    ]);
    for (const s of rec.sent) {
      expect(s.headers.authorization).toBe(`Bearer ${TOKEN}`);
      expect(s.headers['user-agent']).toBe(`qoder-lease-keeper (node ${process.version})`);
      expect(s.headers.accept).toBe('application/json');
      expect(s.headers['x-request-id']).toMatch(UUID);
    }
    const own = rec.sent.map((s) => Object.keys(s.headers).filter((k) => !['authorization', 'user-agent', 'accept', 'x-request-id'].includes(k)));
    expect(own).toEqual([['worker-id'], ['worker-id'], ['idempotency-key'], [], ['content-type'], [], ['content-type'], []]);
    expect(rec.sent[0]?.headers['worker-id']).toBe('host-a:1');
    expect(rec.sent[1]?.headers['worker-id']).toBe('host-a:1');
    expect(rec.sent[2]?.headers['idempotency-key']).toBe('idem-1');
    expect(rec.sent[4]?.headers['content-type']).toBe('application/json');
    expect(rec.sent[6]?.headers['content-type']).toBe('application/json');
  });

  it('a given User-Agent, and a path prefix with trailing slashes', async () => {
    const rec = new Recorder();
    const api = client(rec, TOKEN, { apiUrl: 'https://gw.example/qoder//', userAgent: 'my-keeper/1.0 (fleet a)' });
    rec.answers = [reply(200, stats)];
    await api.stats();
    expect(rec.sent[0]?.path).toBe(`/qoder/api/v1/cloud/environments/${ENV}/work/stats`);
    expect(rec.sent[0]?.headers['user-agent']).toBe('my-keeper/1.0 (fleet a)');
  });

  it('each failure names its call and subject, and carries the operation and work id', async () => {
    const rec = new Recorder();
    const api = client(rec);
    const calls: [string, string, () => Promise<unknown>][] = [
      ['poll', ENV, () => api.poll({ workerId: 'w' })],
      ['ack', WORK, () => api.ack(WORK, { workerId: 'w' })],
      ['heartbeat', WORK, () => api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 5, idempotencyKey: 'k' })],
      ['get', WORK, () => api.get(WORK)],
      ['update_metadata', WORK, () => api.updateMetadata(WORK, {})],
      ['stop', WORK, () => api.stop(WORK)],
      ['stats', ENV, () => api.stats()],
    ];
    for (const [operation, subject, call] of calls) {
      rec.answers = [reply(404, {})];
      const err = await failure(call());
      expect(err).toBeInstanceOf(NotFoundError);
      expect(err.message.startsWith(`${operation} ${subject}: `)).toBe(true);
      expect(err.operation).toBe(operation);
      expect(err.workId).toBe(subject === WORK ? WORK : undefined);
    }
  });
});

describe('which token goes out', () => {
  it('a token the source changed (SIGHUP) goes out with the next call, and is scrubbed', async () => {
    const rec = new Recorder();
    const cred = rotating(TOKEN);
    const api = client(rec, cred);
    rec.answers = [reply(200, stats), reply(404, { error: { type: 'not_found_error', message: `no such token ${NEW} or ${TOKEN}` } })];
    await api.stats();
    cred.set(NEW);
    const err = await failure(api.stats());
    expect(rec.sent.map((s) => s.headers.authorization)).toEqual([`Bearer ${TOKEN}`, `Bearer ${NEW}`]);
    expect(err.message).toContain('no such token [REDACTED] or [REDACTED]');
  });

  it('a token from the source that cannot go into a header is never sent, but is scrubbed', async () => {
    const rec = new Recorder();
    const cred = rotating(TOKEN);
    const api = client(rec, cred);
    const bad = 'pt-bad\u2603token-9876';
    cred.set(bad);
    rec.answers = [reply(400, { error: { type: 'invalid_request_error', message: `saw ${bad}` } })];
    const err = await failure(api.stats());
    expect(rec.sent[0]?.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(err.message).toContain('saw [REDACTED]');
    expect(err.message).not.toContain('pt-bad');
  });

  it.each([
    ['8192 characters', 'n'.repeat(8192), true],
    ['8193 characters', 'n'.repeat(8193), false],
    ['a line break', 'pt-new\ntoken-123', false],
  ])('a rotated token of %s: sent again at once only if it can go into a header', async (_what, rotated, sent) => {
    const rec = new Recorder();
    const cred = rotating(TOKEN);
    const api = client(rec, cred);
    cred.next = rotated;
    rec.answers = [reply(401, {}), reply(200, stats)];
    if (sent) {
      expect((await api.stats()).value.depth).toBe(0);
      expect(rec.sent.map((s) => s.headers.authorization)).toEqual([`Bearer ${TOKEN}`, `Bearer ${rotated}`]);
    } else {
      expect(await failure(api.stats())).toBeInstanceOf(AuthError);
      expect(rec.sent).toHaveLength(1);
    }
  });

  it('a refusal costs at most one retry, even when every re-read finds yet another token', async () => {
    const rec = new Recorder();
    let n = 0;
    const held: string[] = [TOKEN];
    let now = TOKEN;
    const cred: Credential = {
      current: () => now,
      reread: () => {
        now = `pt-rotated-${++n}-token`;
        held.push(now);
        return now;
      },
      held,
    };
    const api = client(rec, cred);
    rec.answers = [reply(403, {}), reply(403, {}), reply(403, {})];
    const err = await failure(api.heartbeat(WORK, { expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 5, idempotencyKey: 'k-same' }));
    expect(err).toBeInstanceOf(AuthError);
    expect(rec.sent).toHaveLength(2);
    expect(rec.sent.map((s) => s.headers['idempotency-key'])).toEqual(['k-same', 'k-same']);
    expect(rec.sent[0]?.path).toBe(rec.sent[1]?.path);
  });
});

describe('replies', () => {
  it('every status from 200 to 299 is a success; 300 is not', async () => {
    const rec = new Recorder();
    const api = client(rec);
    rec.answers = [reply(299, stats), reply(300, stats)];
    expect((await api.stats()).status).toBe(299);
    const err = await failure(api.stats());
    expect(err.status).toBe(300);
    expect(err.kind).toBe('bad_request');
  });

  it('an error reply quotes the server envelope and takes its request id', async () => {
    const rec = new Recorder();
    const api = client(rec);
    rec.answers = [reply(404, { type: 'error', request_id: 'req-srv-9', error: { type: 'not_found_error', message: 'Environment env_wire not found' } })];
    const err = await failure(api.stats());
    expect(err.message).toBe(
      'stats env_wire: environment env_wire not found: HTTP 404 (not_found_error: "Environment env_wire not found") (request id req-srv-9); ' +
        'check QODER_ENVIRONMENT_ID and that the token belongs to the same region and organisation',
    );
    expect(err.requestId).toBe('req-srv-9');
  });

  const unusable = (what: string, rid: string) =>
    `get ${WORK}: the control plane answered HTTP 200 but ${what} (request id ${rid}); the reply was not used, ` +
    'treat the outcome as unknown (check the item state before acting on it)';

  it.each<[string, unknown, string]>([
    ['only white space', ' \r\n\t ', 'the body is empty'],
    ['nothing', '', 'the body is empty'],
    ['not UTF-8', Buffer.from([0x7b, 0xff, 0x7d]), 'the body is not valid UTF-8'],
    ['not JSON', '{"type":', 'the body is not JSON'],
    ['a field wrong', item({ state: 'gone' }), 'its field state is not a known state (expected one of queued, starting, active, stopping, stopped)'],
    ['another environment', item({ environment_id: 'env_other' }), `its field environment_id is env_other, not ${ENV}`],
    ['another item', item({ id: 'work_w2' }), `its field id is work_w2, not the requested ${WORK}`],
  ])('a 2xx with %s is malformed, and says so', async (_what, body, what) => {
    const rec = new Recorder();
    const api = client(rec);
    rec.answers = [reply(200, body, { 'x-request-id': 'rid-7' })];
    const err = await failure(api.get(WORK));
    expect(err).toBeInstanceOf(MalformedReplyError);
    expect(err.message).toBe(unusable(what, 'rid-7'));
    expect(err.status).toBe(200);
  });

  it('a 2xx body over the limit, announced by Content-Length, is malformed without being read', async () => {
    const rec = new Recorder();
    const api = client(rec);
    let controller: FakeController | undefined;
    rec.answers = [
      (h, c) => {
        controller = c;
        h.onResponseStart?.(c as never, 200, { 'content-length': String(MAX_REPLY_BYTES + 1), 'x-request-id': 'rid-big' }, '');
        if (!c.aborted) h.onResponseData?.(c as never, Buffer.from('{}'));
        h.onResponseError?.(c as never, c.reason ?? new Error('socket closed'));
      },
    ];
    const err = await failure(api.get(WORK));
    expect(err.message).toBe(unusable(`the body is larger than ${MAX_REPLY_BYTES} bytes`, 'rid-big'));
    expect(controller?.abortedWith).toHaveLength(1);
    expect(String(controller?.reason)).toBe('Error: reply body over the limit');
  });

  it('a body of exactly the limit, announced, is read', async () => {
    const rec = new Recorder();
    const api = client(rec);
    const text = JSON.stringify(stats);
    const body = text + ' '.repeat(MAX_REPLY_BYTES - text.length);
    rec.answers = [reply(200, body, { 'content-length': String(MAX_REPLY_BYTES) })];
    expect((await api.stats()).value).toEqual(stats);
  });

  it('an informational 1xx before the reply is not the reply', async () => {
    const rec = new Recorder();
    const api = client(rec);
    rec.answers = [
      (h, c) => {
        h.onResponseStart?.(c as never, 103, { 'content-length': String(MAX_REPLY_BYTES * 2), link: '</x>' }, '');
        reply(200, stats)(h, c);
      },
    ];
    const r = await api.stats();
    expect(r.status).toBe(200);
    expect(r.value).toEqual(stats);
  });
});

describe('deadlines and cancels', () => {
  it('a deadline far beyond what a timer can hold still waits for the reply', async () => {
    const rec = new Recorder();
    const api = client(rec);
    rec.answers = [
      (h, c) => {
        const later = setTimeout(() => reply(200, stats)(h, c), 30);
        c.onAbort = (err) => {
          clearTimeout(later);
          h.onResponseError?.(c as never, err);
        };
      },
    ];
    // setTimeout takes at most 2^31-1 ms; a longer delay would fire after 1 ms.
    expect((await api.stats({ timeoutMs: 1e12 })).value).toEqual(stats);
  });

  it('our deadline: the call fails as a timeout, and the exchange was aborted with that reason', async () => {
    vi.useFakeTimers();
    const rec = new Recorder();
    const api = client(rec);
    let controller: FakeController | undefined;
    rec.answers = [
      (h, c) => {
        controller = c;
        hang(h, c);
      },
    ];
    const p = failure(api.get(WORK, { timeoutMs: 40 }));
    await vi.advanceTimersByTimeAsync(39);
    expect(controller?.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    const err = await p;
    expect(err).toBeInstanceOf(TransientError);
    expect(err.message).toMatch(/^get work_w1: no complete reply within 40 ms \(request id [0-9a-f-]{36}\); safe to retry after a short backoff$/);
    expect(controller?.reason).toBeInstanceOf(DOMException);
    expect((controller?.reason as DOMException).name).toBe('TimeoutError');
    expect(controller?.reason?.message).toBe('no reply within 40 ms');
  });

  it('a deadline that passes while the token is re-read ends the call as a timeout: nothing is sent again', async () => {
    vi.useFakeTimers();
    const rec = new Recorder();
    const cred = rotating(TOKEN);
    cred.next = NEW;
    const reread = cred.reread.bind(cred);
    cred.reread = () => {
      vi.advanceTimersByTime(1000); // a slow credential read: the call's deadline fires meanwhile
      return reread();
    };
    const api = client(rec, cred);
    rec.answers = [reply(401, {}), reply(200, stats)];
    const err = await failure(api.stats({ timeoutMs: 500 }));
    expect(err.message).toMatch(/^stats env_wire: no complete reply within 500 ms /);
    expect(err.cause).toBeUndefined();
    expect(rec.sent).toHaveLength(1);
  });

  it("the caller's cancel while the body is read: said as such, with the caller's reason as the cause", async () => {
    const rec = new Recorder();
    const api = client(rec);
    const cancel = new CallCancel();
    rec.answers = [
      (h, c) => {
        stallAfterHeaders()(h, c);
        queueMicrotask(() => cancel.abort(new Error('lease fenced')));
      },
    ];
    const err = await failure(api.get(WORK, { signal: cancel }));
    expect(err).toBeInstanceOf(TransientError);
    expect(err.message).toMatch(/^get work_w1: the call was cancelled by the caller while reading the reply \(request id [0-9a-f-]{36}\)$/);
    expect((err.cause as Error).message).toBe('lease fenced');
  });

  it("the caller's cancel before a reply", async () => {
    const rec = new Recorder();
    const api = client(rec);
    const ac = new AbortController();
    rec.answers = [
      (h, c) => {
        hang(h, c);
        queueMicrotask(() => ac.abort(new Error('shutting down')));
      },
    ];
    const err = await failure(api.poll({ workerId: 'w' }, { signal: ac.signal }));
    expect(err.message).toMatch(/^poll env_wire: the call was cancelled by the caller before a reply \(request id [0-9a-f-]{36}\)$/);
    expect((err.cause as Error).message).toBe('shutting down');
  });
});

describe('close()', () => {
  it('closes the pool the client made, once; later calls fail as a closed client', async () => {
    const server = http.createServer((_req, res) => res.end(JSON.stringify(stats)));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const api = new WorkApi({ apiUrl: origin, token: TOKEN, environmentId: ENV });
      expect((await api.stats()).value).toEqual(stats);
      const first = api.close();
      expect(first).toBeInstanceOf(Promise);
      expect(api.close()).toBe(first);
      await first;
      const err = await failure(api.stats());
      expect(err).toBeInstanceOf(TransientError);
      expect(err.message).toContain(': the HTTP client was already closed before a reply from ');
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
