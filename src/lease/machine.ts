/**
 * The lease state machine of one claimed work item: pure (no I/O, no clock reads, no randomness of its
 * own). `transition(state, event)` returns the next state and the actions the driver must carry out.
 * Every rule of spec §5 is one named step below; test/unit/lease-machine.test.ts has one test per rule.
 *
 * Time is monotonic milliseconds, always passed in. The deadline is anchored at the SEND time of the
 * last accepted heartbeat (the server granted the ttl as of the request, not as of our reading of the
 * reply), so a slow reply can only make us more careful, never less.
 */
import type { ApiErrorKind } from '../api/errors.js';
import { NO_HEARTBEAT, type WorkState } from '../api/types.js';
import type { JobExit, Outcome } from './outcome.js';
import { type FenceTimes, backoffMs, effectiveFenceGraceMs, fenceMarginMs, heartbeatIntervalMs, reapAllowanceMs } from './timing.js';

export interface LeaseSettings {
  desiredTtlSeconds: number;
  heartbeatFraction: number;
  stopSignal: NodeJS.Signals;
  /** Configured grace between the stop signal and SIGKILL. */
  graceMs: number;
  /** Null: derived from the granted ttl (see timing.ts). */
  fenceMarginMs: number | null;
  onShutdown: 'stop' | 'release';
  workerId: string;
}

/** Randomness is injected so that transitions are reproducible in tests. */
export interface LeaseDeps {
  random(): number;
  newId(): string;
}

export type Phase = 'acquiring' | 'held' | 'stopping' | 'reporting' | 'done';

/** Why the job is being stopped while the lease is still ours: a graceful drain. */
type DrainReason = 'drained' | 'shutdown';
/** Why the lease is no longer (or maybe no longer) ours. */
type LossReason = 'lease_lost' | 'stopped_by_server' | 'self_fenced';

export interface HeartbeatReply {
  lastHeartbeat: string;
  leaseExtended: boolean;
  state: WorkState;
  ttlSeconds: number;
  requestId?: string;
}

export interface HeartbeatFailure {
  kind: ApiErrorKind;
  message: string;
  status?: number;
  retryAfterMs?: number;
  requestId?: string;
}

export type LeaseEvent =
  | { type: 'start'; at: number }
  | { type: 'heartbeat_accepted'; at: number; attemptId: string; reply: HeartbeatReply }
  | { type: 'heartbeat_failed'; at: number; attemptId: string; error: HeartbeatFailure }
  | { type: 'tick'; at: number }
  | { type: 'job_started'; at: number; pid: number }
  | { type: 'spawn_failed'; at: number; code: number; message: string }
  /** The job's whole process group is gone (not merely the leader). */
  | { type: 'job_exited'; at: number; exit: JobExit; oomKilled?: boolean }
  | { type: 'shutdown'; at: number }
  /** SIGTERM/SIGINT with LEASE_KEEPER_SHUTDOWN=finish: the job may end by itself. */
  | { type: 'shutdown_finish'; at: number }
  | { type: 'shutdown_now'; at: number }
  | { type: 'reported'; at: number };

export type LeaseAction =
  | {
      type: 'send_heartbeat';
      attemptId: string;
      precondition: string;
      idempotencyKey: string;
      desiredTtlSeconds: number;
      /** Monotonic time at which the machine abandons this attempt (never later than the deadline); it wakes then. */
      cutoffAt: number;
      attempt: number;
    }
  | { type: 'abort_heartbeat' }
  | { type: 'spawn_job' }
  | { type: 'signal_job'; signal: NodeJS.Signals; reason: Outcome }
  | { type: 'kill_job'; reason: Outcome }
  | { type: 'report'; outcome: Outcome; metadata: Record<string, string>; stop: boolean }
  | { type: 'abort_report' }
  | { type: 'finish'; outcome: Outcome; exit: JobExit | null; fatal: 'auth' | 'config' | null; detail: string | null }
  | { type: 'log'; level: 'debug' | 'info' | 'warn' | 'error'; event: string; fields: Record<string, unknown> };

interface InFlight {
  attemptId: string;
  idempotencyKey: string;
  precondition: string;
  sentAt: number;
  cutoffAt: number;
  attempt: number;
}

