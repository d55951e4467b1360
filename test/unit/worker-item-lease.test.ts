/**
 * ItemLease (src/worker/item-lease.ts), the driver that carries out the lease machine's decisions, with a
 * fake control plane, fake jobs and vitest's fake timers (Date and setTimeout; the lease clock reads
 * Date.now()). What is pinned here is the driver's own I/O: the key each heartbeat attempt carries, how
 * many timers it keeps armed, and when it reports an item whose job left members behind.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LeaseLostError, TransientError } from '../../src/api/errors.js';
import { NO_HEARTBEAT, type WorkItem } from '../../src/api/types.js';
import { noEvents } from '../../src/observe/snapshot.js';
import { ItemLease, type ItemResult } from '../../src/worker/item-lease.js';
import { FakeApi, fakeJobs, settings, silentLog } from '../support/fake-worker.js';
import { wireItem } from '../support/wire.js';

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
});
afterEach(() => {
  vi.useRealTimers();
});

/** Lets promise callbacks run (no time passes). */
const settle = () => vi.advanceTimersByTimeAsync(0);

function lease(api: FakeApi, over: Partial<ReturnType<typeof settings>> = {}) {
  const jobs = fakeJobs();
  const item = wireItem({ id: 'work_t1', state: 'starting' }) as unknown as WorkItem;
  const l = new ItemLease(item, {
    api: api.asApi(),
    settings: settings(over),
    command: ['/bin/true'],
    tokens: ['pt-test-token-0123456789'],
    baseEnv: {},
    log: silentLog(),
    clock: { now: () => Date.now() },
    events: noEvents,
    random: () => 0.5,
    startJob: jobs.start,
  });
  let result: ItemResult | null = null;
  void l.done.then((r) => (result = r));
  return { l, jobs, result: () => result };
}

/** Advances fake time until the API has seen `n` heartbeats (bounded: a lease that stops beating fails here). */
async function untilHeartbeats(api: FakeApi, n: number, check: () => void = () => {}): Promise<void> {
  for (let i = 0; api.heartbeats.length < n; i++) {
    if (i > 2000) throw new Error(`only ${api.heartbeats.length} heartbeats, expected ${n}`);
    await vi.advanceTimersByTimeAsync(50);
    check();
  }
}

describe('ItemLease: Idempotency-Key on every attempt', () => {
  it('every retry of one precondition carries the key of its first attempt; a new precondition gets a new key', async () => {
    const api = new FakeApi();
    api.auto.heartbeat = false;
    const { l, jobs } = lease(api);
    void l.start();
    await settle();
    // Outcomes of successive attempts: fail (transient), hang (cut off by the machine), accept.
    const script = ['fail', 'accept', 'hang', 'accept', 'fail', 'fail', 'accept', 'fail', 'accept'] as const;
    for (const [i, outcome] of script.entries()) {
      await untilHeartbeats(api, i + 1);
      const call = api.heartbeats[i]!;
      if (outcome === 'fail') call.answer.reject(new TransientError('HTTP 503 (injected)', { status: 503 }));
      if (outcome === 'accept') call.answer.resolve(api.accepted());
      await settle();
    }
    await untilHeartbeats(api, script.length + 1);
    expect(jobs.jobs).toHaveLength(1); // the lease held throughout: one job, still running
    expect(jobs.jobs[0]!.signals).toEqual([]);

    const calls = api.heartbeats.map((h) => ({ expected: h.expected, key: h.key }));
    expect(calls[0]!.expected).toBe(NO_HEARTBEAT);
    const byPrecondition = new Map<string, Set<string>>();
    for (const c of calls) byPrecondition.set(c.expected, (byPrecondition.get(c.expected) ?? new Set()).add(c.key));
    // Five preconditions (NO_HEARTBEAT and four accepted beats), each with exactly one key, all different.
    expect([...byPrecondition.values()].map((keys) => keys.size)).toEqual([1, 1, 1, 1, 1]);
    expect(new Set(calls.map((c) => c.key)).size).toBe(5);
    // The retries really happened: 2 + 2 + 3 + 2 attempts, and the fifth precondition's first is in flight.
    expect([...byPrecondition.keys()].map((p) => calls.filter((c) => c.expected === p).length)).toEqual([2, 2, 3, 2, 1]);
    l.shutdownNow();
  });
});

