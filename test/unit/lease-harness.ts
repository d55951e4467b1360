/** A tiny driver for the pure lease machine: a fake clock, deterministic ids and randomness. */
import {
  type HeartbeatFailure,
  type HeartbeatReply,
  type LeaseAction,
  type LeaseSettings,
  type LeaseState,
  initialState,
  transition,
  wakeAt,
} from '../../src/lease/machine.js';
import type { JobExit } from '../../src/lease/outcome.js';

export const defaultSettings: LeaseSettings = {
  desiredTtlSeconds: 10,
  heartbeatFraction: 0.33,
  stopSignal: 'SIGTERM',
  graceMs: 10_000,
  fenceMarginMs: null,
  onShutdown: 'stop',
  workerId: 'w-1',
};

export class Harness {
  state: LeaseState = initialState();
  now = 0;
  actions: LeaseAction[] = [];
  private ids = 0;
  random = 0.5;
  readonly settings: LeaseSettings;

  constructor(settings: Partial<LeaseSettings> = {}) {
    this.settings = { ...defaultSettings, ...settings };
  }

  private apply(event: Parameters<typeof transition>[1]): LeaseAction[] {
    const t = transition(this.state, event, this.settings, {
      random: () => this.random,
      newId: () => `id-${++this.ids}`,
    });
    this.state = t.state;
    this.actions.push(...t.actions);
    return t.actions;
  }

  start(): LeaseAction[] {
    return this.apply({ type: 'start', at: this.now });
  }

  /** The heartbeat currently in flight (the last send_heartbeat action not yet answered). */
  inFlight(): Extract<LeaseAction, { type: 'send_heartbeat' }> {
    const sent = [...this.actions].reverse().find((a) => a.type === 'send_heartbeat');
    if (!sent || sent.type !== 'send_heartbeat' || this.state.inFlight?.attemptId !== sent.attemptId) {
      throw new Error('no heartbeat in flight');
    }
    return sent;
  }

  accept(reply: Partial<HeartbeatReply> = {}, lastHeartbeat = `2026-11-28T10:00:00.${String(this.now).padStart(6, '0')}Z`): LeaseAction[] {
    const sent = this.inFlight();
    return this.apply({
      type: 'heartbeat_accepted',
      at: this.now,
      attemptId: sent.attemptId,
      reply: { lastHeartbeat, leaseExtended: true, state: 'active', ttlSeconds: 10, ...reply },
    });
  }

  fail(error: Partial<HeartbeatFailure> & { kind: HeartbeatFailure['kind'] }): LeaseAction[] {
    const sent = this.inFlight();
    return this.apply({ type: 'heartbeat_failed', at: this.now, attemptId: sent.attemptId, error: { message: error.kind, ...error } });
  }

  jobStarted(): LeaseAction[] {
    return this.apply({ type: 'job_started', at: this.now, pid: 4242 });
  }
  jobExited(exit: JobExit, oomKilled = false): LeaseAction[] {
    return this.apply({ type: 'job_exited', at: this.now, exit, ...(oomKilled ? { oomKilled } : {}) });
  }
  spawnFailed(): LeaseAction[] {
    return this.apply({ type: 'spawn_failed', at: this.now, code: 127, message: 'job command "nope" not found' });
  }
  shutdown(): LeaseAction[] {
    return this.apply({ type: 'shutdown', at: this.now });
  }
  shutdownFinish(): LeaseAction[] {
    return this.apply({ type: 'shutdown_finish', at: this.now });
  }
  shutdownNow(): LeaseAction[] {
    return this.apply({ type: 'shutdown_now', at: this.now });
  }
  reported(): LeaseAction[] {
    return this.apply({ type: 'reported', at: this.now });
  }

  /** Move the clock to `to`, ticking at every wake time on the way (as the real driver's timer does). */
  advanceTo(to: number): LeaseAction[] {
    const out: LeaseAction[] = [];
    for (;;) {
      const w = wakeAt(this.state, this.settings);
      if (w === null || w > to) break;
      this.now = Math.max(this.now, w);
      out.push(...this.apply({ type: 'tick', at: this.now }));
      // A wake time that a tick did not move is a machine that cannot progress by time alone: stop here
      // (the liveness tests then see it), rather than spin. wakeAt must never return such a time.
      if (wakeAt(this.state, this.settings) === w) break;
    }
    this.now = Math.max(this.now, to);
    out.push(...this.apply({ type: 'tick', at: this.now }));
    return out;
  }

  advanceBy(ms: number): LeaseAction[] {
    return this.advanceTo(this.now + ms);
  }

  /** Acquire the lease (first beat accepted) and start the job. */
  acquire(reply: Partial<HeartbeatReply> = {}): void {
    this.start();
    this.accept(reply);
    this.jobStarted();
  }
}

export const ofType = <T extends LeaseAction['type']>(actions: LeaseAction[], type: T): Extract<LeaseAction, { type: T }>[] =>
  actions.filter((a): a is Extract<LeaseAction, { type: T }> => a.type === type);
