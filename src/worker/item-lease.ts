/**
 * Drives the pure lease machine for one claimed item: feeds it events (replies, timer ticks, job exits,
 * signals) and carries out its actions (heartbeats, spawn, signals, report). All decisions stay in
 * src/lease/machine.ts; this file only does the I/O, in the order the machine asked for it.
 */
import { randomUUID } from 'node:crypto';
import { constants as osConstants } from 'node:os';
import type { Readable } from 'node:stream';
import { CallCancel } from '../api/cancel.js';
import { ApiError } from '../api/errors.js';
import type { WorkApi } from '../api/client.js';
import type { WorkItem } from '../api/types.js';
import { ProcessGroupContainment, SpawnError, type Containment, type JobAccounting, type JobOutput, type JobSpec, type JobStdio, type StopOptions } from '../job/index.js';
import type { Clock } from '../lease/clock.js';
import {
  type HeartbeatFailure,
  type LeaseAction,
  type LeaseEvent,
  type LeaseSettings,
  type LeaseState,
  initialState,
  transition,
  wakeAt,
} from '../lease/machine.js';
import { EXIT, type JobExit, type Outcome, exitCodeFor } from '../lease/outcome.js';
import type { Logger } from '../observe/logger.js';
import type { KeeperEvents, LeaseView } from '../observe/snapshot.js';
import { jobEnvironment } from './job-env.js';
import { retryTransient, sleep } from './retry.js';

export interface ItemContext {
  api: WorkApi;
  settings: LeaseSettings;
  command: string[];
  /** Every token the keeper has held (it grows on rotation): no variable holding one reaches the job. */
  tokens: readonly string[];
  baseEnv: NodeJS.ProcessEnv;
  log: Logger;
  clock: Clock;
  events: KeeperEvents;
  /** How jobs are started and contained (built once from the configuration); default: the process group. */
  containment?: Containment;
  /** Where the job's stdout/stderr go; default inherited. */
  output?: Pick<JobOutput, 'mode' | 'open'>;
  random?: () => number;
  /** Starts the job (throws SpawnError when it cannot run); default `containment.start`. Tests pass a fake. */
  startJob?: StartJob;
}

/**
 * What ItemLease needs of a running job: a ContainedJob (src/job/containment.ts) is one; tests pass fakes
 * through `startJob`.
 */
export interface JobGroup {
  readonly pid: number;
  readonly parentDeathSignal: boolean;
  /** The leader exited. */
  readonly exited: Promise<JobExit>;
  /** Nothing of the job is alive any more. */
  readonly empty: Promise<void>;
  /** Where the job runs, for log lines (pgid, cgroup). */
  readonly where?: Readonly<Record<string, string | number>>;
  interrupt(signal: NodeJS.Signals): void;
  kill(): void;
  stop(opts: StopOptions): Promise<unknown>;
  /** After `empty`: what the job used (cgroup containment), else null. */
  accounting?(): JobAccounting | null;
  /** The read ends of its stdout and stderr when started with pipes there (JobSpec.stdio), else null or absent. */
  readonly stdout?: Readable | null;
  readonly stderr?: Readable | null;
}

export type StartJob = (spec: JobSpec) => JobGroup;

/** The fallback when no containment is given (tests, embedders): today's process group. */
const defaultContainments = new Map<string, Containment>();
function defaultContainment(workerId: string): Containment {
  let c = defaultContainments.get(workerId);
  if (c === undefined) defaultContainments.set(workerId, (c = new ProcessGroupContainment(workerId)));
  return c;
}

export interface ItemResult {
  workId: string;
  outcome: Outcome;
  exit: JobExit | null;
  /** A fatal control-plane answer (401/403 → auth, 400 → config) that should end the daemon. */
  fatal: 'auth' | 'config' | null;
  /** The `--once` exit code for this item (spec §6). */
  exitCode: number;
}

export class ItemLease {
  private state: LeaseState = initialState();
  private timer: NodeJS.Timeout | null = null;
  /** The wake time the timer is set for: most events leave it unchanged, and then the timer stays. */
  private timerAt: number | null = null;
  private heartbeatAbort: CallCancel | null = null;
  private readonly reportAbort = new AbortController();
  private job: JobGroup | null = null;
  private readonly queue: LeaseEvent[] = [];
  /** What the ended job used (cgroup containment), for the report and the item_finished line. */
  private usage: JobAccounting | null = null;
  private dispatching = false;
  private resolveDone!: (r: ItemResult) => void;
  readonly done: Promise<ItemResult>;
  private readonly log: Logger;

  constructor(
    readonly item: WorkItem,
    private readonly ctx: ItemContext,
  ) {
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    this.log = ctx.log.child({ work_id: item.id, session_id: item.data.id });
  }

