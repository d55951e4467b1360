/**
 * Fakes for the worker layer (src/worker/): a control plane answered by the test (WorkApi's surface the
 * worker uses) and jobs the test ends by hand (ItemLease's JobGroup). No sockets, no processes: the
 * worker's own decisions and I/O order are what the tests see.
 */
import pino from 'pino';
import type { CallOptions, WorkApi } from '../../src/api/client.js';
import { onAbort, type CallSignal } from '../../src/api/cancel.js';
import { ApiError, TransientError } from '../../src/api/errors.js';
import type { Reply, WorkHeartbeat, WorkItem } from '../../src/api/types.js';
import type { JobSpec } from '../../src/job/index.js';
import type { LeaseSettings } from '../../src/lease/machine.js';
import type { JobExit } from '../../src/lease/outcome.js';
import type { Logger } from '../../src/observe/logger.js';
import type { JobGroup } from '../../src/worker/item-lease.js';
import { wireItem } from './wire.js';

export const silentLog = (): Logger => pino({ level: 'silent' }) as Logger;

export const settings = (over: Partial<LeaseSettings> = {}): LeaseSettings => ({
  desiredTtlSeconds: 30,
  heartbeatFraction: 0.33,
  stopSignal: 'SIGTERM',
  graceMs: 5000,
  fenceMarginMs: null,
  onShutdown: 'stop',
  workerId: 'w-test',
  ...over,
});

export interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
  settled: boolean;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const d: Deferred<T> = {
    promise: new Promise<T>((res, rej) => {
      resolve = res;
      reject = rej;
    }),
    resolve: (v) => {
      d.settled = true;
      resolve(v);
    },
    reject: (e) => {
      d.settled = true;
      reject(e);
    },
    settled: false,
  };
  d.promise.catch(() => {});
  return d;
}

const reply = <T>(value: T): Reply<T> => ({ value, requestId: 'req-fake', status: 200 });

export interface HeartbeatCall {
  workId: string;
  expected: string;
  key: string;
  answer: Deferred<Reply<WorkHeartbeat>>;
}

export interface AckCall {
  workId: string;
  answer: Deferred<Reply<WorkItem>>;
}

/** A call that rejects with a TransientError when its signal aborts (as the real client does). */
function abortable<T>(d: Deferred<T>, signal: CallSignal | undefined): Promise<T> {
  if (signal) {
    const off = onAbort(signal, () => {
      if (!d.settled) d.reject(new TransientError('aborted by the caller'));
    });
    d.promise.then(off, off);
  }
  return d.promise;
}

/**
 * The control plane. Heartbeats, acks and polls wait for the test unless `auto` answers them: auto
 * heartbeats are accepted at once with a fresh last_heartbeat, auto acks succeed, polls hand out the
 * queued items (or wait for one). Every call is recorded.
 */
export class FakeApi {
  readonly heartbeats: HeartbeatCall[] = [];
  readonly acks: AckCall[] = [];
  readonly polls: { answer: Deferred<Reply<WorkItem | null>> }[] = [];
  readonly stops: string[] = [];
  readonly metadata: { workId: string; metadata: Record<string, string | null> }[] = [];
  /** Items handed out by poll, oldest first. */
  readonly queue: WorkItem[] = [];
  auto = { heartbeat: true, ack: true, poll: true };
  ttlSeconds = 30;
  private beat = 0;
  private waitingPolls: Deferred<Reply<WorkItem | null>>[] = [];
  /** Called on every call, before it is answered (the tests' checkpoint). */
  onCall: (kind: 'poll' | 'ack' | 'heartbeat' | 'update_metadata' | 'stop', workId?: string) => void = () => {};

  asApi(): WorkApi {
    return this as unknown as WorkApi;
  }

  enqueue(...ids: string[]): void {
    for (const id of ids) this.queue.push(wireItem({ id, state: 'queued' }) as unknown as WorkItem);
    while (this.queue.length > 0 && this.waitingPolls.length > 0) this.waitingPolls.shift()!.resolve(reply(this.queue.shift()!));
  }