describe('ItemLease: one armed timer per item', () => {
  it('exactly one timer is armed at every step of a long lease with retries, and none once it is done', async () => {
    const api = new FakeApi();
    api.auto.heartbeat = false;
    const { l, jobs, result } = lease(api);
    void l.start();
    await settle();
    const one = () => expect(vi.getTimerCount()).toBe(1);
    one(); // the first attempt's cutoff
    for (let i = 0; i < 60; i++) {
      await untilHeartbeats(api, i + 1, one);
      const call = api.heartbeats[i]!;
      // Every fourth attempt fails: a retry is scheduled while the reply's wake time replaces the cutoff's.
      if (i % 4 === 3) call.answer.reject(new TransientError('HTTP 502', { status: 502 }));
      else call.answer.resolve(api.accepted());
      await settle();
      one();
    }
    // The job ends (group and leader at once): the report runs on no timer of ours, then nothing is armed.
    api.auto.heartbeat = true;
    jobs.jobs[0]!.finish(0);
    await vi.advanceTimersByTimeAsync(200);
    expect(result()).toMatchObject({ outcome: 'completed', exitCode: 0 });
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a lost lease kills the job and leaves no timer behind', async () => {
    const api = new FakeApi();
    api.auto.heartbeat = false;
    const { l, jobs, result } = lease(api);
    void l.start();
    await untilHeartbeats(api, 1);
    api.heartbeats[0]!.answer.resolve(api.accepted());
    await untilHeartbeats(api, 2, () => expect(vi.getTimerCount()).toBe(1));
    api.heartbeats[1]!.answer.reject(new LeaseLostError('HTTP 412', { status: 412 }));
    await vi.advanceTimersByTimeAsync(10_000);
    expect(jobs.jobs[0]!.signals.length).toBeGreaterThan(0);
    expect(result()).toMatchObject({ outcome: 'lease_lost' });
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe('ItemLease: the job is the whole group', () => {
  it('a leader that exits 0 while a member lives on: heartbeats go on, the member gets the stop signal, the item is reported only once the group is empty', async () => {
    const api = new FakeApi();
    const { l, jobs, result } = lease(api);
    void l.start();
    await vi.advanceTimersByTimeAsync(100);
    const job = jobs.jobs[0]!;
    job.leaderExits(0);
    const beatsBefore = api.heartbeats.length;
    await vi.advanceTimersByTimeAsync(30_000); // past several heartbeat intervals, within the grace the keeper gave it
    expect(job.signals).toEqual(['stop:SIGTERM']); // the rest of its group was asked to stop
    expect(api.heartbeats.length).toBeGreaterThan(beatsBefore); // still holding the lease for the member
    expect(api.metadata).toEqual([]);
    expect(api.stops).toEqual([]);
    expect(result()).toBeNull();
    job.groupEmpties();
    await vi.advanceTimersByTimeAsync(100);
    expect(api.stops).toEqual(['work_t1']);
    expect(result()).toMatchObject({ outcome: 'completed', exitCode: 0 });
  });
});

describe('ItemLease: what the containment measured', () => {
  it('cpu_seconds and memory_peak_bytes go into the metadata and the events; an OOM kill makes a leader exit 0 a failure', async () => {
    const api = new FakeApi();
    const jobs = fakeJobs();
    const usages: unknown[] = [];
    const item = wireItem({ id: 'work_oom', state: 'starting' }) as unknown as WorkItem;
    const l = new ItemLease(item, {
      api: api.asApi(),
      settings: settings(),
      command: ['/bin/true'],
      tokens: ['pt-test-token-0123456789'],
      baseEnv: {},
      log: silentLog(),
      clock: { now: () => Date.now() },
      events: { ...noEvents, jobUsage: (u) => usages.push(u) },
      random: () => 0.5,
      // A contained job that reports its cgroup's accounting once empty.
      startJob: (spec) => Object.assign(jobs.start(spec), { accounting: () => ({ cpuSeconds: 1.25, memoryPeakBytes: 4096, oomKilled: true }) }),
    });
    let result: ItemResult | null = null;
    void l.start().then((r) => (result = r));
    await vi.advanceTimersByTimeAsync(100);
    jobs.jobs[0]!.finish(0);
    await vi.advanceTimersByTimeAsync(100);
    expect(api.metadata).toEqual([
      { workId: 'work_oom', metadata: expect.objectContaining({ outcome: 'failed', exit_code: '0', oom_killed: 'true', cpu_seconds: '1.25', memory_peak_bytes: '4096' }) },
    ]);
    expect(usages).toEqual([{ cpuSeconds: 1.25, memoryPeakBytes: 4096, oomKilled: true }]);
    expect(result).toMatchObject({ outcome: 'failed' });
  });
});