  /** Takes the lease (first heartbeat), then runs the job; resolves `done` exactly once. */
  start(): Promise<ItemResult> {
    this.dispatch({ type: 'start', at: this.ctx.clock.now() });
    return this.done;
  }

  /** Keeper got SIGTERM/SIGINT: drain the job while heartbeats go on. */
  shutdown(): void {
    this.dispatch({ type: 'shutdown', at: this.ctx.clock.now() });
  }

  /** Keeper got SIGTERM/SIGINT with LEASE_KEEPER_SHUTDOWN=finish: keep the lease while the job ends by itself. */
  shutdownFinish(): void {
    this.dispatch({ type: 'shutdown_finish', at: this.ctx.clock.now() });
  }

  /** A second signal: kill the job's group and end without reporting. */
  shutdownNow(): void {
    this.reportAbort.abort();
    this.dispatch({ type: 'shutdown_now', at: this.ctx.clock.now() });
  }

  view(): LeaseView {
    const now = this.ctx.clock.now();
    const s = this.state;
    return {
      workId: this.item.id,
      sessionId: this.item.data.id,
      phase: viewPhase(s),
      leaseLeftMs: s.deadline === null || !s.leaseHeld ? null : s.deadline - now,
      sinceAcceptedMs: s.lastAcceptedSentAt === null ? null : now - s.lastAcceptedSentAt,
      intervalMs: s.intervalMs,
      lastHeartbeatResult: s.lastResult,
    };
  }

  /** Events are applied one at a time, in order, even when an action produces an event synchronously. */
  private dispatch(event: LeaseEvent): void {
    this.queue.push(event);
    if (this.dispatching) return;
    this.dispatching = true;
    try {
      for (let next = this.queue.shift(); next; next = this.queue.shift()) {
        const t = transition(this.state, next, this.ctx.settings, { random: this.random, newId: randomUUID });
        this.state = t.state;
        for (const action of t.actions) this.perform(action);
      }
    } finally {
      this.dispatching = false;
    }
    this.schedule();
  }

  private readonly random = (): number => (this.ctx.random ?? Math.random)();

  /** One timer per item, always set to the machine's next wake time (including the cutoff of an attempt in flight). */
  private schedule(): void {
    const at = wakeAt(this.state, this.ctx.settings);
    if (at === this.timerAt && (at === null || this.timer !== null)) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = at;
    if (at === null) return;
    const delay = Math.max(0, at - this.ctx.clock.now());
    this.timer = setTimeout(this.onTimer, Math.ceil(delay));
  }

  private readonly onTimer = (): void => {
    this.timer = null;
    this.timerAt = null;
    this.dispatch({ type: 'tick', at: this.ctx.clock.now() });
  };

  private perform(action: LeaseAction): void {
    switch (action.type) {
      case 'send_heartbeat':
        this.sendHeartbeat(action);
        return;
      case 'abort_heartbeat':
        this.heartbeatAbort?.abort();
        this.heartbeatAbort = null;
        return;
      case 'spawn_job':
        this.spawnJob();
        return;
      case 'signal_job':
        this.log.info({ signal: action.signal, reason: action.reason, ...this.job?.where }, 'job_signaled');
        if (action.reason === 'self_fenced') this.ctx.events.fence('signal');
        this.signalJob(() => this.job?.interrupt(action.signal));
        return;
      case 'kill_job':
        this.log.warn({ reason: action.reason, ...this.job?.where }, 'job_killed');
        if (action.reason === 'self_fenced') this.ctx.events.fence('kill');
        this.signalJob(() => this.job?.kill());
        return;
      case 'abort_report':
        this.reportAbort.abort();
        return;
      case 'report':
        void this.report(action.outcome, action.metadata, action.stop);
        return;
      case 'finish':
        this.finish(action.outcome, action.exit, action.fatal, action.detail);
        return;
      case 'log':
        this.log[action.level](action.fields, action.event);
        return;
    }
  }

  /** EPERM (a job that changed its user) must not break the keeper: log it; the fence and systemd remain. */
  private signalJob(send: () => unknown): void {
    try {
      send();
    } catch (err) {
      this.log.error({ err, ...this.job?.where }, 'job_signal_failed');
    }
  }