export interface LeaseState {
  phase: Phase;
  started: boolean;
  startedAt: number;
  /** 'NO_HEARTBEAT', then the last accepted `last_heartbeat`, byte for byte. */
  precondition: string;
  /** Idempotency-Key of the current exchange: one per precondition, reused by its retries. */
  exchangeKey: string | null;
  /** Send time of the current exchange's first attempt: the earliest moment the server may have applied it. */
  exchangeSentAt: number | null;
  /** Attempts made for the current precondition. */
  attempts: number;
  inFlight: InFlight | null;
  /** When the next attempt (a scheduled beat or a retry) is due; null while one is in flight. */
  nextBeatAt: number | null;
  grantedTtlMs: number | null;
  intervalMs: number | null;
  lastAcceptedSentAt: number | null;
  /** Local lease deadline: send time of the last accepted heartbeat + granted ttl. */
  deadline: number | null;
  /** Give up acquiring (first heartbeat never accepted) at this time. */
  acquireBy: number;
  serverState: WorkState | null;
  leaseHeld: boolean;
  loss: LossReason | null;
  drain: DrainReason | null;
  fatal: 'auth' | 'config' | null;
  job: 'none' | 'spawning' | 'running' | 'exited';
  signaledAt: number | null;
  killedAt: number | null;
  exit: JobExit | null;
  spawnError: string | null;
  /** The kernel killed a process of the job at its memory limit (cgroup memory.events oom_kill). */
  oomKilled: boolean;
  /** While reporting: the report must be on the wire before this (the lease's end less the margin); null once given up. */
  reportBy: number | null;
  lastResult: string | null;
}

export function initialState(): LeaseState {
  return {
    phase: 'acquiring',
    started: false,
    startedAt: 0,
    precondition: NO_HEARTBEAT,
    exchangeKey: null,
    exchangeSentAt: null,
    attempts: 0,
    inFlight: null,
    nextBeatAt: null,
    grantedTtlMs: null,
    intervalMs: null,
    lastAcceptedSentAt: null,
    deadline: null,
    acquireBy: 0,
    serverState: null,
    leaseHeld: false,
    loss: null,
    drain: null,
    fatal: null,
    job: 'none',
    signaledAt: null,
    killedAt: null,
    exit: null,
    spawnError: null,
    oomKilled: false,
    reportBy: null,
    lastResult: null,
  };
}

/**
 * The step's own copy. Field by field rather than `{ ...prev }`: one object shape for every copy keeps
 * V8 on its fast path (the spread fell to its slow, per-property path: ~3 % of the keeper's CPU at 1000
 * leases). The return type makes the compiler list any field added to LeaseState but missing here.
 */
function copyState(p: LeaseState): LeaseState {
  return {
    phase: p.phase,
    started: p.started,
    startedAt: p.startedAt,
    precondition: p.precondition,
    exchangeKey: p.exchangeKey,
    exchangeSentAt: p.exchangeSentAt,
    attempts: p.attempts,
    inFlight: p.inFlight === null ? null : { ...p.inFlight },
    nextBeatAt: p.nextBeatAt,
    grantedTtlMs: p.grantedTtlMs,
    intervalMs: p.intervalMs,
    lastAcceptedSentAt: p.lastAcceptedSentAt,
    deadline: p.deadline,
    acquireBy: p.acquireBy,
    serverState: p.serverState,
    leaseHeld: p.leaseHeld,
    loss: p.loss,
    drain: p.drain,
    fatal: p.fatal,
    job: p.job,
    signaledAt: p.signaledAt,
    killedAt: p.killedAt,
    exit: p.exit === null ? null : { code: p.exit.code, signal: p.exit.signal },
    spawnError: p.spawnError,
    oomKilled: p.oomKilled,
    reportBy: p.reportBy,
    lastResult: p.lastResult,
  };
}

export interface Transition {
  state: LeaseState;
  actions: LeaseAction[];
}

/** A step of the machine: it mutates its own copy of the state and collects actions. */
class Step {
  readonly s: LeaseState;
  readonly actions: LeaseAction[] = [];
  constructor(
    prev: LeaseState,
    readonly settings: LeaseSettings,
    readonly deps: LeaseDeps,
  ) {
    this.s = copyState(prev);
  }
  log(level: 'debug' | 'info' | 'warn' | 'error', event: string, fields: Record<string, unknown> = {}): void {
    this.actions.push({ type: 'log', level, event, fields });
  }
}

