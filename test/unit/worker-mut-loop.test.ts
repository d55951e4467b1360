/**
 * The claim loop (src/worker/loop.ts) on vitest's fake clock against the fake control plane, with fake
 * jobs. Pinned here, as README and spec describe them: what poll and ack send (Worker-ID, the long-poll
 * wait, the call deadlines), `ready` once, the poll's backoff schedule and Retry-After, which refusals end
 * the daemon (77 / 78) and which do not, what an ack failure does to the item, `--once`, the shutdown
 * modes (finish, drain, the one after a finish, the last signal's 128 + N), their log lines with `phase`
 * and `held`, the snapshot, and an internal error ending with 70.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { AuthError, BadRequestError, ConflictError, LeaseLostError, MalformedReplyError, NotFoundError, TransientError } from '../../src/api/errors.js';
import type { Reply, WorkItem } from '../../src/api/types.js';
import type { Containment } from '../../src/job/index.js';
import { CLAIMS_IN_FLIGHT, Worker, type WorkerOptions, type WorkerResult } from '../../src/worker/loop.js';
import { FakeJob, deferred, fakeJobs, settings } from '../support/fake-worker.js';
import { wireItem } from '../support/wire.js';
import { ClaimApi, LEVEL, captureLog, recordEvents } from './worker-mut-harness.js';

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
});
let live: Worker[] = [];
afterEach(async () => {
  for (const w of live) w.shutdownNow('SIGTERM');
  live = [];
  await vi.advanceTimersByTimeAsync(0);
  vi.useRealTimers();
});

const settle = () => vi.advanceTimersByTimeAsync(0);

function start(api: ClaimApi, over: Partial<WorkerOptions> = {}) {
  const jobs = fakeJobs();
  const cap = captureLog();
  const ev = recordEvents();
  let readyCalls = 0;
  const worker = new Worker({
    api: api.asApi(),
    settings: settings({ workerId: 'w-mut' }),
    workerId: 'w-mut',
    command: ['/bin/job'],
    tokens: ['pt-mut-loop-token-0123456789'],
    concurrency: 1,
    once: false,
    baseEnv: {},
    log: cap.log,
    clock: { now: () => Date.now() },
    events: ev.events,
    random: () => 0.5,
    startJob: jobs.start,
    onReady: () => readyCalls++,
    ...over,
  });
  live.push(worker);
  let result: WorkerResult | null = null;
  void worker.run().then((r) => (result = r));
  return { worker, jobs, ...cap, ...ev, result: () => result, readyCalls: () => readyCalls };
}

describe('claim loop: poll', () => {
  it('sends the Worker-ID and the long-poll wait (default 999 ms), with a deadline 15 s past it and the stop signal', async () => {
    const api = new ClaimApi();
    start(api);
    await settle();
    expect(api.pollCalls).toHaveLength(1);
    expect(api.pollCalls[0]!.params).toEqual({ workerId: 'w-mut', blockMs: 999 });
    expect(api.pollCalls[0]!.opts.timeoutMs).toBe(15_999);
    expect(api.pollCalls[0]!.opts.signal).toBeInstanceOf(AbortSignal);
    const api2 = new ClaimApi();
    start(api2, { blockMs: 250 });
    await settle();
    expect(api2.pollCalls[0]!.params).toEqual({ workerId: 'w-mut', blockMs: 250 });
    expect(api2.pollCalls[0]!.opts.timeoutMs).toBe(15_250);
  });

  it('`ready` once, when the first poll is answered (not before, not on a failure), with the containment', async () => {
    const api = new ClaimApi();
    api.auto.poll = false;
    api.pollAnswers = [new TransientError('HTTP 503', { status: 503 })];
    const containment = { kind: 'tag' } as unknown as Containment;
    const w = start(api, { containment });
    await settle();
    expect(w.readyCalls()).toBe(0);
    expect(w.worker.snapshot().ready).toBe(false);
    expect(w.named('ready')).toEqual([]);
    await vi.advanceTimersByTimeAsync(375);
    expect(api.pollCalls).toHaveLength(2);
    api.polls[0]!.answer.resolve({ value: null, requestId: 'r', status: 200 });
    await vi.advanceTimersByTimeAsync(2000);
    expect(w.readyCalls()).toBe(1);
    expect(w.named('ready')).toEqual([expect.objectContaining({ level: LEVEL.info, containment: 'tag' })]);
    expect(w.worker.snapshot()).toMatchObject({ ready: true, containment: 'tag' });
    api.polls[1]!.answer.resolve({ value: null, requestId: 'r', status: 200 });
    await vi.advanceTimersByTimeAsync(2000);
    expect(w.readyCalls()).toBe(1);
    expect(w.named('ready')).toHaveLength(1);
  });

  it('the snapshot names process-group when no containment is given', async () => {
    const api = new ClaimApi();
    api.pollAnswers = [null];
    const w = start(api);
    await settle();
    expect(w.named('ready')[0]).toMatchObject({ containment: 'process-group' });
    expect(w.worker.snapshot()).toMatchObject({ workerId: 'w-mut', containment: 'process-group', draining: false, finishing: false, leases: [], pollFailingSinceMs: null });
  });

  it('the poll events: work, empty, error', async () => {
    const api = new ClaimApi();
    api.pollAnswers = [new TransientError('HTTP 503', { status: 503 }), null];
    api.enqueue('work_p1');
    const w = start(api);
    await vi.advanceTimersByTimeAsync(2000);
    expect(w.seen.filter((e) => e.startsWith('poll:'))).toEqual(['poll:error', 'poll:empty', 'poll:work']);
  });

  it('an empty answer that came back at once: the next poll waits 250 + random x 750 ms; after a long poll (>= 100 ms): at once', async () => {
    const api = new ClaimApi();
    api.auto.poll = false;
    start(api);
    await settle();
    api.polls[0]!.answer.resolve({ value: null, requestId: 'r', status: 200 });
    await vi.advanceTimersByTimeAsync(624);
    expect(api.pollCalls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(api.pollCalls).toHaveLength(2);
    expect(api.pollCalls[1]!.at - api.pollCalls[0]!.at).toBe(625);
    // A long poll that waited 100 ms: the next one goes out at once.
    await vi.advanceTimersByTimeAsync(100);
    api.polls[1]!.answer.resolve({ value: null, requestId: 'r', status: 200 });
    await settle();
    expect(api.pollCalls).toHaveLength(3);
    // One that waited 99 ms pauses again.
    await vi.advanceTimersByTimeAsync(99);
    api.polls[2]!.answer.resolve({ value: null, requestId: 'r', status: 200 });
    await settle();
    expect(api.pollCalls).toHaveLength(3);
    await vi.advanceTimersByTimeAsync(625);
    expect(api.pollCalls).toHaveLength(4);
  });

  it('poll failures back off 500 ms doubling, equal jitter, capped at 30 s; poll_failed says how many and when the next is', async () => {
    const api = new ClaimApi();
    api.pollAnswers = Array.from({ length: 9 }, (_, i) => new TransientError(`HTTP 503 (${i + 1})`, { status: 503 }));
    const w = start(api);
    await vi.advanceTimersByTimeAsync(200_000);
    const gaps = api.pollCalls.slice(1, 10).map((c, i) => c.at - api.pollCalls[i]!.at);
    // random 0.5: 3/4 of 500, 1000, 2000, ... 30 000 (the cap from the 8th failure on).
    expect(gaps).toEqual([375, 750, 1500, 3000, 6000, 12_000, 22_500, 22_500, 22_500]);
    const lines = w.named('poll_failed');
    expect(lines.map((l) => [l.failures, l.retry_in_ms])).toEqual([
      [1, 375],
      [2, 750],
      [3, 1500],
      [4, 3000],
      [5, 6000],
      [6, 12_000],
      [7, 22_500],
      [8, 22_500],
      [9, 22_500],
    ]);
    expect(lines[0]).toMatchObject({ level: LEVEL.warn, err: expect.objectContaining({ message: 'HTTP 503 (1)' }) });
  });

  it('jitter with random 0 and 0.999: half to all of the base delay', async () => {
    for (const [random, first] of [
      [0, 250],
      [0.999, 500],
    ] as const) {
      const api = new ClaimApi();
      api.pollAnswers = [new TransientError('HTTP 503', { status: 503 })];
      const w = start(api, { random: () => random });
      await vi.advanceTimersByTimeAsync(1000);
      expect(w.named('poll_failed')[0]!.retry_in_ms).toBe(first);
    }
  });

  it('Retry-After longer than the backoff is waited; shorter, the backoff wins', async () => {
    const api = new ClaimApi();
    api.pollAnswers = [new TransientError('HTTP 429', { status: 429, retryAfterMs: 4000 }), new TransientError('HTTP 429', { status: 429, retryAfterMs: 10 })];
    const w = start(api);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(w.named('poll_failed').map((l) => l.retry_in_ms)).toEqual([4000, 750]);
    expect(api.pollCalls[1]!.at - api.pollCalls[0]!.at).toBe(4000);
  });

  it('a failure that is no ApiError backs off like a transient one', async () => {
    const api = new ClaimApi();
    api.pollAnswers = [new Error('socket hang up') as never];
    const w = start(api);
    await vi.advanceTimersByTimeAsync(1000);
    expect(w.named('poll_failed')[0]).toMatchObject({ failures: 1, retry_in_ms: 375 });
    expect(w.result()).toBeNull();
  });

  it('while polls fail the snapshot says since when; an answered poll clears it and restarts the backoff', async () => {
    const api = new ClaimApi();
    await vi.advanceTimersByTimeAsync(5000);
    const t0 = Date.now();
    api.pollAnswers = [new TransientError('HTTP 503', { status: 503 }), new TransientError('HTTP 503', { status: 503 }), null, new TransientError('HTTP 503', { status: 503 })];
    const w = start(api);
    await settle();
    expect(w.worker.snapshot().pollFailingSinceMs).toBe(t0);
    await vi.advanceTimersByTimeAsync(375);
    expect(w.worker.snapshot().pollFailingSinceMs).toBe(t0); // the first failure's time, not the latest
    await vi.advanceTimersByTimeAsync(750);
    expect(api.pollCalls).toHaveLength(3);
    expect(w.worker.snapshot().pollFailingSinceMs).toBeNull();
    await vi.advanceTimersByTimeAsync(625);
    expect(api.pollCalls).toHaveLength(4);
    expect(w.worker.snapshot().pollFailingSinceMs).toBe(Date.now());
    expect(w.named('poll_failed').map((l) => l.failures)).toEqual([1, 2, 1]);
  });
});

describe('claim loop: refusals that end the daemon', () => {
  it('401/403 on poll: auth_failed (fatal), exit 77, no retry', async () => {
    const api = new ClaimApi();
    api.pollAnswers = [new AuthError('HTTP 401 (token refused)', { status: 401 })];
    const w = start(api);
    await vi.advanceTimersByTimeAsync(5000);
    expect(w.result()).toEqual({ exitCode: 77, reason: 'fatal', lastItem: null });
    expect(w.named('auth_failed')).toEqual([expect.objectContaining({ level: LEVEL.fatal, operation: 'poll' })]);
    expect(api.pollCalls).toHaveLength(1);
    expect(w.named('poll_failed')).toEqual([]);
    expect(w.seen).toContain('poll:error');
  });

  it('404 or 400 on poll (environment missing / not self_hosted): environment_unusable, exit 78', async () => {
    for (const err of [new NotFoundError('HTTP 404', { status: 404 }), new BadRequestError('HTTP 400', { status: 400 })]) {
      const api = new ClaimApi();
      api.pollAnswers = [err];
      const w = start(api);
      await vi.advanceTimersByTimeAsync(5000);
      expect(w.result(), err.name).toMatchObject({ exitCode: 78, reason: 'fatal' });
      expect(w.named('environment_unusable'), err.name).toEqual([expect.objectContaining({ level: LEVEL.fatal, operation: 'poll' })]);
      expect(api.pollCalls).toHaveLength(1);
    }
  });

  it('other refusals on poll (409, 412, a malformed reply) are retried, not fatal', async () => {
    const api = new ClaimApi();
    api.pollAnswers = [new ConflictError('HTTP 409', { status: 409 }), new LeaseLostError('HTTP 412', { status: 412 }), new MalformedReplyError('not JSON')];
    const w = start(api);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(api.pollCalls.length).toBeGreaterThanOrEqual(4);
    expect(w.named('poll_failed')).toHaveLength(3);
    expect(w.result()).toBeNull();
  });

  it('a fatal refusal while an item is held: the item is drained first, then the daemon exits with the refusal\'s code', async () => {
    const api = new ClaimApi();
    api.enqueue('work_f1');
    const w = start(api, { concurrency: 2 });
    await settle();
    expect(w.jobs.jobs).toHaveLength(1);
    api.pollAnswers = [];
    // The next claim's poll is refused.
    api.auto.poll = false;
    await settle();
    const pending = api.polls.at(-1)!;
    pending.answer.reject(new AuthError('HTTP 403', { status: 403 }));
    await settle();
    expect(w.jobs.jobs[0]!.signals).toEqual(['SIGTERM']); // drained like a shutdown
    expect(w.named('shutdown_requested')[0]).toMatchObject({ phase: 'draining', held: 1 });
    expect(w.result()).toBeNull();
    w.jobs.jobs[0]!.finish(143);
    await vi.advanceTimersByTimeAsync(100);
    expect(w.result()).toMatchObject({ exitCode: 77, reason: 'fatal' });
  });
});

describe('claim loop: ack', () => {
  it('claimed (with the state), then ack with the same Worker-ID, a 10 s deadline and the stop signal', async () => {
    const api = new ClaimApi();
    api.enqueue('work_a1');
    const w = start(api);
    await settle();
    expect(w.named('claimed')).toEqual([expect.objectContaining({ level: LEVEL.info, state: 'queued', work_id: 'work_a1', session_id: 'sess_01' })]);
    expect(api.ackCalls).toHaveLength(1);
    expect(api.ackCalls[0]).toMatchObject({ workId: 'work_a1', params: { workerId: 'w-mut' } });
    expect(api.ackCalls[0]!.opts.timeoutMs).toBe(10_000);
    expect(api.ackCalls[0]!.opts.signal).toBe(api.pollCalls[0]!.opts.signal);
    expect(w.jobs.jobs).toHaveLength(1);
    expect(w.worker.snapshot().leases.map((l) => l.workId)).toEqual(['work_a1']);
  });

  it('a transient ack failure is retried (ack_retry) 3 times, 100 ms to 1 s apart; then ack_failed: left for redelivery, the slot is free again', async () => {
    const api = new ClaimApi();
    vi.spyOn(Math, 'random').mockReturnValue(0);
    api.ackAnswers = Array.from({ length: 4 }, (_, i) => new TransientError(`HTTP 502 (${i + 1})`, { status: 502 }));
    api.enqueue('work_a1', 'work_a2');
    const w = start(api);
    await vi.advanceTimersByTimeAsync(5000);
    vi.restoreAllMocks();
    const a1 = api.ackCalls.filter((c) => c.workId === 'work_a1');
    expect(a1.map((c) => c.at - a1[0]!.at)).toEqual([0, 100, 300, 700]);
    expect(w.named('ack_retry').map((l) => l.attempt)).toEqual([1, 2, 3]);
    expect(w.named('ack_retry')[0]).toMatchObject({ level: LEVEL.warn, work_id: 'work_a1' });
    expect(w.named('ack_failed')).toEqual([expect.objectContaining({ level: LEVEL.warn, work_id: 'work_a1', err: expect.objectContaining({ message: 'HTTP 502 (4)' }) })]);
    // Not leased, no job; the next item is claimed into the slot.
    expect(api.heartbeats.map((h) => h.workId)).toEqual(['work_a2']);
    expect(w.jobs.jobs).toHaveLength(1);
    expect(w.result()).toBeNull();
  });

  it('ack 409: ack_conflict (info, with the request id), the item is dropped, the next one claimed', async () => {
    const api = new ClaimApi();
    api.ackAnswers = [new ConflictError('HTTP 409', { status: 409, requestId: 'req-409' })];
    api.enqueue('work_c1', 'work_c2');
    const w = start(api);
    await vi.advanceTimersByTimeAsync(1000);
    expect(w.named('ack_conflict')).toEqual([expect.objectContaining({ level: LEVEL.info, request_id: 'req-409', work_id: 'work_c1' })]);
    expect(w.named('ack_failed')).toEqual([]);
    expect(api.ackCalls.filter((c) => c.workId === 'work_c1')).toHaveLength(1);
    expect(api.heartbeats.map((h) => h.workId)).toEqual(['work_c2']);
  });

  it('ack 404 (the item vanished) is not fatal: ack_failed, the loop goes on', async () => {
    const api = new ClaimApi();
    api.ackAnswers = [new NotFoundError('HTTP 404', { status: 404 })];
    api.enqueue('work_n1', 'work_n2');
    const w = start(api);
    await vi.advanceTimersByTimeAsync(1000);
    expect(w.named('ack_failed')).toHaveLength(1);
    expect(w.named('environment_unusable')).toEqual([]);
    expect(w.result()).toBeNull();
    expect(w.jobs.jobs).toHaveLength(1);
  });

  it('ack 401: auth_failed for the ack, exit 77; ack 400: exit 78', async () => {
    for (const [err, code, line] of [
      [new AuthError('HTTP 401', { status: 401 }), 77, 'auth_failed'],
      [new BadRequestError('HTTP 400', { status: 400 }), 78, 'environment_unusable'],
    ] as const) {
      const api = new ClaimApi();
      api.ackAnswers = [err];
      api.enqueue('work_x1', 'work_x2');
      const w = start(api);
      await vi.advanceTimersByTimeAsync(1000);
      expect(w.result(), err.name).toMatchObject({ exitCode: code, reason: 'fatal', lastItem: null });
      expect(w.named(line)).toEqual([expect.objectContaining({ level: LEVEL.fatal, operation: 'ack' })]);
      expect(w.named('ack_failed')).toEqual([]);
      expect(w.jobs.jobs).toHaveLength(0);
    }
  });

  it('a shutdown while the ack is out: the worker waits for that claim; an ack that still succeeds is released_before_lease (no heartbeat, no job), exit 0', async () => {
    const api = new ClaimApi();
    const gate = deferred<Reply<WorkItem>>();
    api.ackGate = gate.promise;
    api.enqueue('work_r1');
    const w = start(api);
    await settle();
    expect(api.ackCalls).toHaveLength(1);
    w.worker.shutdown();
    await vi.advanceTimersByTimeAsync(1000);
    expect(w.result()).toBeNull(); // the claim in flight holds its slot
    gate.resolve(api.ackReply('work_r1'));
    await settle();
    expect(w.named('released_before_lease')).toEqual([expect.objectContaining({ level: LEVEL.info, work_id: 'work_r1' })]);
    expect(api.heartbeats).toEqual([]);
    expect(w.jobs.jobs).toHaveLength(0);
    expect(w.result()).toEqual({ exitCode: 0, reason: 'shutdown', lastItem: null });
  });

  it('an ack answered in the same moment as the shutdown: the item is not leased either', async () => {
    const api = new ClaimApi();
    api.auto.ack = false;
    api.enqueue('work_r1');
    const w = start(api);
    await settle();
    api.acks[0]!.answer.resolve(api.ackReply('work_r1'));
    w.worker.shutdown();
    await settle();
    expect(w.named('released_before_lease')).toHaveLength(1);
    expect(api.heartbeats).toEqual([]);
    expect(w.result()).toMatchObject({ exitCode: 0, reason: 'shutdown' });
  });
});

describe('claim loop: --once', () => {
  it('one item only, whatever the concurrency; the exit code is the job\'s; no poll after it', async () => {
    const api = new ClaimApi();
    api.enqueue('work_o1', 'work_o2');
    const w = start(api, { once: true, concurrency: 4 });
    await vi.advanceTimersByTimeAsync(1000);
    expect(w.jobs.jobs).toHaveLength(1);
    expect(api.pollCalls).toHaveLength(1);
    w.jobs.jobs[0]!.finish(7);
    await vi.advanceTimersByTimeAsync(1000);
    expect(w.result()).toMatchObject({ exitCode: 7, reason: 'once', lastItem: expect.objectContaining({ workId: 'work_o1', outcome: 'failed' }) });
    expect(api.pollCalls).toHaveLength(1);
    expect(api.ackCalls.map((a) => a.workId)).toEqual(['work_o1']);
  });

  it('an ack lost to another worker does not end --once: it polls on until it holds an item', async () => {
    const api = new ClaimApi();
    api.ackAnswers = [new ConflictError('HTTP 409', { status: 409 })];
    api.enqueue('work_o1', 'work_o2');
    const w = start(api, { once: true });
    await vi.advanceTimersByTimeAsync(1000);
    expect(w.result()).toBeNull();
    expect(w.jobs.jobs).toHaveLength(1);
    w.jobs.jobs[0]!.finish(0);
    await vi.advanceTimersByTimeAsync(1000);
    expect(w.result()).toMatchObject({ exitCode: 0, reason: 'once', lastItem: expect.objectContaining({ workId: 'work_o2' }) });
  });

  it('--once interrupted by a signal: the drained item\'s outcome is shutdown, exit 0', async () => {
    const api = new ClaimApi();
    api.enqueue('work_o1');
    const w = start(api, { once: true });
    await settle();
    w.worker.shutdown();
    w.jobs.jobs[0]!.finish(143);
    await vi.advanceTimersByTimeAsync(1000);
    expect(w.result()).toMatchObject({ exitCode: 0, reason: 'shutdown', lastItem: expect.objectContaining({ outcome: 'shutdown' }) });
  });

  it('--once with finish: the job ends by itself, the exit code is its own', async () => {
    const api = new ClaimApi();
    api.enqueue('work_o1');
    const w = start(api, { once: true });
    await settle();
    w.worker.finish();
    w.jobs.jobs[0]!.finish(9);
    await vi.advanceTimersByTimeAsync(1000);
    expect(w.result()).toMatchObject({ exitCode: 9, reason: 'shutdown' });
  });

  it('--once with a signal before any item: exit 0', async () => {
    const api = new ClaimApi();
    const w = start(api, { once: true });
    await settle();
    w.worker.shutdown();
    await settle();
    expect(w.result()).toEqual({ exitCode: 0, reason: 'shutdown', lastItem: null });
  });
});

describe('claim loop: shutdown modes', () => {
  it('drain: shutdown_requested (draining, held), no more polls, every job gets the stop signal, exit 0 once all are reported', async () => {
    const api = new ClaimApi();
    api.enqueue('work_d1', 'work_d2');
    const w = start(api, { concurrency: 3 });
    await settle();
    expect(w.jobs.jobs).toHaveLength(2);
    const polls = api.pollCalls.length;
    w.worker.shutdown();
    expect(w.named('shutdown_requested')).toEqual([expect.objectContaining({ level: LEVEL.info, held: 2, phase: 'draining' })]);
    expect(w.named('shutdown_requested')[0]).not.toHaveProperty('from');
    expect(w.worker.snapshot()).toMatchObject({ draining: true, finishing: false });
    await settle();
    expect(w.jobs.jobs.map((j) => j.signals)).toEqual([['SIGTERM'], ['SIGTERM']]);
    api.enqueue('work_d3');
    await vi.advanceTimersByTimeAsync(2000);
    expect(api.pollCalls).toHaveLength(polls);
    w.jobs.jobs[0]!.finish(143);
    await settle();
    expect(w.result()).toBeNull(); // one is still draining
    w.jobs.jobs[1]!.finish(0);
    await settle();
    expect(w.result()).toMatchObject({ exitCode: 0, reason: 'shutdown' });
    expect(api.stops.sort()).toEqual(['work_d1', 'work_d2']);
    // A shutdown while draining changes nothing.
    w.worker.shutdown();
    expect(w.named('shutdown_requested')).toHaveLength(1);
  });

  it('finish: shutdown_requested (finishing), no signal, the jobs end by themselves; a second finish changes nothing', async () => {
    const api = new ClaimApi();
    api.enqueue('work_f1');
    const w = start(api, { concurrency: 2 });
    await settle();
    w.worker.finish();
    w.worker.finish();
    expect(w.named('shutdown_requested')).toEqual([expect.objectContaining({ held: 1, phase: 'finishing' })]);
    expect(w.worker.snapshot()).toMatchObject({ draining: true, finishing: true });
    await vi.advanceTimersByTimeAsync(20_000);
    expect(w.jobs.jobs[0]!.signals).toEqual([]);
    expect(w.named('shutdown_finish')).toHaveLength(1);
    w.jobs.jobs[0]!.finish(0);
    await settle();
    expect(w.result()).toMatchObject({ exitCode: 0, reason: 'shutdown', lastItem: expect.objectContaining({ outcome: 'completed' }) });
  });

  it('a signal after finish turns it into a drain (from finishing); a finish after a drain changes nothing', async () => {
    const api = new ClaimApi();
    api.enqueue('work_f1');
    const w = start(api, { concurrency: 2 });
    await settle();
    w.worker.finish();
    w.worker.shutdown();
    expect(w.named('shutdown_requested').map((l) => [l.phase, l.from])).toEqual([
      ['finishing', undefined],
      ['draining', 'finishing'],
    ]);
    expect(w.worker.snapshot()).toMatchObject({ draining: true, finishing: false });
    await settle();
    expect(w.jobs.jobs[0]!.signals).toEqual(['SIGTERM']);
    w.worker.finish();
    w.worker.shutdown();
    expect(w.named('shutdown_requested')).toHaveLength(2);
    expect(w.worker.snapshot().finishing).toBe(false);
  });

  it('finish with nothing held ends at once, exit 0', async () => {
    const api = new ClaimApi();
    const w = start(api);
    await settle();
    w.worker.finish();
    await settle();
    expect(w.result()).toEqual({ exitCode: 0, reason: 'shutdown', lastItem: null });
  });

  it('the last signal: shutdown_now (warn, held, signal), every job killed, exit 128 + N at once', async () => {
    for (const [signal, code] of [
      ['SIGINT', 130],
      ['SIGTERM', 143],
      ['SIGHUP', 129],
    ] as const) {
      const api = new ClaimApi();
      api.enqueue('work_k1');
      const w = start(api);
      await settle();
      w.worker.shutdownNow(signal);
      expect(w.named('shutdown_now')).toEqual([expect.objectContaining({ level: LEVEL.warn, held: 1, signal })]);
      expect(w.jobs.jobs[0]!.signals).toEqual(['SIGKILL']);
      await settle();
      expect(w.result(), signal).toMatchObject({ exitCode: code, reason: 'shutdown_now' });
      expect(w.worker.snapshot().draining).toBe(true);
      const polls = api.pollCalls.length;
      await vi.advanceTimersByTimeAsync(5000);
      expect(api.pollCalls).toHaveLength(polls);
    }
  });
});

describe('claim loop: an item that ends the daemon', () => {
  it('a heartbeat refused with 401: the item logs its loss, the daemon auth_failed (fatal, work id, 77) and drains the rest', async () => {
    const api = new ClaimApi();
    api.enqueue('work_h1', 'work_h2');
    const w = start(api, { concurrency: 2 });
    await settle();
    expect(w.jobs.jobs).toHaveLength(2);
    api.auto.heartbeat = false;
    await vi.advanceTimersByTimeAsync(9405);
    const beat = api.heartbeats.find((h) => h.workId === 'work_h1' && !h.answer.settled)!;
    beat.answer.reject(new AuthError('HTTP 401', { status: 401 }));
    await settle();
    w.jobs.jobs[0]!.finish(143);
    await settle();
    expect(w.named('auth_failed')).toEqual([expect.objectContaining({ level: LEVEL.fatal, work_id: 'work_h1', exit_code: 77 })]);
    expect(w.jobs.jobs[1]!.signals).toEqual(['SIGTERM']);
    expect(w.result()).toBeNull();
    for (const h of api.heartbeats) if (!h.answer.settled) h.answer.resolve(api.grant());
    api.auto.heartbeat = true;
    w.jobs.jobs[1]!.finish(0);
    await vi.advanceTimersByTimeAsync(100);
    expect(w.result()).toMatchObject({ exitCode: 77, reason: 'fatal', lastItem: expect.objectContaining({ workId: 'work_h1', fatal: 'auth' }) });
  });

  it('a heartbeat refused with 400: environment_unusable, 78', async () => {
    const api = new ClaimApi();
    api.enqueue('work_h1');
    const w = start(api);
    await settle();
    api.auto.heartbeat = false;
    await vi.advanceTimersByTimeAsync(9405);
    api.heartbeats.at(-1)!.answer.reject(new BadRequestError('HTTP 400', { status: 400 }));
    await settle();
    w.jobs.jobs[0]!.finish(143);
    await vi.advanceTimersByTimeAsync(100);
    expect(w.named('environment_unusable')).toEqual([expect.objectContaining({ level: LEVEL.fatal, work_id: 'work_h1', exit_code: 78 })]);
    expect(w.result()).toMatchObject({ exitCode: 78, reason: 'fatal' });
  });
});

describe('claim loop: an internal error', () => {
  it('a claim that throws (a bug): worker_crashed (fatal), exit 70', async () => {
    const api = new ClaimApi();
    // An item without its session: the claim's log line cannot be built.
    api.queue.push(wireItem({ id: 'work_bad', state: 'queued', data: undefined }) as unknown as WorkItem);
    const w = start(api);
    await settle();
    expect(w.named('worker_crashed')).toEqual([expect.objectContaining({ level: LEVEL.fatal, err: expect.objectContaining({ type: 'TypeError' }) })]);
    expect(w.result()).toMatchObject({ exitCode: 70, reason: 'fatal', lastItem: null });
  });

  it('the same in a second claim loop (cold fill): worker_crashed, exit 70', async () => {
    const api = new ClaimApi();
    api.auto.poll = false;
    const w = start(api, { concurrency: 4 });
    await settle();
    api.polls[0]!.answer.resolve({ value: wireItem({ id: 'work_ok', state: 'queued' }) as unknown as WorkItem, requestId: 'r', status: 200 });
    await settle();
    expect(api.pollCalls.length).toBeGreaterThanOrEqual(2);
    api.polls[1]!.answer.resolve({ value: wireItem({ id: 'work_bad', state: 'queued', data: undefined }) as unknown as WorkItem, requestId: 'r', status: 200 });
    await settle();
    expect(w.named('worker_crashed')).toEqual([expect.objectContaining({ level: LEVEL.fatal, err: expect.objectContaining({ type: 'TypeError' }) })]);
    expect(w.result()).toMatchObject({ exitCode: 70, reason: 'fatal' });
  });
});

describe('claim loop: a cold fill on the shared stop signal', () => {
  it('CLAIMS_IN_FLIGHT claims at once, each listening to the stop signal: no MaxListenersExceededWarning on stderr', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    try {
      const api = new ClaimApi();
      api.auto.ack = false;
      api.enqueue(...Array.from({ length: 30 }, (_, i) => `work_${String(i).padStart(2, '0')}`));
      const w = start(api, { concurrency: 20 });
      await settle();
      // Eight polls and eight acks in flight, each with its abort listener on the one stop signal.
      expect(api.acks).toHaveLength(CLAIMS_IN_FLIGHT);
      await new Promise((r) => process.nextTick(r));
      await new Promise((r) => setImmediate(r));
      expect(warnings.filter((m) => m.startsWith('MaxListenersExceededWarning'))).toEqual([]);
      w.worker.shutdownNow('SIGTERM');
    } finally {
      process.off('warning', onWarning);
    }
  });
});

/** Polls sent and not answered yet (the fake keeps an empty queue's polls waiting). */
const pendingPolls = (api: ClaimApi) => api.polls.filter((p) => !p.answer.settled).length;

