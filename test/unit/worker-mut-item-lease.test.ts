/**
 * ItemLease (src/worker/item-lease.ts), the I/O side of one item's lease, on vitest's fake clock with a
 * fake control plane and fake jobs. Pinned here, as README describes it: what each heartbeat call carries
 * (work id, precondition, desired ttl, Idempotency-Key, the attempt's own cancel and no client timer), how
 * each reply and failure reaches the lease rules, the timer the driver keeps, the log lines of the job's
 * life (job_signaled, job_killed, job_left_processes, item_finished with its fields), the events metrics
 * count, the report after the job and its whole group (metadata, stop, the confirming stop, their retries
 * and failures, `released`), the `--once` exit code per end, the snapshot view, and a spawn that fails.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CallCancel } from '../../src/api/cancel.js';
import { AuthError, BadRequestError, ConflictError, LeaseLostError, TransientError } from '../../src/api/errors.js';
import { NO_HEARTBEAT, type WorkItem } from '../../src/api/types.js';
import { SpawnError, type Containment, type JobSpec, type StopOptions } from '../../src/job/index.js';
import type { JobExit } from '../../src/lease/outcome.js';
import { ItemLease, type ItemContext, type ItemResult } from '../../src/worker/item-lease.js';
import { FakeJob, deferred, fakeJobs, settings } from '../support/fake-worker.js';
import { wireItem } from '../support/wire.js';
import { LEVEL, ScriptedApi, captureLog, recordEvents } from './worker-mut-harness.js';

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
});
afterEach(() => {
  vi.useRealTimers();
});

const settle = () => vi.advanceTimersByTimeAsync(0);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const ITEM = wireItem({ id: 'work_m1', state: 'starting', data: { type: 'session', id: 'sess_m1' } }) as unknown as WorkItem;
const TOKEN = 'pt-mut-item-token-0123456789';

function harness(
  api: ScriptedApi,
  over: { settings?: Partial<ReturnType<typeof settings>>; ctx?: Partial<ItemContext>; random?: number; startJob?: (spec: JobSpec) => FakeJob } = {},
) {
  const jobs = fakeJobs();
  const cap = captureLog();
  const ev = recordEvents();
  const t0 = Date.now();
  const l = new ItemLease(ITEM, {
    api: api.asApi(),
    settings: settings(over.settings),
    command: ['/bin/job', 'arg'],
    tokens: [TOKEN],
    baseEnv: { PATH: '/usr/bin', QODER_PAT: TOKEN, LEAKY: `Bearer ${TOKEN}` },
    log: cap.log,
    clock: { now: () => Date.now() },
    events: ev.events,
    random: () => over.random ?? 0.5,
    startJob: over.startJob ?? jobs.start,
    ...over.ctx,
  });
  let result: ItemResult | null = null;
  void l.done.then((r) => (result = r));
  return { l, jobs, t0, ...cap, ...ev, result: () => result };
}

/** A fake job with a `where`, stop options recorded, and hooks to make its signals fail. */
class WhereJob extends FakeJob {
  readonly where = { pgid: this.pid, cgroup: '/sys/fs/cgroup/lk/job-x' };
  readonly stops: StopOptions[] = [];
  stopResult: (() => Promise<unknown>) | null = null;
  interruptThrows: Error | null = null;
  killThrows: Error | null = null;
  override interrupt(signal: NodeJS.Signals): void {
    super.interrupt(signal);
    if (this.interruptThrows) throw this.interruptThrows;
  }
  override kill(): void {
    if (this.killThrows) {
      this.signals.push('SIGKILL(failed)');
      throw this.killThrows;
    }
    super.kill();
  }
  override stop(opts: StopOptions): Promise<unknown> {
    this.stops.push(opts);
    return this.stopResult ? this.stopResult() : super.stop(opts);
  }
}

function whereJobs(setup: (j: WhereJob) => void = () => {}) {
  const made: WhereJob[] = [];
  return {
    made,
    start: (spec: JobSpec): WhereJob => {
      const j = new WhereJob(spec);
      setup(j);
      made.push(j);
      return j;
    },
  };
}

describe('ItemLease: the heartbeat call', () => {
  it('carries the work id, the precondition, the desired ttl and a UUID key; its own cancel; no client timer', async () => {
    const api = new ScriptedApi();
    api.auto.heartbeat = false;
    const h = harness(api, { settings: { desiredTtlSeconds: 45 } });
    void h.l.start();
    await settle();
    expect(api.heartbeatCalls).toHaveLength(1);
    const first = api.heartbeatCalls[0]!;
    expect(first.workId).toBe('work_m1');
    expect(first.params).toMatchObject({ expectedLastHeartbeat: NO_HEARTBEAT, desiredTtlSeconds: 45 });
    expect(first.params.idempotencyKey).toMatch(UUID);
    expect(first.opts.timeoutMs).toBeNull();
    expect(first.opts.signal).toBeInstanceOf(CallCancel);
    expect((first.opts.signal as CallCancel).aborted).toBe(false);
    const accepted = api.grant();
    api.heartbeats[0]!.answer.resolve(accepted);
    await vi.advanceTimersByTimeAsync(10_000);
    const second = api.heartbeatCalls[1]!;
    expect(second.params).toMatchObject({ expectedLastHeartbeat: accepted.value.last_heartbeat, desiredTtlSeconds: 45 });
    expect(second.opts.signal).not.toBe(first.opts.signal); // one cancel per attempt
    h.l.shutdownNow();
  });

  it('an attempt that gets no reply is cancelled at its cutoff, and retried with a fresh cancel', async () => {
    const api = new ScriptedApi();
    api.auto.heartbeat = false;
    const h = harness(api);
    void h.l.start();
    await settle();
    const first = api.heartbeatCalls[0]!.opts.signal as CallCancel;
    for (let i = 0; i < 400 && !first.aborted; i++) await vi.advanceTimersByTimeAsync(50);
    expect(first.aborted).toBe(true);
    await vi.advanceTimersByTimeAsync(5000);
    expect(api.heartbeatCalls.length).toBeGreaterThanOrEqual(2);
    expect((api.heartbeatCalls[1]!.opts.signal as CallCancel).aborted).toBe(false);
    expect(h.named('heartbeat_retry')[0]).toMatchObject({ kind: 'transient', error: expect.stringMatching(/^no reply within \d+ ms$/) });
    h.l.shutdownNow();
    // A second signal ends the item: the attempt in flight is cancelled too.
    expect((api.heartbeatCalls.at(-1)!.opts.signal as CallCancel).aborted).toBe(true);
  });

  it('the events metrics count: accepted / stopping / not_extended / the failure kind, with the latency measured from the send', async () => {
    const api = new ScriptedApi();
    api.auto.heartbeat = false;
    // A grace long enough that the drain after `stopping` still beats.
    const h = harness(api, { settings: { graceMs: 60_000 } });
    void h.l.start();
    await settle();
    await vi.advanceTimersByTimeAsync(700);
    api.heartbeats[0]!.answer.resolve(api.grant());
    await settle();
    expect(h.seen).toEqual(['heartbeat:accepted:700']);
    await vi.advanceTimersByTimeAsync(8705); // next beat 9405 ms after the first send: 0.33 x 30 s minus half of the 10 % jitter
    expect(api.heartbeats).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(250);
    api.heartbeats[1]!.answer.reject(new TransientError('HTTP 503', { status: 503 }));
    await settle();
    expect(h.seen.at(-1)).toBe('heartbeat:transient:250');
    for (let i = 0; i < 10_000 && api.heartbeats.length < 3; i++) await vi.advanceTimersByTimeAsync(1);
    await vi.advanceTimersByTimeAsync(40);
    api.heartbeats[2]!.answer.resolve(api.grant({ state: 'stopping' }));
    await settle();
    expect(h.seen.at(-1)).toBe('heartbeat:stopping:40');
    for (let i = 0; i < 20_000 && api.heartbeats.length < 4; i++) await vi.advanceTimersByTimeAsync(1);
    api.heartbeats[3]!.answer.resolve(api.grant({ extended: false }));
    await settle();
    expect(h.seen.at(-1)).toBe('heartbeat:not_extended:0');
  });
});