export function transition(prev: LeaseState, event: LeaseEvent, settings: LeaseSettings, deps: LeaseDeps): Transition {
  const step = new Step(prev, settings, deps);
  if (prev.phase === 'done') return { state: prev, actions: [] };
  if (!prev.started && event.type !== 'start') return { state: prev, actions: [] };
  switch (event.type) {
    case 'start':
      onStart(step, event.at);
      break;
    case 'heartbeat_accepted':
      if (!matchesInFlight(step.s, event.attemptId)) return { state: prev, actions: [] };
      onAccepted(step, event.at, event.reply);
      break;
    case 'heartbeat_failed':
      if (!matchesInFlight(step.s, event.attemptId)) return { state: prev, actions: [] };
      onFailed(step, event.at, event.error);
      break;
    case 'tick':
      break;
    case 'job_started':
      step.s.job = 'running';
      step.log('info', 'job_started', { pid: event.pid });
      // The lease may have been lost, or a drain asked for, while the job was being spawned.
      if (step.s.loss !== null) signalJob(step, event.at, step.s.loss);
      else if (step.s.drain !== null) signalJob(step, event.at, step.s.drain);
      break;
    case 'spawn_failed':
      onSpawnFailed(step, event.at, event.code, event.message);
      break;
    case 'job_exited':
      onJobExited(step, event.at, event.exit, event.oomKilled === true);
      break;
    case 'shutdown':
      onShutdown(step, event.at);
      break;
    case 'shutdown_finish':
      onShutdownFinish(step, event.at);
      break;
    case 'shutdown_now':
      onShutdownNow(step, event.at);
      break;
    case 'reported':
      if (step.s.phase === 'reporting') finish(step);
      break;
  }
  advance(step, event.at);
  return { state: step.s, actions: step.actions };
}

function matchesInFlight(s: LeaseState, attemptId: string): boolean {
  return s.inFlight !== null && s.inFlight.attemptId === attemptId;
}

// ---- Rule: the first heartbeat (NO_HEARTBEAT) is sent BEFORE the job is spawned. ----
function onStart(step: Step, at: number): void {
  const s = step.s;
  s.started = true;
  s.startedAt = at;
  s.acquireBy = at + step.settings.desiredTtlSeconds * 1000;
  s.nextBeatAt = at;
}