  accepted(state: 'active' | 'stopping' = 'active'): Reply<WorkHeartbeat> {
    this.beat++;
    const last = `2026-12-05T12:00:${String(Math.floor(this.beat / 1000) % 60).padStart(2, '0')}.${String(this.beat % 1_000_000).padStart(6, '0')}Z`;
    return reply({ type: 'work_heartbeat', last_heartbeat: last, lease_extended: true, state, ttl_seconds: this.ttlSeconds });
  }

  heartbeat(workId: string, p: { expectedLastHeartbeat: string; idempotencyKey: string }, opts: CallOptions = {}): Promise<Reply<WorkHeartbeat>> {
    this.onCall('heartbeat', workId);
    const answer = deferred<Reply<WorkHeartbeat>>();
    this.heartbeats.push({ workId, expected: p.expectedLastHeartbeat, key: p.idempotencyKey, answer });
    if (this.auto.heartbeat) answer.resolve(this.accepted());
    return abortable(answer, opts.signal);
  }

  /** A successful ack's reply. */
  ackReply(workId: string): Reply<WorkItem> {
    return reply(wireItem({ id: workId, state: 'starting' }) as unknown as WorkItem);
  }

  ack(workId: string, _p: unknown, opts: CallOptions = {}): Promise<Reply<WorkItem>> {
    this.onCall('ack', workId);
    const answer = deferred<Reply<WorkItem>>();
    this.acks.push({ workId, answer });
    if (this.auto.ack) answer.resolve(this.ackReply(workId));
    return abortable(answer, opts.signal);
  }

  poll(_p: unknown, opts: CallOptions = {}): Promise<Reply<WorkItem | null>> {
    this.onCall('poll');
    const answer = deferred<Reply<WorkItem | null>>();
    this.polls.push({ answer });
    if (this.auto.poll) {
      const next = this.queue.shift();
      if (next) answer.resolve(reply(next));
      else this.waitingPolls.push(answer);
    }
    if (opts.signal) {
      onAbort(opts.signal, () => {
        if (!answer.settled) answer.reject(new ApiError('transient', 'poll aborted'));
      });
    }
    return answer.promise;
  }

  updateMetadata(workId: string, metadata: Record<string, string | null>): Promise<Reply<WorkItem>> {
    this.onCall('update_metadata', workId);
    this.metadata.push({ workId, metadata });
    return Promise.resolve(reply(wireItem({ id: workId, state: 'active' }) as unknown as WorkItem));
  }

  stop(workId: string): Promise<Reply<WorkItem>> {
    this.onCall('stop', workId);
    this.stops.push(workId);
    return Promise.resolve(reply(wireItem({ id: workId, state: 'stopped' }) as unknown as WorkItem));
  }
}

/** A job the test ends: `leaderExits` (the leader only), `groupEmpties` (the last member). */
export class FakeJob implements JobGroup {
  private static nextPid = 70_000;
  readonly pid = FakeJob.nextPid++;
  readonly pgid = this.pid;
  readonly parentDeathSignal = true;
  readonly signals: string[] = [];
  private readonly exit = deferred<JobExit>();
  private readonly gone = deferred<void>();
  readonly exited = this.exit.promise;
  readonly empty = this.gone.promise;

  constructor(readonly spec: JobSpec) {}

  get running(): boolean {
    return !this.gone.settled;
  }

  leaderExits(code = 0): void {
    if (!this.exit.settled) this.exit.resolve({ code, signal: null });
  }

  groupEmpties(): void {
    this.gone.resolve();
  }

  /** Leader and every member gone at once. */
  finish(code = 0): void {
    this.leaderExits(code);
    this.groupEmpties();
  }

  interrupt(signal: NodeJS.Signals): void {
    this.signals.push(signal);
  }

  kill(): void {
    this.signals.push('SIGKILL');
    if (!this.exit.settled) this.exit.resolve({ code: null, signal: 'SIGKILL' });
    this.groupEmpties();
  }

  stop(opts: { signal: NodeJS.Signals }): Promise<unknown> {
    this.signals.push(`stop:${opts.signal}`);
    return this.empty;
  }
}

/** The job starter seam: records every job it "starts". */
export function fakeJobs(): { jobs: FakeJob[]; start: (spec: JobSpec) => FakeJob } {
  const jobs: FakeJob[] = [];
  return {
    jobs,
    start: (spec) => {
      const j = new FakeJob(spec);
      jobs.push(j);
      return j;
    },
  };
}