  private sendHeartbeat(action: Extract<LeaseAction, { type: 'send_heartbeat' }>): void {
    const abort = new CallCancel();
    this.heartbeatAbort = abort;
    const sentAt = this.ctx.clock.now();
    // No timer of the client's own: the machine wakes at `cutoffAt` and aborts the attempt (abort_heartbeat).
    this.ctx.api
      .heartbeat(
        this.item.id,
        { expectedLastHeartbeat: action.precondition, desiredTtlSeconds: action.desiredTtlSeconds, idempotencyKey: action.idempotencyKey },
        { signal: abort, timeoutMs: null },
      )
      .then(
        (reply) => {
          const v = reply.value;
          this.ctx.events.heartbeat(v.lease_extended ? (v.state === 'stopping' ? 'stopping' : 'accepted') : 'not_extended', this.ctx.clock.now() - sentAt);
          this.dispatch({
            type: 'heartbeat_accepted',
            at: this.ctx.clock.now(),
            attemptId: action.attemptId,
            reply: { lastHeartbeat: v.last_heartbeat, leaseExtended: v.lease_extended, state: v.state, ttlSeconds: v.ttl_seconds, requestId: reply.requestId },
          });
        },
        (err: unknown) => {
          const error = failureOf(err);
          this.ctx.events.heartbeat(error.kind, this.ctx.clock.now() - sentAt);
          this.dispatch({ type: 'heartbeat_failed', at: this.ctx.clock.now(), attemptId: action.attemptId, error });
        },
      );
  }

  private spawnJob(): void {
    const output = this.ctx.output;
    if (output === undefined || output.mode === 'inherit') {
      this.runJob(null);
      return;
    }
    // Journal streams are connected (and prefix pipes prepared) before the spawn; the machine waits in
    // 'spawning' meanwhile, and handles a loss or drain that happens then once job_started arrives.
    void output.open(this.item.id).then((stdio) => {
      if (this.state.phase === 'done') {
        // A second signal ended the item while the streams were being opened: start nothing.
        stdio.started({ stdout: null, stderr: null });
        void stdio.close();
        return;
      }
      this.runJob(stdio);
    });
  }

  private runJob(stdio: JobStdio | null): void {
    const env = jobEnvironment(this.ctx.baseEnv, this.item, this.ctx.tokens);
    for (const [k, v] of Object.entries(stdio?.env ?? {})) {
      if (v === undefined) delete env[k];
      else env[k] = v;
    }
    const containment = this.ctx.containment ?? defaultContainment(this.ctx.settings.workerId);
    const spec: JobSpec = { command: this.ctx.command, env, name: this.item.id, ...(stdio ? { stdio: stdio.stdio } : {}) };
    try {
      const job = this.ctx.startJob ? this.ctx.startJob(spec) : containment.start(spec);
      stdio?.started({ stdout: job.stdout ?? null, stderr: job.stderr ?? null });
      this.job = job;
      if (!job.parentDeathSignal) {
        this.log.warn({}, 'no_parent_death_signal: setpriv not found; if the keeper is SIGKILLed outside systemd the job keeps running');
      }
      this.dispatch({ type: 'job_started', at: this.ctx.clock.now(), pid: job.pid });
      // "Stopped" means nothing of the job runs any more, not merely that the leader exited. The job's
      // output does not decide that: a process that escaped the job may hold its pipes open forever.
      void job.exited.then(async (exit) => {
        if (await leftBehind(job)) this.stopLeftovers(job, exit);
        await job.empty;
        if (stdio) this.closeOutput(stdio);
        const usage = job.accounting?.() ?? null;
        this.usage = usage;
        if (usage !== null) this.ctx.events.jobUsage?.(usage);
        this.dispatch({ type: 'job_exited', at: this.ctx.clock.now(), exit, oomKilled: usage?.oomKilled === true });
      });
    } catch (err) {
      if (stdio) {
        stdio.started({ stdout: null, stderr: null });
        void stdio.close();
      }
      const code = err instanceof SpawnError ? err.code : 126;
      const message = err instanceof Error ? err.message : String(err);
      this.dispatch({ type: 'spawn_failed', at: this.ctx.clock.now(), code, message });
    }
  }

  /** Copies what the job's pipes still hold (bounded), then lets go of them; the item does not wait for it. */
  private closeOutput(stdio: JobStdio): void {
    void stdio.close().then((cut) => {
      if (cut) this.log.warn({ mode: stdio.mode }, "job_output_cut: the job's output pipes stayed open after its processes were gone (held by a process outside the job?) or the keeper's own output was too slow; the rest was dropped");
    });
  }

  /**
   * The leader exited but processes of the job live on (a daemonized helper, a backgrounded step): they
   * are part of the job, and the job may not outlive the lease, so they get the stop signal and grace.
   * Until they are gone the machine still sees a running job, so its fence still applies and heartbeats go on.
   */
  private stopLeftovers(job: JobGroup, exit: JobExit): void {
    this.log.warn({ ...job.where, exit_code: exit.code, signal: exit.signal }, 'job_left_processes: stopping the rest of the job');
    job.stop({ signal: this.ctx.settings.stopSignal, graceMs: this.ctx.settings.graceMs }).catch((err: unknown) => {
      this.log.error({ err, ...job.where }, 'job_group_stop_failed');
    });
  }