// ---- Rule: an accepted heartbeat moves the deadline and re-derives the schedule. ----
function onAccepted(step: Step, at: number, reply: HeartbeatReply): void {
  const s = step.s;
  const sent = s.inFlight!;
  s.inFlight = null;

  // Rule: `lease_extended: false` means the lease is lost, whatever the state says.
  if (!reply.leaseExtended) {
    s.lastResult = 'not_extended';
    loseLease(step, at, 'lease_lost', 'lease_extended: false');
    return;
  }
  if (reply.state === 'stopped') {
    s.lastResult = 'stopped';
    loseLease(step, at, 'stopped_by_server', 'heartbeat reply state stopped');
    return;
  }
  if (reply.state !== 'active' && reply.state !== 'stopping') {
    // queued/starting after an accepted beat: the server does not see us as the holder.
    s.lastResult = 'unexpected_state';
    loseLease(step, at, 'lease_lost', `heartbeat reply state ${reply.state}`);
    return;
  }

  const firstLease = !s.leaseHeld;
  const previousTtlMs = s.grantedTtlMs;
  s.leaseHeld = true;
  s.precondition = reply.lastHeartbeat; // carried forward byte for byte
  // Rule: the lease dates from the exchange's FIRST attempt, not the one that got the reply. With the same
  // Idempotency-Key the server may have applied an earlier attempt whose reply was lost and replay that
  // result to the retry: the server's lease then started at that earlier send (or later, never earlier).
  const leaseFrom = s.exchangeSentAt ?? sent.sentAt;
  s.exchangeKey = null;
  s.exchangeSentAt = null;
  s.attempts = 0;
  s.serverState = reply.state;
  s.grantedTtlMs = reply.ttlSeconds * 1000;
  s.intervalMs = heartbeatIntervalMs(s.grantedTtlMs, step.settings.heartbeatFraction);
  s.lastAcceptedSentAt = leaseFrom;
  s.deadline = leaseFrom + s.grantedTtlMs;
  // Rule: next beat at fraction × granted ttl after the last accepted one, minus up to 10% jitter.
  s.nextBeatAt = leaseFrom + s.intervalMs - step.deps.random() * 0.1 * s.intervalMs;
  s.lastResult = reply.state === 'stopping' ? 'stopping' : 'accepted';

  const fields = {
    expected: sent.precondition,
    last_heartbeat: reply.lastHeartbeat,
    ttl_seconds: reply.ttlSeconds,
    state: reply.state,
    lease_left_ms: Math.round(s.deadline - at),
    next_in_ms: Math.round(s.nextBeatAt - at),
    request_id: reply.requestId,
  };
  if (firstLease) {
    step.log('info', 'lease_acquired', fields);
  } else if (sent.attempt > 1 || previousTtlMs !== s.grantedTtlMs) {
    // Worth an operator's attention: the lease recovered after retries, or the server changed the ttl.
    step.log('info', 'heartbeat', { ...fields, attempt: sent.attempt });
  } else {
    // Routine beats at debug: at 1000 leases, info lines would be ~300 per second, past journald's
    // default rate limit (10 000 per 30 s), which would then drop the lines that matter.
    step.log('debug', 'heartbeat', fields);
  }

  // Rule: `state: stopping` is a graceful stop: signal the job, keep heartbeating while it drains.
  if (reply.state === 'stopping' && s.drain === null && s.loss === null) {
    s.drain = 'drained';
    step.log('info', 'stop_requested', { request_id: reply.requestId });
    if (s.job === 'none') {
      // Never spawned: nothing to drain, confirm the stop straight away.
      startReport(step);
    } else {
      signalJob(step, at, 'drained');
    }
  }
}

// ---- Rule: failures are sorted by kind: retry transient ones, stop on 412/409, end on fatal ones. ----
function onFailed(step: Step, at: number, error: HeartbeatFailure): void {
  const s = step.s;
  s.inFlight = null;
  s.lastResult = error.kind;
  const fields = { status: error.status, kind: error.kind, request_id: error.requestId };
  switch (error.kind) {
    case 'transient':
    case 'malformed': {
      // Same precondition, same Idempotency-Key: the server may have applied the lost attempt.
      const delay = Math.max(backoffMs(s.attempts, s.intervalMs, step.deps.random()), error.retryAfterMs ?? 0);
      s.nextBeatAt = at + delay;
      step.log('warn', 'heartbeat_retry', {
        ...fields,
        error: error.message,
        attempt: s.attempts,
        retry_in_ms: Math.round(delay),
        lease_left_ms: s.deadline === null ? null : Math.round(s.deadline - at),
      });
      return;
    }
    case 'lease_lost':
      loseLease(step, at, 'lease_lost', error.message, fields);
      return;
    case 'conflict':
    case 'not_found':
      loseLease(step, at, 'stopped_by_server', error.message, fields);
      return;
    case 'auth':
      s.fatal = 'auth';
      loseLease(step, at, 'lease_lost', error.message, fields);
      return;
    case 'bad_request':
      s.fatal = 'config';
      loseLease(step, at, 'lease_lost', error.message, fields);
      return;
  }
}

// ---- Rule: 412 / lease_extended false → lost; 409 → stopped. Stop the job at once; no more beats. ----
function loseLease(step: Step, at: number, reason: LossReason, detail: string, fields: Record<string, unknown> = {}): void {
  const s = step.s;
  s.loss ??= reason;
  s.leaseHeld = false;
  s.nextBeatAt = null;
  if (s.inFlight) {
    s.inFlight = null;
    step.actions.push({ type: 'abort_heartbeat' });
  }
  step.log(reason === 'stopped_by_server' ? 'info' : 'warn', reason === 'stopped_by_server' ? 'stopped_by_server' : 'lease_lost', {
    reason: detail,
    ...fields,
  });
  if (s.job === 'running') signalJob(step, at, reason);
  else if (s.job === 'none') finish(step); // never spawned: nothing to stop, nothing to report
}