describe('claim loop: lanes', () => {
  it('without --once the worker goes on after an item: it polls again and does not end', async () => {
    const api = new ClaimApi();
    api.enqueue('work_g1');
    const w = start(api); // concurrency 1: while the item runs no claim is in flight
    await settle();
    expect(pendingPolls(api)).toBe(0);
    w.jobs.jobs[0]!.finish(0);
    await vi.advanceTimersByTimeAsync(100);
    expect(w.result()).toBeNull();
    expect(pendingPolls(api)).toBe(1);
    api.enqueue('work_g2');
    await settle();
    expect(w.jobs.jobs).toHaveLength(2);
  });

  it('after a cold fill the extra claim loops end on the first empty answer: one poll at a time again', async () => {
    const api = new ClaimApi();
    api.longPoll = true;
    api.enqueue('work_l1', 'work_l2', 'work_l3');
    const w = start(api, { concurrency: 6 });
    await vi.advanceTimersByTimeAsync(2000);
    expect(w.jobs.jobs).toHaveLength(3);
    expect(pendingPolls(api)).toBe(1);
    await vi.advanceTimersByTimeAsync(5000);
    expect(pendingPolls(api)).toBe(1);
  });

  it('an extra claim loop whose poll fails ends; the first one goes on alone', async () => {
    const api = new ClaimApi();
    api.auto.poll = false;
    const w = start(api, { concurrency: 4 });
    await settle();
    api.polls[0]!.answer.resolve({ value: wireItem({ id: 'work_e1', state: 'queued' }) as unknown as WorkItem, requestId: 'r', status: 200 });
    await settle();
    // The first loop claimed work_e1 and polls again; the cold fill added more loops, all polling.
    const out = api.polls.filter((p) => !p.answer.settled);
    expect(out.length).toBeGreaterThanOrEqual(2);
    for (const p of out) p.answer.reject(new TransientError('HTTP 503', { status: 503 }));
    await settle();
    // Every loop saw a failure: only the first backs off and polls again.
    await vi.advanceTimersByTimeAsync(60_000);
    expect(pendingPolls(api)).toBe(1);
    expect(w.result()).toBeNull();
  });

  it('a full house: only the first loop waits for a slot, and it claims again once the items are done', async () => {
    const api = new ClaimApi();
    api.enqueue('work_s1', 'work_s2', 'work_s3');
    const w = start(api, { concurrency: 2 });
    await settle();
    expect(w.jobs.jobs).toHaveLength(2);
    w.jobs.jobs[0]!.finish(0);
    await settle();
    expect(w.jobs.jobs).toHaveLength(3);
    w.jobs.jobs[1]!.finish(0);
    w.jobs.jobs[2]!.finish(0);
    await vi.advanceTimersByTimeAsync(3000);
    api.enqueue('work_s4');
    await vi.advanceTimersByTimeAsync(3000);
    expect(w.jobs.jobs.map((j) => j.spec.name)).toEqual(['work_s1', 'work_s2', 'work_s3', 'work_s4']);
    expect(pendingPolls(api)).toBe(1);
  });

  it('a second burst of work gets the cold fill again: CLAIMS_IN_FLIGHT claims at once', async () => {
    const api = new ClaimApi();
    api.longPoll = true;
    api.auto.ack = false;
    api.enqueue(...Array.from({ length: 10 }, (_, i) => `work_a${i}`));
    const w = start(api, { concurrency: 40 });
    await settle();
    expect(api.acks.filter((a) => !a.answer.settled)).toHaveLength(CLAIMS_IN_FLIGHT);
    for (let i = 0; i < 20 && w.jobs.jobs.length < 10; i++) {
      for (const a of api.acks) if (!a.answer.settled) a.answer.resolve(api.ackReply(a.workId));
      await settle();
    }
    expect(w.jobs.jobs).toHaveLength(10);
    await vi.advanceTimersByTimeAsync(3000); // the queue is empty: the extra loops have ended
    expect(pendingPolls(api)).toBe(1);
    api.enqueue(...Array.from({ length: 20 }, (_, i) => `work_b${i}`));
    await vi.advanceTimersByTimeAsync(999); // the waiting long poll comes back empty; the next one finds work
    expect(api.acks.filter((a) => !a.answer.settled)).toHaveLength(CLAIMS_IN_FLIGHT);
    w.worker.shutdownNow('SIGTERM');
  });

  it('a drain whose last claim in flight is in an extra loop ends when that claim does', async () => {
    const api = new ClaimApi();
    api.auto.poll = false;
    const w = start(api, { concurrency: 2 });
    await settle();
    api.polls[0]!.answer.resolve({ value: wireItem({ id: 'work_x1', state: 'queued' }) as unknown as WorkItem, requestId: 'r', status: 200 });
    await settle();
    expect(w.jobs.jobs).toHaveLength(1);
    // The extra loop's claim: its ack is on its way and will still succeed.
    const gate = deferred<Reply<WorkItem>>();
    api.ackGate = gate.promise;
    api.polls[1]!.answer.resolve({ value: wireItem({ id: 'work_x2', state: 'queued' }) as unknown as WorkItem, requestId: 'r', status: 200 });
    await settle();
    expect(api.ackCalls.map((a) => a.workId)).toEqual(['work_x1', 'work_x2']);
    w.worker.shutdown();
    w.jobs.jobs[0]!.finish(143);
    await vi.advanceTimersByTimeAsync(100);
    expect(w.result()).toBeNull(); // work_x2's claim still holds its slot
    gate.resolve(api.ackReply('work_x2'));
    await settle();
    expect(w.named('released_before_lease')).toEqual([expect.objectContaining({ work_id: 'work_x2' })]);
    expect(w.result()).toMatchObject({ exitCode: 0, reason: 'shutdown' });
  });
});