  /** Writes the outcome into the item's metadata, then stops it (and confirms if it was `stopping`). */
  private async report(outcome: Outcome, machineMetadata: Record<string, string>, stop: boolean): Promise<void> {
    const metadata = { ...machineMetadata, ...usageMetadata(this.usage) };
    const signal = this.reportAbort.signal;
    const onRetry = (err: unknown, attempt: number): void =>
      this.log.warn({ err, attempt }, 'report_retry');
    try {
      await retryTransient(() => this.ctx.api.updateMetadata(this.item.id, metadata, { signal, timeoutMs: 10_000 }), { retries: 4, signal, onRetry });
    } catch (err) {
      this.log.warn({ err }, 'metadata_not_written');
    }
    if (stop && !signal.aborted) {
      try {
        let reply = await retryTransient(() => this.ctx.api.stop(this.item.id, {}, { signal, timeoutMs: 10_000 }), { retries: 6, signal, onRetry });
        if (reply.value.state === 'stopping') {
          // The first stop moved active → stopping; the second confirms stopping → stopped.
          reply = await retryTransient(() => this.ctx.api.stop(this.item.id, {}, { signal, timeoutMs: 10_000 }), { retries: 6, signal, onRetry });
        }
        this.log.info({ state: reply.value.state, request_id: reply.requestId, outcome }, 'stopped');
      } catch (err) {
        this.log.error({ err, outcome }, 'stop_not_reported');
      }
    } else if (!stop) {
      this.log.info({ outcome }, 'released');
    }
    this.dispatch({ type: 'reported', at: this.ctx.clock.now() });
  }

  /** Runs inside dispatch(), whose schedule() then clears the timer: the machine has no wake time once done. */
  private finish(outcome: Outcome, exit: JobExit | null, fatal: 'auth' | 'config' | null, detail: string | null): void {
    this.heartbeatAbort?.abort();
    const exitCode = fatal === 'auth' ? EXIT.auth : fatal === 'config' ? EXIT.config : exitCodeFor(outcome, exit, signalNumber);
    this.ctx.events.outcome(outcome);
    this.log.info({ outcome, exit_code: exit?.code ?? null, signal: exit?.signal ?? null, detail, fatal, ...usageFields(this.usage) }, 'item_finished');
    this.resolveDone({ workId: this.item.id, outcome, exit, fatal, exitCode });
  }
}

/**
 * The machine's phase in the snapshot's words: a stopping job is `draining` while its lease is kept
 * (heartbeats must go on), `fencing` while the lease may be slipping away, `ending` once it is lost.
 */
function viewPhase(s: LeaseState): LeaseView['phase'] {
  switch (s.phase) {
    case 'acquiring':
    case 'held':
      return s.phase;
    case 'stopping':
      if (s.loss === null) return 'draining';
      return s.loss === 'self_fenced' ? 'fencing' : 'ending';
    case 'reporting':
    case 'done':
      return 'ending';
  }
}

/** True when processes of the job are still alive a moment after the leader exited. */
async function leftBehind(job: JobGroup): Promise<boolean> {
  const settled = await Promise.race([job.empty.then(() => true), sleep(100).then(() => false)]);
  return !settled;
}

/** cpu_seconds and memory_peak_bytes for the item_finished line, where the containment measured them. */
function usageFields(usage: JobAccounting | null): Record<string, number> {
  const fields: Record<string, number> = {};
  if (usage?.cpuSeconds != null) fields.cpu_seconds = usage.cpuSeconds;
  if (usage?.memoryPeakBytes != null) fields.memory_peak_bytes = usage.memoryPeakBytes;
  return fields;
}

/** The same, as item metadata (strings). oom_killed comes from the machine, with the outcome it implies. */
function usageMetadata(usage: JobAccounting | null): Record<string, string> {
  return Object.fromEntries(Object.entries(usageFields(usage)).map(([k, v]) => [k, String(v)]));
}

function signalNumber(name: NodeJS.Signals): number {
  return osConstants.signals[name] ?? 0;
}

/** Any failure of a heartbeat call, as the machine sees it. A non-ApiError is a bug: retried, and logged. */
function failureOf(err: unknown): HeartbeatFailure {
  if (err instanceof ApiError) {
    return { kind: err.kind, message: err.message, status: err.status, retryAfterMs: err.retryAfterMs, requestId: err.requestId };
  }
  return { kind: 'transient', message: err instanceof Error ? `${err.name}: ${err.message}` : String(err) };
}