function signalJob(step: Step, at: number, reason: Outcome): void {
  const s = step.s;
  if (s.signaledAt !== null || s.job !== 'running') return;
  s.signaledAt = at;
  s.phase = 'stopping';
  step.actions.push({ type: 'signal_job', signal: step.settings.stopSignal, reason });
}

function onSpawnFailed(step: Step, at: number, code: number, message: string): void {
  const s = step.s;
  s.job = 'exited';
  s.exit = { code, signal: null };
  s.spawnError = message;
  step.log('error', 'spawn_failed', { code, error: message });
  afterJob(step, at);
}

function onJobExited(step: Step, at: number, exit: JobExit, oomKilled: boolean): void {
  const s = step.s;
  s.job = 'exited';
  s.exit = exit;
  s.oomKilled = oomKilled;
  step.log('info', 'job_exited', { exit_code: exit.code, signal: exit.signal, ...(oomKilled ? { oom_killed: true } : {}) });
  afterJob(step, at);
}

/** Rule: once the job's group is gone, stop heartbeating and report (only while the lease is ours). */
function afterJob(step: Step, _at: number): void {
  const s = step.s;
  s.nextBeatAt = null;
  if (s.inFlight) {
    s.inFlight = null;
    step.actions.push({ type: 'abort_heartbeat' });
  }
  if (s.loss !== null || !s.leaseHeld) {
    // Lost, stopped or self-fenced: the item is not ours to report on.
    finish(step);
    return;
  }
  startReport(step);
}

function startReport(step: Step): void {
  const s = step.s;
  s.phase = 'reporting';
  s.nextBeatAt = null;
  if (s.inFlight) {
    s.inFlight = null;
    step.actions.push({ type: 'abort_heartbeat' });
  }
  const outcome = outcomeOf(s);
  const metadata: Record<string, string> = { outcome, worker_id: step.settings.workerId };
  if (s.exit?.code != null) metadata.exit_code = String(s.exit.code);
  if (s.exit?.signal) metadata.signal = s.exit.signal;
  if (s.oomKilled) metadata.oom_killed = 'true';
  const stop = !(outcome === 'shutdown' && step.settings.onShutdown === 'release');
  s.reportBy = s.deadline === null || s.grantedTtlMs === null ? null : s.deadline - fenceMarginMs(s.grantedTtlMs, step.settings.fenceMarginMs);
  step.actions.push({ type: 'report', outcome, metadata, stop });
}

function finish(step: Step): void {
  const s = step.s;
  s.phase = 'done';
  s.nextBeatAt = null;
  const outcome = outcomeOf(s);
  step.actions.push({ type: 'finish', outcome, exit: s.exit, fatal: s.fatal, detail: s.spawnError });
}

/** One outcome per item: a loss beats a drain, a drain beats the job's own exit. */
export function outcomeOf(s: LeaseState): Outcome {
  if (s.spawnError !== null) return 'spawn_failed';
  if (s.loss !== null) return s.loss;
  if (s.drain !== null) return s.drain;
  if (s.exit === null) return 'lease_lost'; // never acquired
  // Rule: a job the kernel cut at its memory limit failed, whatever its leader's exit code says.
  if (s.oomKilled) return 'failed';
  return s.exit.code === 0 ? 'completed' : 'failed';
}

// ---- Rule: SIGTERM/SIGINT to the keeper drains every job as for `stopping`, heartbeats go on. ----
function onShutdown(step: Step, at: number): void {
  const s = step.s;
  if (s.drain !== null || s.phase === 'reporting') return;
  s.drain = 'shutdown';
  step.log('info', 'shutdown_drain', {});
  if (s.job === 'running') {
    signalJob(step, at, 'shutdown');
  } else if (s.job === 'none') {
    // Not started yet: do not start it. Hand the item back according to on-shutdown.
    if (s.leaseHeld) startReport(step);
    else {
      abortInFlight(step);
      finish(step);
    }
  }
}

// ---- Rule: LEASE_KEEPER_SHUTDOWN=finish keeps the lease while a started job ends by itself: no stop signal,
// heartbeats go on, and the item is reported with the job's own outcome. A job not started yet is not
// started: that item is handed back as by a drain. A lost lease or a server stop still stops the job, and a
// later `shutdown` (the second signal) drains it. ----
function onShutdownFinish(step: Step, at: number): void {
  const s = step.s;
  if (s.drain !== null || s.phase === 'reporting') return;
  if (s.job === 'none') {
    onShutdown(step, at);
    return;
  }
  step.log('info', 'shutdown_finish', {});
}

