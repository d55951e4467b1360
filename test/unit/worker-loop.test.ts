/**
 * The claim loop (src/worker/loop.ts) with a fake control plane and fake jobs: the rule it must keep
 * whatever its internals (one poll at a time, or several claims in flight for a fast cold fill):
 * with LEASE_KEEPER_CONCURRENCY=N, the items held plus the claims in flight never exceed N.
 *
 * Accounting, from what the control plane sees: a poll commits a slot until it comes back empty (or
 * fails); an item handed out keeps it through its ack, its lease and its job, until its stop is sent (or
 * its ack is refused). `held` counts acked items not stopped yet.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ConflictError } from '../../src/api/errors.js';
import type { WorkItem } from '../../src/api/types.js';
import type { Reply } from '../../src/api/types.js';
import { monotonicClock } from '../../src/lease/clock.js';
import { noEvents } from '../../src/observe/snapshot.js';
import { CLAIMS_IN_FLIGHT, Worker, type WorkerResult } from '../../src/worker/loop.js';
import { FakeApi, fakeJobs, settings, silentLog } from '../support/fake-worker.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** FakeApi plus the slot accounting above, checked on every call. */
class CountingApi extends FakeApi {
  committed = 0;
  held = 0;
  maxCommitted = 0;
  maxHeld = 0;
  readonly violations: string[] = [];

  constructor(private readonly limit: number) {
    super();
  }

  private note(what: string): void {
    this.maxCommitted = Math.max(this.maxCommitted, this.committed);
    this.maxHeld = Math.max(this.maxHeld, this.held);
    if (this.committed > this.limit || this.held > this.limit) {
      this.violations.push(`${what}: committed ${this.committed}, held ${this.held}, limit ${this.limit}`);
    }
  }

  override poll(p: unknown, opts = {}): Promise<Reply<WorkItem | null>> {
    this.committed++;
    this.note('poll');
    const r = super.poll(p, opts);
    r.then(
      (reply) => {
        if (reply.value === null) this.committed--;
      },
      () => this.committed--,
    );
    return r;
  }

  override ack(workId: string, p: unknown, opts = {}): Promise<Reply<WorkItem>> {
    const r = super.ack(workId, p, opts);
    r.then(
      () => {
        this.held++;
        this.note(`ack ${workId}`);
      },
      () => this.committed--,
    );
    return r;
  }

  override stop(workId: string): Promise<Reply<WorkItem>> {
    this.held--;
    this.committed--;
    return super.stop(workId);
  }
}

let running: { worker: Worker; result: Promise<WorkerResult> } | null = null;
afterEach(async () => {
  if (running) {
    running.worker.shutdownNow('SIGTERM');
    await running.result;
    running = null;
  }
});

function startWorker(api: FakeApi, concurrency: number, once = false) {
  const jobs = fakeJobs();
  const worker = new Worker({
    api: api.asApi(),
    settings: settings(),
    workerId: 'w-test',
    command: ['/bin/true'],
    tokens: ['pt-test-token-0123456789'],
    concurrency,
    once,
    baseEnv: {},
    log: silentLog(),
    clock: monotonicClock,
    events: noEvents,
    random: () => 0.5,
    startJob: jobs.start,
  });
  const result = worker.run();
  running = { worker, result };
  return { worker, jobs, result };
}

async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