describe('ItemLease: each reply and failure reaches the lease rules', () => {
  it('the granted ttl sets the next beat, the reply request id is logged with lease_acquired', async () => {
    const api = new ScriptedApi();
    api.auto.heartbeat = false;
    const h = harness(api);
    void h.l.start();
    await settle();
    api.heartbeats[0]!.answer.resolve(api.grant({ ttl: 10, requestId: 'req-first-lease' }));
    await settle();
    expect(h.named('lease_acquired')[0]).toMatchObject({ request_id: 'req-first-lease', ttl_seconds: 10, work_id: 'work_m1', session_id: 'sess_m1' });
    // 0.33 x 10 s = 3300 ms, minus 0.5 x 10 % jitter: 3135 ms.
    await vi.advanceTimersByTimeAsync(3134);
    expect(api.heartbeats).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(api.heartbeats).toHaveLength(2);
    h.l.shutdownNow();
  });

  it('a wake time with a fraction of a millisecond: the timer rounds up, the beat goes out at the first whole ms at or after it', async () => {
    const api = new ScriptedApi();
    api.auto.heartbeat = false;
    const h = harness(api, { random: 0.123 });
    void h.l.start();
    await settle();
    api.heartbeats[0]!.answer.resolve(api.grant());
    await settle();
    // 9900 - 0.123 x 990 = 9778.23 ms
    await vi.advanceTimersByTimeAsync(9778);
    expect(api.heartbeats).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(api.heartbeats).toHaveLength(2);
    expect(vi.getTimerCount()).toBe(1);
    h.l.shutdownNow();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('lease_extended false: the lease is lost, the job gets the stop signal, no report, --once exit 75', async () => {
    const api = new ScriptedApi();
    const wj = whereJobs();
    const h = harness(api, { startJob: wj.start });
    void h.l.start();
    await settle();
    api.auto.heartbeat = false;
    await vi.advanceTimersByTimeAsync(9405);
    api.heartbeats[1]!.answer.resolve(api.grant({ extended: false }));
    await settle();
    const job = wj.made[0]!;
    expect(job.signals).toEqual(['SIGTERM']);
    expect(h.named('job_signaled')).toEqual([expect.objectContaining({ level: LEVEL.info, signal: 'SIGTERM', reason: 'lease_lost', pgid: job.pid, cgroup: '/sys/fs/cgroup/lk/job-x' })]);
    expect(h.seen).not.toContain('fence:signal');
    job.finish(143);
    await settle();
    expect(h.result()).toMatchObject({ outcome: 'lease_lost', exitCode: 75, fatal: null });
    expect(api.metadataCalls).toEqual([]);
    expect(api.stopCalls).toEqual([]);
    expect(h.seen.at(-1)).toBe('outcome:lease_lost');
  });

  it('state stopping: the job is drained with the stop signal (no fence), the stop is confirmed, --once exit is the job\'s', async () => {
    const api = new ScriptedApi();
    const wj = whereJobs();
    const h = harness(api, { startJob: wj.start, settings: { stopSignal: 'SIGINT' } });
    void h.l.start();
    await settle();
    api.auto.heartbeat = false;
    await vi.advanceTimersByTimeAsync(9405);
    api.heartbeats[1]!.answer.resolve(api.grant({ state: 'stopping', requestId: 'req-stopping' }));
    await settle();
    const job = wj.made[0]!;
    expect(job.signals).toEqual(['SIGINT']);
    expect(h.named('job_signaled')[0]).toMatchObject({ signal: 'SIGINT', reason: 'drained' });
    expect(h.named('stop_requested')[0]).toMatchObject({ request_id: 'req-stopping' });
    api.stopAnswers = ['stopping', 'stopped'];
    job.finish(3);
    await settle();
    expect(api.stopCalls.map((c) => c.workId)).toEqual(['work_m1', 'work_m1']);
    expect(h.named('stopped')[0]).toMatchObject({ level: LEVEL.info, state: 'stopped', request_id: 'req-stop-2', outcome: 'drained' });
    expect(h.result()).toMatchObject({ outcome: 'drained', exitCode: 3 });
    expect(h.seen).not.toContain('fence:signal');
  });

  it('an ApiError reaches the retry rule with its kind, status, request id and Retry-After', async () => {
    const api = new ScriptedApi();
    api.auto.heartbeat = false;
    const h = harness(api);
    void h.l.start();
    await settle();
    api.heartbeats[0]!.answer.resolve(api.grant());
    await vi.advanceTimersByTimeAsync(9405);
    api.heartbeats[1]!.answer.reject(new TransientError('HTTP 429 (slow down)', { status: 429, requestId: 'req-429', retryAfterMs: 7000 }));
    await settle();
    expect(h.named('heartbeat_retry')[0]).toMatchObject({
      level: LEVEL.warn,
      status: 429,
      kind: 'transient',
      request_id: 'req-429',
      error: 'HTTP 429 (slow down)',
      retry_in_ms: 7000,
    });
    await vi.advanceTimersByTimeAsync(6999);
    expect(api.heartbeats).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(api.heartbeats).toHaveLength(3);
    h.l.shutdownNow();
  });

  it('a failure that is no ApiError (a bug) is retried as transient, named in the retry line', async () => {
    const api = new ScriptedApi();
    api.auto.heartbeat = false;
    const h = harness(api);
    void h.l.start();
    await settle();
    api.heartbeats[0]!.answer.resolve(api.grant());
    await vi.advanceTimersByTimeAsync(9405);
    api.heartbeats[1]!.answer.reject(new TypeError('x is not a function'));
    await settle();
    expect(h.named('heartbeat_retry')[0]).toMatchObject({ kind: 'transient', error: 'TypeError: x is not a function' });
    expect(h.seen.at(-1)).toMatch(/^heartbeat:transient:/);
    for (let i = 0; i < 200 && api.heartbeats.length < 3; i++) await vi.advanceTimersByTimeAsync(50);
    api.heartbeats[2]!.answer.reject('a string');
    await settle();
    expect(h.named('heartbeat_retry')[1]).toMatchObject({ kind: 'transient', error: 'a string' });
    expect(h.result()).toBeNull();
    h.l.shutdownNow();
  });

  it('401 on a heartbeat: lease lost, fatal auth, exit 77; 400: fatal config, exit 78; 409: stopped_by_server', async () => {
    for (const [err, outcome, fatal, code] of [
      [new AuthError('HTTP 401', { status: 401 }), 'lease_lost', 'auth', 77],
      [new BadRequestError('HTTP 400', { status: 400 }), 'lease_lost', 'config', 78],
      [new ConflictError('HTTP 409', { status: 409 }), 'stopped_by_server', null, 0],
      [new LeaseLostError('HTTP 412', { status: 412 }), 'lease_lost', null, 75],
    ] as const) {
      const api = new ScriptedApi();
      const h = harness(api);
      void h.l.start();
      await settle();
      api.auto.heartbeat = false;
      await vi.advanceTimersByTimeAsync(9405);
      api.heartbeats[1]!.answer.reject(err);
      await settle();
      h.jobs.jobs[0]!.finish(0);
      await settle();
      expect(h.result(), err.name).toMatchObject({ outcome, fatal, exitCode: code });
      expect(h.named('item_finished')[0], err.name).toMatchObject({ outcome, fatal });
    }
  });
});

describe('ItemLease: fencing and signals', () => {
  it('no heartbeat accepted in time: stop signal then SIGKILL, each counted as a fence step and logged with where the job runs', async () => {
    const api = new ScriptedApi();
    const wj = whereJobs();
    const h = harness(api, { startJob: wj.start });
    void h.l.start();
    await settle();
    api.auto.heartbeat = false;
    // Every later attempt hangs until its cutoff: nothing is accepted any more.
    await vi.advanceTimersByTimeAsync(40_000);
    const job = wj.made[0]!;
    expect(job.signals).toEqual(['SIGTERM', 'SIGKILL']);
    expect(h.seen.filter((e) => e.startsWith('fence:'))).toEqual(['fence:signal', 'fence:kill']);
    expect(h.named('job_signaled')[0]).toMatchObject({ level: LEVEL.info, signal: 'SIGTERM', reason: 'self_fenced', pgid: job.pid });
    expect(h.named('job_killed')[0]).toMatchObject({ level: LEVEL.warn, reason: 'self_fenced', pgid: job.pid, cgroup: '/sys/fs/cgroup/lk/job-x' });
    expect(h.result()).toMatchObject({ outcome: 'self_fenced', exitCode: 75 });
    expect(api.metadataCalls).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a second signal kills the job (no fence counted) and ends without a report', async () => {
    const api = new ScriptedApi();
    const wj = whereJobs();
    const h = harness(api, { startJob: wj.start });
    void h.l.start();
    await settle();
    h.l.shutdownNow();
    await settle();
    expect(wj.made[0]!.signals).toEqual(['SIGKILL']);
    expect(h.named('job_killed')[0]).toMatchObject({ reason: 'shutdown' });
    expect(h.seen.filter((e) => e.startsWith('fence:'))).toEqual([]);
    expect(h.result()).toMatchObject({ outcome: 'shutdown', exitCode: 0 });
    expect(api.stopCalls).toEqual([]);
  });

  it('a signal the kernel refuses (EPERM) is logged as job_signal_failed, and the keeper goes on to the SIGKILL', async () => {
    const api = new ScriptedApi();
    const eperm = Object.assign(new Error('kill EPERM'), { code: 'EPERM' });
    const wj = whereJobs((j) => {
      j.interruptThrows = eperm;
      j.killThrows = eperm;
    });
    const h = harness(api, { startJob: wj.start });
    void h.l.start();
    await settle();
    api.auto.heartbeat = false;
    await vi.advanceTimersByTimeAsync(40_000);
    const job = wj.made[0]!;
    expect(job.signals).toEqual(['SIGTERM', 'SIGKILL(failed)']);
    const failed = h.named('job_signal_failed');
    expect(failed).toHaveLength(2);
    expect(failed[0]).toMatchObject({ level: LEVEL.error, pgid: job.pid, err: expect.objectContaining({ message: 'kill EPERM' }) });
    expect(h.result()).toBeNull(); // the job still runs: the item waits for it
    job.finish(0);
    await settle();
    expect(h.result()).toMatchObject({ outcome: 'self_fenced' });
  });
});

describe('ItemLease: starting the job', () => {
  it('the spec: the command, the item id as name, the keeper environment without the token, the work variables; no stdio when inherited', async () => {
    const api = new ScriptedApi();
    const h = harness(api);
    void h.l.start();
    await settle();
    const spec = h.jobs.jobs[0]!.spec;
    expect(spec.command).toEqual(['/bin/job', 'arg']);
    expect(spec.name).toBe('work_m1');
    expect('stdio' in spec).toBe(false);
    expect(spec.env.PATH).toBe('/usr/bin');
    expect(spec.env.LEASE_KEEPER_WORK_ID).toBe('work_m1');
    expect(spec.env.LEASE_KEEPER_SESSION_ID).toBe('sess_m1');
    expect(Object.keys(spec.env)).not.toContain('QODER_PAT');
    expect(Object.keys(spec.env)).not.toContain('LEAKY');
    expect(h.named('job_started')[0]).toMatchObject({ pid: h.jobs.jobs[0]!.pid });
    h.l.shutdownNow();
  });

  it('the given containment starts the job when no starter is passed', async () => {
    const api = new ScriptedApi();
    const specs: JobSpec[] = [];
    const containment = { kind: 'tag', start: (spec: JobSpec) => (specs.push(spec), new FakeJob(spec)) } as unknown as Containment;
    const h = harness(api, { ctx: { containment, startJob: undefined } });
    void h.l.start();
    await settle();
    expect(specs.map((s) => s.name)).toEqual(['work_m1']);
    h.l.shutdownNow();
  });

  it('a job started without the parent-death signal: a warning says what that risks', async () => {
    const api = new ScriptedApi();
    const wj = whereJobs((j) => Object.defineProperty(j, 'parentDeathSignal', { value: false }));
    const h = harness(api, { startJob: wj.start });
    void h.l.start();
    await settle();
    const line = h.named('no_parent_death_signal');
    expect(line).toHaveLength(1);
    expect(line[0]).toMatchObject({ level: LEVEL.warn });
    expect(line[0]!.msg).toContain('setpriv not found');
    h.l.shutdownNow();
  });

  it('with the parent-death signal: no such warning', async () => {
    const api = new ScriptedApi();
    const h = harness(api);
    void h.l.start();
    await settle();
    expect(h.named('no_parent_death_signal')).toEqual([]);
    h.l.shutdownNow();
  });

  it('a command that cannot be found (SpawnError 127): spawn_failed, the item is stopped, exit 127, the message kept', async () => {
    const api = new ScriptedApi();
    const h = harness(api, {
      startJob: () => {
        throw new SpawnError(127, 'job command not found: /bin/job');
      },
    });
    void h.l.start();
    await vi.advanceTimersByTimeAsync(100);
    expect(h.named('spawn_failed')[0]).toMatchObject({ level: LEVEL.error, code: 127, error: 'job command not found: /bin/job' });
    expect(h.result()).toMatchObject({ outcome: 'spawn_failed', exitCode: 127 });
    expect(h.named('item_finished')[0]).toMatchObject({ detail: 'job command not found: /bin/job', exit_code: 127 });
    expect(api.stopCalls).toHaveLength(1);
  });

  it('any other failure to start: code 126 (cannot execute), its message kept (also for a non-Error)', async () => {
    for (const [thrown, message] of [
      [new Error('EACCES: permission denied'), 'EACCES: permission denied'],
      ['plain string', 'plain string'],
    ] as const) {
      const api = new ScriptedApi();
      const h = harness(api, {
        startJob: () => {
          throw thrown;
        },
      });
      void h.l.start();
      await vi.advanceTimersByTimeAsync(100);
      expect(h.result()).toMatchObject({ outcome: 'spawn_failed', exitCode: 126 });
      expect(h.named('spawn_failed')[0]).toMatchObject({ code: 126, error: message });
    }
  });

  it('a spawn that fails with the output opened: the output is let go (started with no pipes, closed)', async () => {
    const api = new ScriptedApi();
    const seen: string[] = [];
    const output = {
      mode: 'prefix' as const,
      open: async () => ({
        mode: 'prefix' as const,
        stdio: ['inherit', 'pipe', 'pipe'] as const,
        env: {},
        started: (p: { stdout: unknown }) => void seen.push(`started:${p.stdout === null ? 'none' : 'pipes'}`),
        close: async () => (seen.push('close'), false),
      }),
    };
    const h = harness(api, {
      ctx: { output: output as unknown as ItemContext['output'] },
      startJob: () => {
        throw new SpawnError(126, 'cannot execute');
      },
    });
    void h.l.start();
    await vi.advanceTimersByTimeAsync(100);
    expect(seen).toEqual(['started:none', 'close']);
    expect(h.result()).toMatchObject({ outcome: 'spawn_failed', exitCode: 126 });
  });
});

describe('ItemLease: the whole group, then the report', () => {
  it('a group that empties within 100 ms of its leader: nothing is left to stop', async () => {
    const api = new ScriptedApi();
    const wj = whereJobs();
    const h = harness(api, { startJob: wj.start });
    void h.l.start();
    await settle();
    const job = wj.made[0]!;
    job.leaderExits(0);
    await vi.advanceTimersByTimeAsync(99);
    job.groupEmpties();
    await vi.advanceTimersByTimeAsync(200);
    expect(job.stops).toEqual([]);
    expect(h.named('job_left_processes')).toEqual([]);
    expect(h.result()).toMatchObject({ outcome: 'completed', exitCode: 0 });
  });

  it('a leader gone with members left: job_left_processes with its exit, the rest gets the configured stop signal and grace', async () => {
    const api = new ScriptedApi();
    const wj = whereJobs();
    const h = harness(api, { startJob: wj.start, settings: { stopSignal: 'SIGUSR1', graceMs: 1234 } });
    void h.l.start();
    await settle();
    const job = wj.made[0]!;
    job.leaderExits(4);
    await vi.advanceTimersByTimeAsync(150);
    expect(job.stops).toEqual([{ signal: 'SIGUSR1', graceMs: 1234 }]);
    expect(h.named('job_left_processes')).toEqual([expect.objectContaining({ level: LEVEL.warn, exit_code: 4, signal: null, pgid: job.pid })]);
    job.groupEmpties();
    await settle();
    expect(h.result()).toMatchObject({ outcome: 'failed', exitCode: 4 });
  });

  it('a stop of the leftovers that fails is logged (job_group_stop_failed); the item still ends when the group empties', async () => {
    const api = new ScriptedApi();
    const wj = whereJobs((j) => (j.stopResult = () => Promise.reject(new Error('cgroup.kill: EACCES'))));
    const h = harness(api, { startJob: wj.start });
    void h.l.start();
    await settle();
    const job = wj.made[0]!;
    job.leaderExits(0);
    await vi.advanceTimersByTimeAsync(150);
    expect(h.named('job_group_stop_failed')).toEqual([expect.objectContaining({ level: LEVEL.error, pgid: job.pid, err: expect.objectContaining({ message: 'cgroup.kill: EACCES' }) })]);
    job.groupEmpties();
    await settle();
    expect(h.result()).toMatchObject({ outcome: 'completed' });
  });

  it('the report: metadata (outcome, exit code, worker id) then one stop, each with the report signal and a 10 s timeout; `stopped` logged', async () => {
    const api = new ScriptedApi();
    const h = harness(api, { settings: { workerId: 'w-mut' } });
    void h.l.start();
    await settle();
    h.jobs.jobs[0]!.finish(0);
    await settle();
    expect(api.metadataCalls).toHaveLength(1);
    expect(api.metadataCalls[0]).toMatchObject({ workId: 'work_m1', metadata: { outcome: 'completed', exit_code: '0', worker_id: 'w-mut' } });
    expect(api.metadataCalls[0]!.opts.timeoutMs).toBe(10_000);
    expect(api.metadataCalls[0]!.opts.signal).toBeInstanceOf(AbortSignal);
    expect(api.stopCalls).toHaveLength(1);
    expect(api.stopCalls[0]!.opts.timeoutMs).toBe(10_000);
    expect(api.stopCalls[0]!.opts.signal).toBe(api.metadataCalls[0]!.opts.signal);
    expect(h.named('stopped')).toEqual([expect.objectContaining({ level: LEVEL.info, state: 'stopped', request_id: 'req-stop-1', outcome: 'completed', work_id: 'work_m1' })]);
    expect(h.named('released')).toEqual([]);
    const finished = h.named('item_finished');
    expect(finished).toEqual([
      expect.objectContaining({ level: LEVEL.info, outcome: 'completed', exit_code: 0, signal: null, detail: null, fatal: null, work_id: 'work_m1', session_id: 'sess_m1' }),
    ]);
    expect(finished[0]).not.toHaveProperty('cpu_seconds');
    expect(h.usage).toEqual([]);
    expect(h.seen.at(-1)).toBe('outcome:completed');
    expect(h.result()).toEqual({ workId: 'work_m1', outcome: 'completed', exit: { code: 0, signal: null }, fatal: null, exitCode: 0 });
  });

  it('metadata failing transiently is retried 4 times (report_retry), then given up (metadata_not_written); the stop still goes out', async () => {
    const api = new ScriptedApi();
    const h = harness(api);
    api.metadataAnswers = Array.from({ length: 5 }, (_, i) => new TransientError(`HTTP 503 (${i + 1})`, { status: 503 }));
    void h.l.start();
    await settle();
    h.jobs.jobs[0]!.finish(0);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(api.metadataCalls).toHaveLength(5);
    expect(h.named('report_retry').map((l) => l.attempt)).toEqual([1, 2, 3, 4]);
    expect(h.named('report_retry')[0]).toMatchObject({ level: LEVEL.warn, err: expect.objectContaining({ message: 'HTTP 503 (1)' }) });
    expect(h.named('metadata_not_written')).toEqual([expect.objectContaining({ level: LEVEL.warn, err: expect.objectContaining({ message: 'HTTP 503 (5)' }) })]);
    expect(api.stopCalls).toHaveLength(1);
    expect(h.result()).toMatchObject({ outcome: 'completed' });
  });

  it('the stop failing transiently is retried 6 times, then stop_not_reported (error) with the outcome; the item ends', async () => {
    const api = new ScriptedApi();
    const h = harness(api);
    api.stopAnswers = Array.from({ length: 7 }, () => new TransientError('HTTP 502', { status: 502 }));
    void h.l.start();
    await settle();
    h.jobs.jobs[0]!.finish(2);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(api.stopCalls).toHaveLength(7);
    expect(h.named('report_retry')).toHaveLength(6);
    expect(h.named('stop_not_reported')).toEqual([expect.objectContaining({ level: LEVEL.error, outcome: 'failed' })]);
    expect(h.named('stopped')).toEqual([]);
    expect(h.result()).toMatchObject({ outcome: 'failed', exitCode: 2 });
  });

  it('a confirming stop is retried as well: stopping, then two failures, then stopped', async () => {
    const api = new ScriptedApi();
    const h = harness(api);
    api.stopAnswers = ['stopping', new TransientError('HTTP 503', { status: 503 }), new TransientError('HTTP 503', { status: 503 }), 'stopped'];
    void h.l.start();
    await settle();
    h.jobs.jobs[0]!.finish(0);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(api.stopCalls).toHaveLength(4);
    expect(h.named('stopped')[0]).toMatchObject({ state: 'stopped', request_id: 'req-stop-4' });
  });

  it('a stop that answers stopping once is not sent a third time, whatever the second answer', async () => {
    const api = new ScriptedApi();
    const h = harness(api);
    api.stopAnswers = ['stopping', 'stopping'];
    void h.l.start();
    await settle();
    h.jobs.jobs[0]!.finish(0);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(api.stopCalls).toHaveLength(2);
    expect(h.named('stopped')[0]).toMatchObject({ state: 'stopping' });
  });

  it('LEASE_KEEPER_ON_SHUTDOWN=release: a shutdown writes the metadata, sends no stop, and says `released`', async () => {
    const api = new ScriptedApi();
    const h = harness(api, { settings: { onShutdown: 'release' } });
    void h.l.start();
    await settle();
    h.l.shutdown();
    await settle();
    expect(h.jobs.jobs[0]!.signals).toEqual(['SIGTERM']);
    h.jobs.jobs[0]!.finish(143);
    await vi.advanceTimersByTimeAsync(100);
    expect(api.metadataCalls).toHaveLength(1);
    expect(api.stopCalls).toEqual([]);
    expect(h.named('released')).toEqual([expect.objectContaining({ level: LEVEL.info, outcome: 'shutdown' })]);
    expect(h.named('stopped')).toEqual([]);
    expect(h.result()).toMatchObject({ outcome: 'shutdown', exitCode: 0 });
  });

  it('a second signal during the report: the report is abandoned (no stop sent, neither `stopped` nor `released`), the item ends at once', async () => {
    const api = new ScriptedApi();
    const h = harness(api);
    api.metadataAnswers = [new TransientError('HTTP 503', { status: 503 })];
    void h.l.start();
    await settle();
    h.jobs.jobs[0]!.finish(0);
    await settle();
    expect(api.metadataCalls).toHaveLength(1); // waiting to retry
    h.l.shutdownNow();
    await vi.advanceTimersByTimeAsync(30_000);
    expect(api.metadataCalls).toHaveLength(1);
    expect(api.stopCalls).toEqual([]);
    expect(h.named('stopped')).toEqual([]);
    expect(h.named('released')).toEqual([]);
    expect(h.result()).not.toBeNull();
  });

  it('a second signal while the stop is out: no confirming stop follows', async () => {
    const api = new ScriptedApi();
    const h = harness(api);
    const gate = deferred<void>();
    api.stopGate = gate.promise;
    api.stopAnswers = ['stopping', 'stopped'];
    void h.l.start();
    await settle();
    h.jobs.jobs[0]!.finish(0);
    await settle();
    expect(api.stopCalls).toHaveLength(1);
    h.l.shutdownNow();
    api.stopGate = null;
    gate.resolve();
    await vi.advanceTimersByTimeAsync(30_000);
    expect(api.stopCalls).toHaveLength(1);
  });

  it('what the containment measured: only the fields it has, in metadata and item_finished; the usage event once', async () => {
    const api = new ScriptedApi();
    const usage = { cpuSeconds: null, memoryPeakBytes: 8192, oomKilled: false };
    const made: FakeJob[] = [];
    const h = harness(api, { startJob: (spec) => (made.push(Object.assign(new FakeJob(spec), { accounting: () => usage })), made.at(-1)!) });
    void h.l.start();
    await settle();
    made[0]!.finish(0);
    await settle();
    expect(h.usage).toEqual([usage]);
    expect(api.metadataCalls[0]!.metadata).toEqual({ outcome: 'completed', exit_code: '0', worker_id: 'w-test', memory_peak_bytes: '8192' });
    const finished = h.named('item_finished')[0]!;
    expect(finished.memory_peak_bytes).toBe(8192);
    expect(finished).not.toHaveProperty('cpu_seconds');
    expect(h.result()).toMatchObject({ outcome: 'completed' });
  });

  it('cpu time alone, and an OOM kill: the item failed although its leader exited 0', async () => {
    const api = new ScriptedApi();
    const usage = { cpuSeconds: 2.5, memoryPeakBytes: null, oomKilled: true };
    const made: FakeJob[] = [];
    const h = harness(api, { startJob: (spec) => (made.push(Object.assign(new FakeJob(spec), { accounting: () => usage })), made.at(-1)!) });
    void h.l.start();
    await settle();
    made[0]!.finish(0);
    await settle();
    expect(api.metadataCalls[0]!.metadata).toEqual({ outcome: 'failed', exit_code: '0', oom_killed: 'true', worker_id: 'w-test', cpu_seconds: '2.5' });
    const finished = h.named('item_finished')[0]!;
    expect(finished.cpu_seconds).toBe(2.5);
    expect(finished).not.toHaveProperty('memory_peak_bytes');
    expect(h.result()).toMatchObject({ outcome: 'failed', exitCode: 0 });
  });

  it('no OOM flag when the accounting says none; a job without accounting reports no usage', async () => {
    const api = new ScriptedApi();
    const made: FakeJob[] = [];
    const h = harness(api, {
      startJob: (spec) => (made.push(Object.assign(new FakeJob(spec), { accounting: () => ({ cpuSeconds: 1, memoryPeakBytes: 2, oomKilled: false }) })), made.at(-1)!),
    });
    void h.l.start();
    await settle();
    made[0]!.finish(0);
    await settle();
    expect(api.metadataCalls[0]!.metadata).not.toHaveProperty('oom_killed');
    expect(h.result()).toMatchObject({ outcome: 'completed' });
  });
});

describe('ItemLease: the exit a signal gave', () => {
  it('a job ended by SIGTERM (not from us): failed, --once exit 143, the signal in metadata and item_finished', async () => {
    const api = new ScriptedApi();
    const h = harness(api);
    void h.l.start();
    await settle();
    const job = h.jobs.jobs[0]!;
    (job as unknown as { exit: { resolve(e: JobExit): void } }).exit.resolve({ code: null, signal: 'SIGTERM' });
    job.groupEmpties();
    await settle();
    expect(api.metadataCalls[0]!.metadata).toMatchObject({ outcome: 'failed', signal: 'SIGTERM' });
    expect(h.named('item_finished')[0]).toMatchObject({ exit_code: null, signal: 'SIGTERM' });
    expect(h.result()).toMatchObject({ outcome: 'failed', exitCode: 143 });
  });

  it('SIGKILL from elsewhere: 137; SIGINT: 130', async () => {
    for (const [signal, code] of [
      ['SIGKILL', 137],
      ['SIGINT', 130],
    ] as const) {
      const api = new ScriptedApi();
      const h = harness(api);
      void h.l.start();
      await settle();
      const job = h.jobs.jobs[0]!;
      (job as unknown as { exit: { resolve(e: JobExit): void } }).exit.resolve({ code: null, signal });
      job.groupEmpties();
      await settle();
      expect(h.result()).toMatchObject({ outcome: 'failed', exitCode: code });
    }
  });
});

describe('ItemLease: the job output', () => {
  it('output cut short when the group is gone: job_output_cut (warn) with the mode; the item is reported anyway', async () => {
    const api = new ScriptedApi();
    const output = {
      mode: 'journal' as const,
      open: async () => ({
        mode: 'journal' as const,
        stdio: ['inherit', 'pipe', 'pipe'] as const,
        env: { JOURNAL_STREAM: '9:9' },
        started: () => {},
        close: async () => true,
      }),
    };
    const h = harness(api, { ctx: { output: output as unknown as ItemContext['output'] } });
    void h.l.start();
    await settle();
    expect(h.jobs.jobs[0]!.spec.env.JOURNAL_STREAM).toBe('9:9');
    h.jobs.jobs[0]!.finish(0);
    await settle();
    expect(h.named('job_output_cut')).toEqual([expect.objectContaining({ level: LEVEL.warn, mode: 'journal' })]);
    expect(h.result()).toMatchObject({ outcome: 'completed' });
  });

  it('output closed in full: no job_output_cut line', async () => {
    const api = new ScriptedApi();
    const output = {
      mode: 'prefix' as const,
      open: async () => ({ mode: 'prefix' as const, stdio: ['inherit', 'pipe', 'pipe'] as const, env: {}, started: () => {}, close: async () => false }),
    };
    const h = harness(api, { ctx: { output: output as unknown as ItemContext['output'] } });
    void h.l.start();
    await settle();
    h.jobs.jobs[0]!.finish(0);
    await settle();
    expect(h.named('job_output_cut')).toEqual([]);
    expect(h.result()).toMatchObject({ outcome: 'completed' });
  });
});

describe('ItemLease: the snapshot view', () => {
  it('acquiring, then held with the lease left, the time since the accepted send, the interval and the last result', async () => {
    const api = new ScriptedApi();
    api.auto.heartbeat = false;
    const h = harness(api);
    void h.l.start();
    await settle();
    expect(h.l.view()).toEqual({
      workId: 'work_m1',
      sessionId: 'sess_m1',
      phase: 'acquiring',
      leaseLeftMs: null,
      sinceAcceptedMs: null,
      intervalMs: null,
      lastHeartbeatResult: null,
    });
    await vi.advanceTimersByTimeAsync(200);
    api.heartbeats[0]!.answer.resolve(api.grant());
    await settle();
    await vi.advanceTimersByTimeAsync(1000);
    // The lease runs from the send (t=0): 30 s granted, 1.2 s gone.
    expect(h.l.view()).toMatchObject({ phase: 'held', leaseLeftMs: 28_800, sinceAcceptedMs: 1200, intervalMs: 9900, lastHeartbeatResult: 'accepted' });
    h.l.shutdown();
    await settle();
    expect(h.l.view().phase).toBe('draining');
    h.l.shutdownNow();
    expect(h.l.view().phase).toBe('ending');
  });

  it('fencing while the lease slips away; ending once it is lost (no lease left shown)', async () => {
    const api = new ScriptedApi();
    const h = harness(api);
    void h.l.start();
    await settle();
    api.auto.heartbeat = false;
    for (let i = 0; i < 1000 && h.jobs.jobs[0]!.signals.length === 0; i++) await vi.advanceTimersByTimeAsync(50);
    expect(h.l.view()).toMatchObject({ phase: 'fencing', lastHeartbeatResult: 'transient' });
    expect(h.l.view().leaseLeftMs).toBeGreaterThan(0);

    const api2 = new ScriptedApi();
    const h2 = harness(api2);
    void h2.l.start();
    await settle();
    api2.auto.heartbeat = false;
    await vi.advanceTimersByTimeAsync(9405);
    api2.heartbeats[1]!.answer.reject(new LeaseLostError('HTTP 412', { status: 412 }));
    await settle();
    expect(h2.l.view()).toMatchObject({ phase: 'ending', leaseLeftMs: null, lastHeartbeatResult: 'lease_lost' });
    h.l.shutdownNow();
    h2.l.shutdownNow();
  });

  it('a job drained after a server stop is `draining`, and `ending` while its report runs', async () => {
    const api = new ScriptedApi();
    const h = harness(api);
    const gate = deferred<void>();
    api.stopGate = gate.promise;
    void h.l.start();
    await settle();
    api.auto.heartbeat = false;
    await vi.advanceTimersByTimeAsync(9405);
    api.heartbeats[1]!.answer.resolve(api.grant({ state: 'stopping' }));
    await settle();
    expect(h.l.view().phase).toBe('draining');
    h.jobs.jobs[0]!.finish(0);
    await settle();
    expect(h.l.view().phase).toBe('ending');
    gate.resolve();
    await settle();
    expect(h.result()).toMatchObject({ outcome: 'drained' });
  });
});

describe('ItemLease: shutdown modes', () => {
  it('drain: the stop signal, heartbeats go on while the job drains (within its grace), outcome shutdown, exit 0', async () => {
    const api = new ScriptedApi();
    const h = harness(api, { settings: { graceMs: 60_000 } });
    void h.l.start();
    await settle();
    h.l.shutdown();
    await settle();
    expect(h.jobs.jobs[0]!.signals).toEqual(['SIGTERM']);
    const before = api.heartbeats.length;
    await vi.advanceTimersByTimeAsync(20_000);
    expect(api.heartbeats.length).toBe(before + 2);
    expect(h.jobs.jobs[0]!.signals).toEqual(['SIGTERM']);
    h.jobs.jobs[0]!.finish(143);
    await settle();
    expect(api.metadataCalls[0]!.metadata).toMatchObject({ outcome: 'shutdown' });
    expect(api.stopCalls).toHaveLength(1);
    expect(h.result()).toMatchObject({ outcome: 'shutdown', exitCode: 0 });
  });

  it('finish: no signal, the lease is kept, the job ends by itself and is reported with its own outcome', async () => {
    const api = new ScriptedApi();
    const h = harness(api);
    void h.l.start();
    await settle();
    h.l.shutdownFinish();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(h.jobs.jobs[0]!.signals).toEqual([]);
    expect(h.named('shutdown_finish')).toHaveLength(1);
    h.jobs.jobs[0]!.finish(5);
    await settle();
    expect(api.metadataCalls[0]!.metadata).toMatchObject({ outcome: 'failed', exit_code: '5' });
    expect(h.result()).toMatchObject({ outcome: 'failed', exitCode: 5 });
  });
});

describe('ItemLease: the lease runs out during the report', () => {
  it('report_abandoned: a report still retrying at deadline - margin is given up; no stop is sent after it, the item ends then', async () => {
    const api = new ScriptedApi();
    const h = harness(api);
    // The metadata call fails, asking for a minute's wait: longer than the lease has left.
    api.metadataAnswers = [new TransientError('HTTP 503', { status: 503, retryAfterMs: 60_000 })];
    void h.l.start();
    await settle();
    h.jobs.jobs[0]!.finish(0);
    await settle();
    expect(api.metadataCalls).toHaveLength(1);
    // The lease was taken at t=0 for 30 s; margin 2 s: the report may run until t=28 s.
    await vi.advanceTimersByTimeAsync(27_999);
    expect(h.named('report_abandoned')).toEqual([]);
    expect(h.result()).toBeNull();
    await vi.advanceTimersByTimeAsync(1);
    expect(h.named('report_abandoned')).toHaveLength(1);
    await settle();
    expect(h.result()).toMatchObject({ outcome: 'completed' });
    await vi.advanceTimersByTimeAsync(120_000);
    expect(api.metadataCalls).toHaveLength(1);
    expect(api.stopCalls).toEqual([]);
  });
});

describe('ItemLease: the confirming stop', () => {
  it('carries the report signal and the 10 s deadline too', async () => {
    const api = new ScriptedApi();
    const h = harness(api);
    api.stopAnswers = ['stopping', 'stopped'];
    void h.l.start();
    await settle();
    h.jobs.jobs[0]!.finish(0);
    await settle();
    expect(api.stopCalls).toHaveLength(2);
    for (const c of api.stopCalls) {
      expect(c.workId).toBe('work_m1');
      expect(c.opts.timeoutMs).toBe(10_000);
      expect(c.opts.signal).toBe(api.metadataCalls[0]!.opts.signal);
    }
  });
});

describe('ItemLease: the job output pipes and usage', () => {
  it('both of the job\'s pipes, stdout and stderr, are handed to the output', async () => {
    const api = new ScriptedApi();
    const handed: { stdout: unknown; stderr: unknown }[] = [];
    const output = {
      mode: 'prefix' as const,
      open: async () => ({
        mode: 'prefix' as const,
        stdio: ['inherit', 'pipe', 'pipe'] as const,
        env: {},
        started: (p: { stdout: unknown; stderr: unknown }) => void handed.push(p),
        close: async () => false,
      }),
    };
    const pipes = { stdout: { name: 'job stdout' }, stderr: { name: 'job stderr' } };
    const h = harness(api, { ctx: { output: output as unknown as ItemContext['output'] }, startJob: (spec) => Object.assign(new FakeJob(spec), pipes) });
    void h.l.start();
    await settle();
    expect(handed).toEqual([pipes]);
    expect(handed[0]!.stderr).toBe(pipes.stderr);
    expect(handed[0]!.stdout).toBe(pipes.stdout);
    h.l.shutdownNow();
  });

  it('metrics without a usage histogram (no jobUsage): a measured job still ends and is reported', async () => {
    const api = new ScriptedApi();
    const made: FakeJob[] = [];
    const { jobUsage: _none, ...events } = recordEvents().events;
    const h = harness(api, {
      ctx: { events },
      startJob: (spec) => (made.push(Object.assign(new FakeJob(spec), { accounting: () => ({ cpuSeconds: 3, memoryPeakBytes: 4, oomKilled: false }) })), made.at(-1)!),
    });
    void h.l.start();
    await settle();
    made[0]!.finish(0);
    await settle();
    expect(h.result()).toMatchObject({ outcome: 'completed' });
    expect(api.metadataCalls[0]!.metadata).toMatchObject({ cpu_seconds: '3', memory_peak_bytes: '4' });
  });
});

describe('ItemLease: events one at a time, in order', () => {
  it('a first reply that comes after the next beat was due, and a job that cannot start: the beat sent in that same step is cancelled', async () => {
    const api = new ScriptedApi();
    api.auto.heartbeat = false;
    const h = harness(api, {
      startJob: () => {
        throw new SpawnError(127, 'not found');
      },
    });
    const gate = deferred<void>();
    api.stopGate = gate.promise; // the report waits at its stop: the item is not finished yet
    void h.l.start();
    await settle();
    // The first attempt gets no answer within its 5 s cutoff; the retry (same key) is answered at 9.6 s,
    // when the lease taken at t=0 is already due for its next beat (9.405 s).
    for (let i = 0; i < 200 && api.heartbeats.length < 2; i++) await vi.advanceTimersByTimeAsync(50);
    expect(api.heartbeats[1]!.key).toBe(api.heartbeats[0]!.key);
    await vi.advanceTimersByTimeAsync(9600 - Date.now() + h.t0);
    api.heartbeats[1]!.answer.resolve(api.grant());
    await settle();
    // The spawn was tried (and failed) and the due beat went out in the same step: the failed spawn ends
    // the lease's advance, so that beat is cancelled, not left running into the report.
    expect(api.heartbeatCalls).toHaveLength(3);
    expect(api.stopCalls).toHaveLength(1);
    expect(h.result()).toBeNull();
    expect((api.heartbeatCalls[2]!.opts.signal as CallCancel).aborted).toBe(true);
    gate.resolve();
    await vi.advanceTimersByTimeAsync(100);
    expect(h.result()).toMatchObject({ outcome: 'spawn_failed', exitCode: 127 });
  });
});

describe('ItemLease: the item timer is set only when the wake time moves (bench/README)', () => {
  it('twice per beat (the attempt\'s cutoff, then the next beat); not for an event that leaves the wake time', async () => {
    const api = new ScriptedApi();
    const h = harness(api);
    void h.l.start();
    await settle();
    const armed = vi.spyOn(globalThis, 'setTimeout');
    try {
      await vi.advanceTimersByTimeAsync(9405); // the second beat: sent, accepted at once
      expect(api.heartbeats).toHaveLength(2);
      expect(armed).toHaveBeenCalledTimes(2);
      armed.mockClear();
      // A finish request changes no wake time (the job runs on, heartbeats go on): the timer stays.
      h.l.shutdownFinish();
      expect(h.named('shutdown_finish')).toHaveLength(1);
      expect(armed).not.toHaveBeenCalled();
      expect(vi.getTimerCount()).toBe(1);
      await vi.advanceTimersByTimeAsync(9900);
      expect(api.heartbeats).toHaveLength(3);
      expect(armed).toHaveBeenCalledTimes(2);
    } finally {
      armed.mockRestore();
    }
    h.l.shutdownNow();
  });
});