// ---- Rule: a second signal kills the groups and ends at once, without reporting. ----
function onShutdownNow(step: Step, at: number): void {
  const s = step.s;
  s.drain ??= 'shutdown';
  abortInFlight(step);
  if (s.job === 'running' && s.killedAt === null) {
    s.signaledAt ??= at;
    s.killedAt = at;
    step.actions.push({ type: 'kill_job', reason: 'shutdown' });
  }
  finish(step);
}

function abortInFlight(step: Step): void {
  const s = step.s;
  s.nextBeatAt = null;
  if (s.inFlight) {
    s.inFlight = null;
    step.actions.push({ type: 'abort_heartbeat' });
  }
}

/** The clock-driven part: fence, escalate, send due beats, give up acquiring. Runs after every event. */
function advance(step: Step, now: number): void {
  const s = step.s;
  // Rule: the report (metadata, stop) goes out only while the lease is ours. Once it has run out the
  // server may hand the item to another worker, and a late stop would end that worker's run: give up.
  if (s.phase === 'reporting' && s.reportBy !== null && now >= s.reportBy) {
    s.reportBy = null;
    step.log('warn', 'report_abandoned', { lease_left_ms: s.deadline === null ? null : Math.round(s.deadline - now) });
    step.actions.push({ type: 'abort_report' });
  }
  if (s.phase === 'done' || s.phase === 'reporting') return;

  // Rule: each attempt is cut off no later than the deadline. Past its cutoff it has failed (a timeout):
  // abort it, and retry with the same precondition. A reply that arrives later no longer matches.
  if (s.inFlight !== null && now >= s.inFlight.cutoffAt) {
    const waitedMs = Math.round(s.inFlight.cutoffAt - s.inFlight.sentAt);
    step.actions.push({ type: 'abort_heartbeat' });
    onFailed(step, now, { kind: 'transient', message: `no reply within ${waitedMs} ms` });
  }

  const fence = fenceTimes(s, step.settings);

  // Rule: a lease that ran out before the job was started (a first reply too late to start it, then no
  // beat accepted in time) is gone: nothing to stop, nothing to report. Without this the item waited
  // for a beat that the deadline no longer allowed, forever (test/unit/fuzz-lease-machine.test.ts).
  if (s.job === 'none' && s.leaseHeld && s.loss === null && s.deadline !== null && now >= s.deadline) {
    loseLease(step, now, 'self_fenced', 'the lease ran out before the job could be started');
    return;
  }

  // Rule: self-fencing. No heartbeat accepted in time → stop signal at deadline - grace - margin.
  if (s.job === 'running' && s.signaledAt === null && fence && now >= fence.signalAt) {
    s.loss ??= 'self_fenced';
    step.log('warn', 'fenced', {
      step: 'signal',
      lease_left_ms: Math.round(s.deadline! - now),
      margin_ms: fence.marginMs,
    });
    signalJob(step, now, 'self_fenced');
  }
  // Rule: SIGKILL the group at min(signal + grace, deadline - margin), whatever the stop reason.
  if (s.job === 'running' && s.signaledAt !== null && s.killedAt === null) {
    const killAt = killTime(s, step.settings, fence);
    if (now >= killAt) {
      s.killedAt = now;
      const reason = outcomeOf(s);
      if (fence && now >= fence.killAt) {
        s.loss ??= 'self_fenced';
        step.log('warn', 'fenced', { step: 'kill', lease_left_ms: s.deadline === null ? null : Math.round(s.deadline - now) });
      } else {
        step.log('warn', 'grace_expired', { grace_ms: step.settings.graceMs });
      }
      step.actions.push({ type: 'kill_job', reason });
    }
  }

  // Rule: the job starts only once the lease is held, and only while the lease leaves room to run
  // (a first reply that came back too late to be useful waits for the next accepted beat).
  if (s.job === 'none' && s.leaseHeld && s.loss === null && s.drain === null && s.serverState === 'active' && fence) {
    if (now < fence.signalAt) {
      s.job = 'spawning';
      s.phase = 'held';
      step.actions.push({ type: 'spawn_job' });
    }
  }

  // Acquiring: give up when no first heartbeat was accepted within the desired ttl.
  if (!s.leaseHeld && s.loss === null && s.phase === 'acquiring' && s.inFlight === null && now >= s.acquireBy) {
    s.loss = 'lease_lost';
    step.log('error', 'lease_not_acquired', { waited_ms: Math.round(now - s.startedAt) });
    finish(step);
    return;
  }

  // Rule: one heartbeat in flight; send the due one with the carried precondition.
  // A fenced job may still be draining: beats go on, and if one is accepted the kill waits for the grace.
  const lossAllowsBeats = s.loss === null || s.loss === 'self_fenced';
  const beating = lossAllowsBeats && s.job !== 'exited' && (s.leaseHeld || s.phase === 'acquiring');
  if (beating && s.inFlight === null && s.nextBeatAt !== null && now >= s.nextBeatAt) {
    const cutoffAt = attemptCutoff(s, now);
    if (cutoffAt <= now) {
      // Past the deadline: no attempt can count any more; the fence owns the job now.
      s.nextBeatAt = null;
      return;
    }
    if (s.exchangeKey === null) {
      s.exchangeKey = step.deps.newId();
      s.exchangeSentAt = now;
    }
    s.attempts += 1;
    s.inFlight = {
      attemptId: step.deps.newId(),
      idempotencyKey: s.exchangeKey,
      precondition: s.precondition,
      sentAt: now,
      cutoffAt,
      attempt: s.attempts,
    };
    s.nextBeatAt = null;
    step.actions.push({
      type: 'send_heartbeat',
      attemptId: s.inFlight.attemptId,
      precondition: s.precondition,
      idempotencyKey: s.exchangeKey,
      desiredTtlSeconds: step.settings.desiredTtlSeconds,
      cutoffAt,
      attempt: s.attempts,
    });
  }
}