describe('claim loop: never more than LEASE_KEEPER_CONCURRENCY items', () => {
  it('N=3, 15 items, jobs ending at random moments: every item run once, held + claims in flight never above 3, and 3 reached', async () => {
    const api = new CountingApi(3);
    const ids = Array.from({ length: 15 }, (_, i) => `work_${String(i).padStart(2, '0')}`);
    api.enqueue(...ids);
    const { jobs } = startWorker(api, 3);
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    while (api.stops.length < ids.length) {
      await sleep(1 + Math.floor(rand() * 4));
      const live = jobs.jobs.filter((j) => j.running);
      if (live.length > 0 && rand() < 0.6) live[Math.floor(rand() * live.length)]!.finish(0);
      if (jobs.jobs.length > 40) throw new Error('more jobs than items');
    }
    expect(api.violations).toEqual([]);
    expect(api.maxHeld).toBe(3);
    expect([...api.stops].sort()).toEqual(ids);
    expect(jobs.jobs).toHaveLength(ids.length);
  });

  it('while the claim for the last free slot is in flight, nothing more is polled; a slot freed, one claim more', async () => {
    const api = new CountingApi(2);
    api.auto.ack = false;
    api.enqueue('work_a', 'work_b', 'work_c', 'work_d');
    const { jobs } = startWorker(api, 2);
    // With both slots free the two claims may start together (claims in flight for a fast cold fill).
    await until(() => api.acks.length >= 1, 'the first ack');
    api.acks[0]!.answer.resolve(api.ackReply(api.acks[0]!.workId));
    await until(() => jobs.jobs.length === 1, 'the first job');
    await until(() => api.acks.length === 2, 'the second ack');
    // The second claim is in flight (its ack unanswered): one item held, one slot committed.
    await sleep(150);
    expect(api.polls).toHaveLength(2);
    api.acks[1]!.answer.resolve(api.ackReply(api.acks[1]!.workId));
    await until(() => jobs.jobs.length === 2, 'the second job');
    await sleep(150);
    expect(api.polls).toHaveLength(2); // full: no third poll
    expect(api.acks).toHaveLength(2);
    jobs.jobs[0]!.finish(0);
    await until(() => api.acks.length === 3, 'a third claim once a slot is free');
    expect(api.polls).toHaveLength(3);
    expect(api.violations).toEqual([]);
  });

  it('an ack refused (409) gives its slot back; N=1 never holds two', async () => {
    const api = new CountingApi(1);
    api.auto.ack = false;
    api.enqueue('work_a', 'work_b');
    const { jobs } = startWorker(api, 1);
    await until(() => api.acks.length === 1, 'the first ack');
    api.acks[0]!.answer.reject(new ConflictError('HTTP 409 (claimed by another worker)', { status: 409 }));
    await until(() => api.acks.length === 2, 'the next claim');
    api.acks[1]!.answer.resolve(api.ackReply(api.acks[1]!.workId));
    await until(() => jobs.jobs.length === 1, 'the job');
    api.enqueue('work_c');
    await sleep(150);
    expect(api.acks).toHaveLength(2);
    expect(api.violations).toEqual([]);
  });

  it('cold fill: with free slots and work arriving, several claims are in flight at once (at most CLAIMS_IN_FLIGHT), never above N', async () => {
    const api = new CountingApi(20);
    api.auto.ack = false;
    const ids = Array.from({ length: 30 }, (_, i) => `work_${String(i).padStart(2, '0')}`);
    api.enqueue(...ids);
    const { jobs } = startWorker(api, 20);
    await until(() => api.acks.length >= CLAIMS_IN_FLIGHT, 'claims in flight');
    await sleep(50);
    // No ack answered yet: exactly CLAIMS_IN_FLIGHT claims wait on their acks, no more polls than that.
    expect(api.acks).toHaveLength(CLAIMS_IN_FLIGHT);
    expect(api.polls).toHaveLength(CLAIMS_IN_FLIGHT);
    for (let answered = 0; jobs.jobs.length < 20; ) {
      while (answered < api.acks.length) {
        const a = api.acks[answered++]!;
        a.answer.resolve(api.ackReply(a.workId));
      }
      await sleep(2);
    }
    await sleep(100);
    expect(jobs.jobs).toHaveLength(20); // the limit, although 10 items are still queued
    expect(api.maxHeld).toBe(20);
    expect(api.violations).toEqual([]);
  });

  it('an empty queue sees one poll at a time', async () => {
    const api = new CountingApi(10);
    startWorker(api, 10);
    await sleep(100);
    expect(api.polls).toHaveLength(1);
    api.enqueue('work_a');
    await until(() => api.acks.length === 1, 'the ack');
    expect(api.violations).toEqual([]);
  });

  it('a claim that ends without an item wakes the loop waiting for a slot: a free slot is never left unpolled', async () => {
    const api = new CountingApi(2);
    api.enqueue('work_a');
    const { jobs } = startWorker(api, 2);
    await until(() => jobs.jobs.length === 1 && api.polls.length === 2, 'work_a running and a second claim polling');
    // The second claim's poll comes back empty: its slot is free again, while work_a's job runs on.
    api.polls[1]!.answer.resolve({ value: null, status: 200, requestId: 'req-empty' });
    await sleep(20);
    // The fake still lists the poll answered by hand as waiting: it swallows the first item enqueued.
    api.enqueue('work_swallowed', 'work_b');
    await until(() => jobs.jobs.length === 2, 'work_b claimed into the freed slot');
    expect(api.acks.map((a) => a.workId)).toEqual(['work_a', 'work_b']);
    expect(api.violations).toEqual([]);
  });
});