describe('claim loop: more ends', () => {
  it('a shutdown during a long poll is no poll failure: no poll_failed line, no error counted', async () => {
    const api = new ClaimApi();
    const w = start(api);
    await settle();
    expect(pendingPolls(api)).toBe(1);
    w.worker.shutdown();
    await settle();
    expect(w.named('poll_failed')).toEqual([]);
    expect(w.seen.filter((e) => e === 'poll:error')).toEqual([]);
    expect(w.result()).toMatchObject({ exitCode: 0, reason: 'shutdown' });
  });

  it('a poll that rejects with no error at all (a bug below) is retried like a transient failure', async () => {
    const api = new ClaimApi();
    api.pollAnswers = [undefined as unknown as Error];
    const w = start(api);
    await vi.advanceTimersByTimeAsync(1000);
    expect(w.named('poll_failed')).toHaveLength(1);
    expect(w.named('worker_crashed')).toEqual([]);
    expect(w.result()).toBeNull();
    expect(api.pollCalls).toHaveLength(2);
  });

  it('the containment configured starts the jobs when no starter is passed', async () => {
    const api = new ClaimApi();
    const names: string[] = [];
    const containment = { kind: 'tag', start: (spec: { name: string }) => (names.push(spec.name), new FakeJob(spec as never)) } as unknown as Containment;
    api.enqueue('work_t1');
    const w = start(api, { containment, startJob: undefined });
    await settle();
    expect(names).toEqual(['work_t1']);
    expect(w.worker.snapshot().leases).toHaveLength(1);
  });
});