/** Each attempt ends no later than the deadline (or the acquire limit), and after at most one interval. */
function attemptCutoff(s: LeaseState, now: number): number {
  const limit = s.deadline ?? s.acquireBy;
  const perAttempt = Math.max(250, s.intervalMs ?? 5000);
  return Math.min(limit, now + perAttempt);
}

function fenceTimes(s: LeaseState, settings: LeaseSettings): FenceTimes | null {
  if (s.deadline === null || s.grantedTtlMs === null || s.intervalMs === null) return null;
  const marginMs = fenceMarginMs(s.grantedTtlMs, settings.fenceMarginMs);
  const graceMs = effectiveFenceGraceMs(s.grantedTtlMs, s.intervalMs, marginMs, settings.graceMs);
  const killAt = s.deadline - marginMs - reapAllowanceMs(marginMs);
  return { signalAt: killAt - graceMs, killAt, marginMs, graceMs };
}

function killTime(s: LeaseState, settings: LeaseSettings, fence: FenceTimes | null): number {
  const byGrace = s.signaledAt! + settings.graceMs;
  return fence ? Math.min(byGrace, fence.killAt) : byGrace;
}

/** The next moment the machine must be woken with a `tick`, or null when only an event can move it. */
export function wakeAt(s: LeaseState, settings: LeaseSettings): number | null {
  if (s.phase === 'reporting') return s.reportBy;
  if (s.phase === 'done') return null;
  const times: number[] = [];
  const fence = fenceTimes(s, settings);
  if (s.nextBeatAt !== null && s.inFlight === null) times.push(s.nextBeatAt);
  if (s.inFlight !== null) times.push(s.inFlight.cutoffAt);
  if (s.job === 'none' && s.leaseHeld && s.loss === null && s.deadline !== null) times.push(s.deadline);
  if (s.job === 'running' && s.signaledAt === null && fence) times.push(fence.signalAt);
  if (s.job === 'running' && s.signaledAt !== null && s.killedAt === null) times.push(killTime(s, settings, fence));
  // Not while an attempt is in flight: its answer (or its cutoff, which is <= acquireBy) is the next event,
  // and a wake time that cannot change anything would spin the driver's timer.
  if (s.phase === 'acquiring' && !s.leaseHeld && s.loss === null && s.inFlight === null) times.push(s.acquireBy);
  return times.length === 0 ? null : Math.min(...times);
}
