/**
 * How ItemLease uses the job's output (src/job/output.ts): the stdio is opened before the spawn and
 * given to it, the job's environment gets the output's variables, the output is closed once the job's
 * group is empty (not when the leader exits), and the item is reported without waiting for that close.
 */
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { WorkItem } from '../../src/api/types.js';
import type { JobOutputMode, JobStdio } from '../../src/job/index.js';
import { noEvents } from '../../src/observe/snapshot.js';
import { ItemLease, type ItemResult } from '../../src/worker/item-lease.js';
import { FakeApi, FakeJob, deferred, fakeJobs, settings, silentLog } from '../support/fake-worker.js';
import { wireItem } from '../support/wire.js';

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
});
afterEach(() => {
  vi.useRealTimers();
});

const settle = () => vi.advanceTimersByTimeAsync(0);

/** A JobOutput whose open() the test answers, recording what ItemLease does with each stdio. */
function fakeOutput(mode: JobOutputMode = 'prefix') {
  const log: string[] = [];
  const opening = deferred<JobStdio>();
  const closed = deferred<boolean>();
  const stdio: JobStdio = {
    mode,
    stdio: ['inherit', 'pipe', 'pipe'],
    env: { JOURNAL_STREAM: undefined, EXTRA: 'from-output' },
    started: (pipes) => log.push(`started:${pipes.stdout ? 'pipes' : 'none'}`),
    close: () => {
      log.push('close');
      return closed.promise;
    },
  };
  return {
    log,
    stdio,
    opening,
    closed,
    output: {
      mode,
      open: (workId: string) => {
        log.push(`open:${workId}`);
        return opening.promise;
      },
    },
  };
}

function lease(api: FakeApi, output: ReturnType<typeof fakeOutput>['output']) {
  const jobs = fakeJobs();
  const start = (spec: Parameters<typeof jobs.start>[0]): FakeJob => {
    const job = jobs.start(spec);
    // The pipes a real ProcessGroup would expose when spawned with 'pipe'.
    Object.assign(job, { stdout: new PassThrough(), stderr: new PassThrough() });
    return job;
  };
  const item = wireItem({ id: 'work_o1', state: 'starting' }) as unknown as WorkItem;
  const l = new ItemLease(item, {
    api: api.asApi(),
    settings: settings(),
    command: ['/bin/true'],
    tokens: ['pt-test-token-0123456789'],
    baseEnv: { JOURNAL_STREAM: '8:1', KEEP: 'yes' },
    log: silentLog(),
    clock: { now: () => Date.now() },
    events: noEvents,
    random: () => 0.5,
    startJob: start,
    output,
  });
  let result: ItemResult | null = null;
  void l.done.then((r) => (result = r));
  return { l, jobs, result: () => result };
}

describe('ItemLease and the job output', () => {
  it('opens the stdio before the spawn, spawns with it, closes it only once the group is empty, reports without waiting', async () => {
    const api = new FakeApi();
    const o = fakeOutput();
    const { l, jobs, result } = lease(api, o.output);
    void l.start();
    await settle();
    // Lease held, output asked for, no job until the output is ready.
    expect(o.log).toEqual(['open:work_o1']);
    expect(jobs.jobs).toHaveLength(0);

    o.opening.resolve(o.stdio);
    await settle();
    expect(jobs.jobs).toHaveLength(1);
    const spec = jobs.jobs[0]!.spec;
    expect(spec.stdio).toEqual(['inherit', 'pipe', 'pipe']);
    expect(spec.env.EXTRA).toBe('from-output');
    expect('JOURNAL_STREAM' in spec.env).toBe(false);
    expect(spec.env.KEEP).toBe('yes');
    expect(o.log).toEqual(['open:work_o1', 'started:pipes']);

    jobs.jobs[0]!.leaderExits(0);
    await vi.advanceTimersByTimeAsync(200);
    expect(o.log).not.toContain('close'); // a member still runs: the output stays
    jobs.jobs[0]!.groupEmpties();
    await settle();
    expect(o.log.at(-1)).toBe('close');
    // The close never finishes (a pipe held open by an escaped process): the item is reported anyway.
    await vi.advanceTimersByTimeAsync(100);
    expect(result()?.outcome).toBe('completed');
    expect(o.closed.settled).toBe(false);
  });

  it('a second signal while the output is being opened: no job is started, the stdio is let go', async () => {
    const api = new FakeApi();
    const o = fakeOutput('journal');
    const { l, jobs, result } = lease(api, o.output);
    void l.start();
    await settle();
    expect(o.log).toEqual(['open:work_o1']);
    l.shutdownNow();
    await settle();
    expect(result()).not.toBeNull();
    o.opening.resolve(o.stdio);
    await settle();
    expect(jobs.jobs).toHaveLength(0);
    expect(o.log).toEqual(['open:work_o1', 'started:none', 'close']);
  });

  it('inherit spawns at once, without asking the output for anything', async () => {
    const api = new FakeApi();
    const o = fakeOutput('inherit');
    const { l, jobs } = lease(api, o.output);
    void l.start();
    await settle();
    expect(o.log).toEqual([]);
    expect(jobs.jobs).toHaveLength(1);
    expect(jobs.jobs[0]!.spec.stdio).toBeUndefined();
    expect(jobs.jobs[0]!.spec.env.JOURNAL_STREAM).toBe('8:1');
  });
});
