/**
 * The lease machine at the edges of its rules: events that must change nothing, answers of every kind
 * on the first beat and later ones, signals at each phase, and the exact moments the clock rules fire.
 * (lease-machine.test.ts has one test per rule; these pin what each rule must NOT do as well.)
 */
import { describe, expect, it } from 'vitest';
import { type LeaseAction, transition, wakeAt } from '../../src/lease/machine.js';
import { Harness, ofType } from './lease-harness.js';

const deps = { random: () => 0.5, newId: () => 'x' };
const withoutLogs = (acts: LeaseAction[]) => acts.filter((a) => a.type !== 'log');

describe('lease machine: events that change nothing', () => {
  it('a finished item ignores every later event', () => {
    const h = new Harness();
    h.start();
    h.fail({ kind: 'lease_lost', status: 412 });
    expect(h.state.phase).toBe('done');
    const done = h.state;
    for (const event of [
      { type: 'shutdown', at: 1 },
      { type: 'shutdown_now', at: 1 },
      { type: 'job_exited', at: 1, exit: { code: 0, signal: null } },
      { type: 'tick', at: 50_000 },
    ] as const) {
      const t = transition(done, event, h.settings, deps);
      expect(t.state).toBe(done);
      expect(t.actions).toEqual([]);
    }
  });

  it('a tick with nothing due yields no action at all', () => {
    const h = new Harness();
    h.acquire();
    expect(h.advanceBy(10)).toEqual([]);
  });

  it('an answer to an attempt that is not the one in flight is ignored, success or failure', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    const stale = h.inFlight();
    h.fail({ kind: 'transient' });
    h.advanceTo(h.state.nextBeatAt!);
    const current = h.inFlight();
    expect(current.attemptId).not.toBe(stale.attemptId);
    const before = h.state;
    const late = transition(before, { type: 'heartbeat_accepted', at: h.now, attemptId: stale.attemptId, reply: { lastHeartbeat: 'x', leaseExtended: true, state: 'active', ttlSeconds: 10 } }, h.settings, deps);
    expect(late.state).toBe(before);
    expect(late.actions).toEqual([]);
    const lateFailure = transition(before, { type: 'heartbeat_failed', at: h.now, attemptId: stale.attemptId, error: { kind: 'lease_lost', message: '412' } }, h.settings, deps);
    expect(lateFailure.state).toBe(before);
    expect(lateFailure.actions).toEqual([]);
  });

  it('"reported" before a report was asked for changes nothing', () => {
    const h = new Harness();
    h.acquire();
    expect(h.reported()).toEqual([]);
    expect(h.state.phase).toBe('held');
  });

  it('a stop confirmed before the job started: past the deadline the report is only given up, the item not finished', () => {
    const h = new Harness();
    h.start();
    h.accept({ state: 'stopping' }); // report at once, job never started
    expect(h.state.phase).toBe('reporting');
    expect(withoutLogs(h.advanceBy(30_000))).toEqual([{ type: 'abort_report' }]);
    expect(h.state.phase).toBe('reporting');
  });

  it('once the report is out, time alone does nothing until the lease runs out', () => {
    const h = new Harness();
    h.acquire();
    h.jobExited({ code: 0, signal: null });
    expect(h.state.phase).toBe('reporting');
    const reportBy = wakeAt(h.state, h.settings)!;
    expect(reportBy).toBe(h.state.deadline! - 1000);
    expect(h.advanceTo(reportBy - 1)).toEqual([]);
    expect(withoutLogs(h.advanceTo(reportBy))).toEqual([{ type: 'abort_report' }]);
    expect(wakeAt(h.state, h.settings)).toBeNull();
    expect(h.advanceBy(60_000)).toEqual([]);
  });
});

describe('lease machine: what a reply says', () => {
  it('the last result of each answer, as the status endpoint shows it', () => {
    const results: Array<[Parameters<Harness['accept']>[0], string]> = [
      [{}, 'accepted'],
      [{ state: 'stopping' }, 'stopping'],
      [{ leaseExtended: false }, 'not_extended'],
      [{ state: 'stopped' }, 'stopped'],
      [{ state: 'starting' }, 'unexpected_state'],
    ];
    for (const [reply, result] of results) {
      const h = new Harness();
      h.acquire();
      h.advanceTo(h.state.nextBeatAt!);
      h.accept(reply);
      expect(h.state.lastResult, JSON.stringify(reply)).toBe(result);
    }
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    h.fail({ kind: 'transient' });
    expect(h.state.lastResult).toBe('transient');
  });

  it('a reply in state stopped is a server stop; queued or starting is a lost lease', () => {
    const outcome = (state: 'stopped' | 'queued' | 'starting') => {
      const h = new Harness();
      h.acquire();
      h.advanceTo(h.state.nextBeatAt!);
      const acts = h.accept({ state });
      expect(ofType(acts, 'signal_job')).toHaveLength(1);
      expect(h.state.leaseHeld).toBe(false);
      h.jobExited({ code: 143, signal: null });
      return ofType(h.actions, 'finish')[0]!.outcome;
    };
    expect(outcome('stopped')).toBe('stopped_by_server');
    expect(outcome('queued')).toBe('lease_lost');
    expect(outcome('starting')).toBe('lease_lost');
  });

  it('404 on a heartbeat: the item is gone, stopped by the server', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    expect(ofType(h.fail({ kind: 'not_found', status: 404 }), 'signal_job')).toEqual([{ type: 'signal_job', signal: 'SIGTERM', reason: 'stopped_by_server' }]);
    h.jobExited({ code: 143, signal: null });
    expect(ofType(h.actions, 'finish')).toMatchObject([{ outcome: 'stopped_by_server', fatal: null }]);
  });

  it('401 ends with the lease lost and fatal auth; 400 with the lease lost and fatal config', () => {
    for (const [kind, fatal] of [
      ['auth', 'auth'],
      ['bad_request', 'config'],
    ] as const) {
      const h = new Harness();
      h.acquire();
      h.advanceTo(h.state.nextBeatAt!);
      expect(ofType(h.fail({ kind }), 'signal_job')).toHaveLength(1);
      h.jobExited({ code: 143, signal: null });
      expect(ofType(h.actions, 'finish')).toMatchObject([{ outcome: 'lease_lost', fatal }]);
      expect(ofType(h.actions, 'report')).toHaveLength(0);
    }
  });

  it('state stopping on the first reply: no job is started, the stop is confirmed at once', () => {
    const h = new Harness();
    h.start();
    const acts = h.accept({ state: 'stopping' });
    expect(ofType(acts, 'spawn_job')).toHaveLength(0);
    expect(ofType(acts, 'signal_job')).toHaveLength(0);
    expect(ofType(acts, 'report')).toEqual([{ type: 'report', outcome: 'drained', stop: true, metadata: { outcome: 'drained', worker_id: 'w-1' } }]);
  });

  it('a second stopping reply does not ask for the stop again', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    h.accept({ state: 'stopping' });
    h.advanceTo(h.state.nextBeatAt!);
    const again = h.accept({ state: 'stopping' });
    expect(ofType(again, 'log').map((l) => l.event)).toEqual(['heartbeat']);
    expect(ofType(h.actions, 'signal_job')).toHaveLength(1);
  });

  it('a job that exits 0 completed; non-zero failed', () => {
    for (const [code, outcome] of [
      [0, 'completed'],
      [1, 'failed'],
    ] as const) {
      const h = new Harness();
      h.acquire();
      const acts = h.jobExited({ code, signal: null });
      expect(ofType(acts, 'report')[0]).toMatchObject({ outcome, stop: true });
      h.reported();
      expect(ofType(h.actions, 'finish')).toEqual([{ type: 'finish', outcome, exit: { code, signal: null }, fatal: null, detail: null }]);
    }
  });

  it('a spawn failure exits with its code and no signal', () => {
    const h = new Harness();
    h.start();
    h.accept();
    h.spawnFailed();
    expect(h.state.job).toBe('exited');
    h.reported();
    expect(ofType(h.actions, 'finish')[0]!.exit).toEqual({ code: 127, signal: null });
  });
});

describe('lease machine: stopping the job once', () => {
  it('the job is signalled once, whatever comes after the first reason', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    h.accept({ state: 'stopping' });
    expect(h.state.phase).toBe('stopping');
    h.advanceTo(h.state.nextBeatAt!);
    h.fail({ kind: 'lease_lost', status: 412 });
    h.shutdown();
    expect(ofType(h.actions, 'signal_job')).toHaveLength(1);
  });

  it('a lease lost while the job is being spawned: no signal until it runs, then one', () => {
    const h = new Harness();
    h.start();
    h.accept();
    expect(h.state.job).toBe('spawning');
    h.advanceTo(h.state.nextBeatAt!);
    expect(ofType(h.fail({ kind: 'lease_lost', status: 412 }), 'signal_job')).toHaveLength(0);
    expect(h.state.phase).not.toBe('stopping');
    expect(ofType(h.jobStarted(), 'signal_job')).toEqual([{ type: 'signal_job', signal: 'SIGTERM', reason: 'lease_lost' }]);
  });

  it('a fenced job that exits while its beat is in flight: the beat is aborted, nothing reported', () => {
    const h = new Harness({ graceMs: 10_000 });
    h.acquire();
    // Every attempt fails at once until the fence signals the job.
    // Bounded, so that a machine that never fences fails here instead of spinning.
    for (let i = 0; i < 100 && h.state.signaledAt === null; i++) {
      h.advanceTo(h.state.nextBeatAt ?? h.now + 10);
      if (h.state.inFlight && h.state.signaledAt === null) h.fail({ kind: 'transient' });
    }
    if (!h.state.inFlight) h.advanceTo(h.state.nextBeatAt!);
    expect(h.state.inFlight).not.toBeNull();
    const acts = h.jobExited({ code: null, signal: 'SIGTERM' });
    expect(withoutLogs(acts)).toEqual([
      { type: 'abort_heartbeat' },
      { type: 'finish', outcome: 'self_fenced', exit: { code: null, signal: 'SIGTERM' }, fatal: null, detail: null },
    ]);
  });

  it('a job that exits with no beat in flight aborts nothing', () => {
    const h = new Harness();
    h.acquire();
    expect(h.state.inFlight).toBeNull();
    expect(ofType(h.jobExited({ code: 0, signal: null }), 'abort_heartbeat')).toEqual([]);
  });
});

describe('lease machine: signals to the keeper', () => {
  it('a second SIGTERM while draining changes nothing', () => {
    const h = new Harness();
    h.acquire();
    h.shutdown();
    expect(h.shutdown()).toEqual([]);
  });

  it('SIGTERM while the report is out changes nothing', () => {
    const h = new Harness();
    h.acquire();
    h.jobExited({ code: 0, signal: null });
    expect(h.shutdown()).toEqual([]);
    h.reported();
    expect(ofType(h.actions, 'finish')[0]!.outcome).toBe('completed');
  });

  it('SIGTERM while acquiring: the attempt is aborted and the item ends as shut down, never started', () => {
    const h = new Harness();
    h.start();
    const acts = h.shutdown();
    expect(withoutLogs(acts)).toEqual([{ type: 'abort_heartbeat' }, { type: 'finish', outcome: 'shutdown', exit: null, fatal: null, detail: null }]);
  });

  it('SIGTERM with the lease held but the job not started (first reply late): reported with its beat aborted', () => {
    const h = new Harness();
    h.start();
    h.now = 9_500;
    h.accept({ ttlSeconds: 10 }); // too late to start the job
    h.advanceTo(h.state.nextBeatAt!);
    expect(h.state.inFlight).not.toBeNull();
    expect(h.state.job).toBe('none');
    const acts = h.shutdown();
    // The lease dates from the first send (0): at 9 500 it is within the margin of its end, so the report
    // is given up as soon as it starts (the item may be handed out again by the time it lands).
    expect(withoutLogs(acts)).toEqual([
      { type: 'abort_heartbeat' },
      { type: 'report', outcome: 'shutdown', stop: true, metadata: { outcome: 'shutdown', worker_id: 'w-1' } },
      { type: 'abort_report' },
    ]);
  });

  it('SIGTERM while the job is being spawned: it is signalled as soon as it runs', () => {
    const h = new Harness();
    h.start();
    h.accept();
    expect(withoutLogs(h.shutdown())).toEqual([]);
    expect(ofType(h.jobStarted(), 'signal_job')).toEqual([{ type: 'signal_job', signal: 'SIGTERM', reason: 'shutdown' }]);
  });

  it('on-shutdown=release: a job that ends by itself is still reported with a stop', () => {
    const h = new Harness({ onShutdown: 'release' });
    h.acquire();
    expect(ofType(h.jobExited({ code: 0, signal: null }), 'report')[0]).toMatchObject({ outcome: 'completed', stop: true });
  });

  it('a second signal alone: the job is killed, its beat aborted, the item ends as shut down', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    h.now += 5;
    const acts = h.shutdownNow();
    expect(withoutLogs(acts)).toEqual([
      { type: 'abort_heartbeat' },
      { type: 'kill_job', reason: 'shutdown' },
      { type: 'finish', outcome: 'shutdown', exit: null, fatal: null, detail: null },
    ]);
    expect(h.state.signaledAt).toBe(h.now);
    expect(h.state.killedAt).toBe(h.now);
  });

  it('a second signal keeps the time of an earlier stop signal, and kills nothing that is not running', () => {
    const h = new Harness();
    h.acquire();
    h.shutdown();
    const signaledAt = h.now;
    h.now += 100;
    h.shutdownNow();
    expect(h.state.signaledAt).toBe(signaledAt);

    const idle = new Harness();
    idle.start();
    expect(ofType(idle.shutdownNow(), 'kill_job')).toEqual([]);
  });

  it('a second signal after the fence already killed the job does not kill it again', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(9000); // network gone: fenced and killed
    if (h.state.inFlight) h.fail({ kind: 'transient' });
    expect(ofType(h.actions, 'kill_job')).toHaveLength(1);
    expect(ofType(h.shutdownNow(), 'kill_job')).toEqual([]);
    expect(ofType(h.actions, 'finish')[0]!.outcome).toBe('self_fenced');
  });
});

describe('lease machine: more than one reason to stop', () => {
  it('a stop requested after the fence signalled the job: no stop_requested, the item stays self-fenced', () => {
    const h = new Harness({ graceMs: 10_000 });
    h.acquire();
    h.advanceTo(6550); // the network is gone: fenced (signal)
    expect(h.state.loss).toBe('self_fenced');
    if (!h.state.inFlight) h.advanceTo(h.state.nextBeatAt!);
    const acts = h.accept({ state: 'stopping' });
    expect(ofType(acts, 'log').map((l) => l.event)).not.toContain('stop_requested');
    expect(h.state.drain).toBeNull();
  });

  it('a stop requested while the job is being spawned: it is signalled once it runs, not before', () => {
    const h = new Harness();
    h.start();
    h.accept();
    h.advanceTo(h.state.nextBeatAt!);
    expect(ofType(h.accept({ state: 'stopping' }), 'signal_job')).toEqual([]);
    expect(ofType(h.jobStarted(), 'signal_job')).toEqual([{ type: 'signal_job', signal: 'SIGTERM', reason: 'drained' }]);
  });

  it('a drain whose heartbeats then fail is killed by the fence, and the item counts as self-fenced', () => {
    const h = new Harness({ graceMs: 10_000 });
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    h.accept({ state: 'stopping' }); // drain: signal now, full grace while beats are accepted
    h.advanceTo(20_000); // no beat accepted any more: the fence kills at deadline - margin
    expect(ofType(h.actions, 'kill_job')).toHaveLength(1);
    expect(h.state.loss).toBe('self_fenced');
    h.jobExited({ code: null, signal: 'SIGKILL' });
    expect(ofType(h.actions, 'finish')[0]!.outcome).toBe('self_fenced');
    expect(h.state.job).toBe('exited');
  });

  it('a fenced job still being reaped at the deadline is not reported as a lease that ran out before it started', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(10_000);
    expect(ofType(h.actions, 'kill_job')).toHaveLength(1);
    expect(ofType(h.actions, 'log').filter((l) => l.event === 'lease_lost')).toEqual([]);
  });

  it('an OOM kill is in the job_exited line; an ordinary exit has no oom_killed field', () => {
    const oom = new Harness();
    oom.acquire();
    expect(ofType(oom.jobExited({ code: 0, signal: null }, true), 'log')[0]!.fields).toEqual({ exit_code: 0, signal: null, oom_killed: true });
    const plain = new Harness();
    plain.acquire();
    expect(ofType(plain.jobExited({ code: 0, signal: null }), 'log')[0]!.fields).toEqual({ exit_code: 0, signal: null });
  });

  it('LEASE_KEEPER_SHUTDOWN=finish with the job running: one info line, no signal; nothing during a drain or a report', () => {
    const h = new Harness();
    h.acquire();
    expect(h.shutdownFinish()).toEqual([{ type: 'log', level: 'info', event: 'shutdown_finish', fields: {} }]);
    const draining = new Harness();
    draining.acquire();
    draining.shutdown();
    expect(draining.shutdownFinish()).toEqual([]);
    const reporting = new Harness();
    reporting.acquire();
    reporting.jobExited({ code: 0, signal: null });
    expect(reporting.shutdownFinish()).toEqual([]);
  });

  it('a second signal with no beat in flight aborts nothing', () => {
    const h = new Harness();
    h.acquire();
    expect(h.state.inFlight).toBeNull();
    expect(ofType(h.shutdownNow(), 'abort_heartbeat')).toEqual([]);
  });
});

describe('lease machine: the exact moments', () => {
  it('a lease that runs out before the job started ends exactly at the deadline', () => {
    const h = new Harness();
    h.start();
    h.now = 9_500;
    h.accept({ ttlSeconds: 10 });
    for (let i = 0; i < 100 && (h.state.inFlight || (h.state.nextBeatAt !== null && h.state.nextBeatAt < 10_000)); i++) {
      if (h.state.inFlight) {
        h.now = Math.min(h.state.inFlight.cutoffAt, 9_999);
        h.fail({ kind: 'transient' });
      } else h.advanceTo(Math.min(h.state.nextBeatAt!, 9_999));
      if (h.now >= 9_999) break;
    }
    h.advanceTo(9_999);
    expect(h.state.phase).not.toBe('done');
    h.advanceTo(10_000);
    expect(h.state.phase).toBe('done');
    expect(ofType(h.actions, 'finish')[0]).toMatchObject({ outcome: 'self_fenced' });
  });

  it('a lease held for a job not started yet wakes the machine at its deadline, even with the next retry later', () => {
    const h = new Harness();
    h.start();
    h.now = 9_000;
    h.accept({ ttlSeconds: 10 }); // deadline 10000, too late to start the job; the next beat goes out at once
    h.now = 9_100;
    h.fail({ kind: 'transient', status: 429, retryAfterMs: 5000 });
    expect(h.state.job).toBe('none');
    expect(h.state.nextBeatAt).toBe(14_100);
    expect(wakeAt(h.state, h.settings)).toBe(10_000);
  });

  it('wake times: the attempt cutoff, the due beat, the fence, the kill', () => {
    const h = new Harness();
    h.start();
    expect(wakeAt(h.state, h.settings)).toBe(h.inFlight().cutoffAt); // acquiring, attempt in flight
    h.now = 100;
    h.fail({ kind: 'transient' });
    expect(wakeAt(h.state, h.settings)).toBe(h.state.nextBeatAt); // retry due before the acquire limit
    h.advanceTo(h.state.nextBeatAt!);
    h.accept({ ttlSeconds: 10 });
    h.jobStarted();
    const fenceAt = wakeAt(h.state, h.settings)!;
    expect(fenceAt).toBe(h.state.nextBeatAt); // the beat comes before the fence
    const quiet = { ...h.state, nextBeatAt: null };
    expect(wakeAt(quiet, h.settings)).toBeGreaterThan(h.state.nextBeatAt!); // only the fence is left
    expect(wakeAt({ ...quiet, signaledAt: quiet.deadline! - 5000, job: 'running' }, h.settings)).toBe(quiet.deadline! - 1000 - 50);
    expect(wakeAt({ ...quiet, signaledAt: 1, killedAt: 2 }, h.settings)).toBeNull();
  });

  it('a lease granted longer than asked for, too late to start the job, is not given up at the acquire limit', () => {
    const h = new Harness({ desiredTtlSeconds: 10 }); // acquire limit 10000
    h.start();
    h.advanceTo(5000); // the first attempt is cut off
    h.advanceTo(h.state.nextBeatAt!);
    h.now = 9_900;
    h.accept({ ttlSeconds: 11 }); // deadline 11000 (from the send at 0): too late to start the job
    expect(h.state.job).toBe('none');
    h.now = 9_950;
    h.fail({ kind: 'transient' }); // the beat sent with the reply fails; its retry is due after the limit
    expect(h.state.nextBeatAt).toBeGreaterThan(10_100);
    h.advanceTo(10_100);
    expect(h.state.phase).toBe('acquiring');
    h.advanceTo(h.state.nextBeatAt!);
    h.now += 50;
    expect(ofType(h.accept({ ttlSeconds: 20 }), 'spawn_job')).toHaveLength(1); // a fresh lease: the job starts
  });

  it('while acquiring, the acquire limit is a wake time even when the next retry is later', () => {
    const h = new Harness({ desiredTtlSeconds: 2 });
    h.start();
    h.now = 100;
    h.fail({ kind: 'transient', status: 429, retryAfterMs: 5000 });
    expect(h.state.nextBeatAt).toBe(5100);
    expect(wakeAt(h.state, h.settings)).toBe(2000);
  });

  it('the wake time never lies in the past while a lease is held', () => {
    const h = new Harness();
    h.acquire();
    for (let i = 0; i < 8; i++) {
      h.advanceTo(h.state.nextBeatAt!);
      h.now += 20;
      h.accept();
      expect(wakeAt(h.state, h.settings)!).toBeGreaterThan(h.now);
    }
  });

  it('the job starts only strictly before the fence would signal it', () => {
    // ttl 10 s: signal at 6550 after a send at 0. A first reply arriving exactly then is too late.
    const late = new Harness();
    late.start();
    late.now = 6550;
    expect(ofType(late.accept({ ttlSeconds: 10 }), 'spawn_job')).toHaveLength(0);
    const inTime = new Harness();
    inTime.start();
    inTime.now = 6549;
    expect(ofType(inTime.accept({ ttlSeconds: 10 }), 'spawn_job')).toHaveLength(1);
    expect(inTime.state.phase).toBe('held');
  });

  it('acquiring gives up exactly at the desired ttl, not before', () => {
    const h = new Harness({ desiredTtlSeconds: 2 });
    h.start();
    h.now = 1999;
    h.fail({ kind: 'transient' });
    expect(h.state.phase).toBe('acquiring');
    h.advanceTo(1999);
    if (h.state.inFlight) h.fail({ kind: 'transient' });
    expect(h.state.phase).toBe('acquiring');
    h.advanceTo(2000);
    if (h.state.inFlight) {
      h.fail({ kind: 'transient' });
    }
    expect(h.state.phase).toBe('done');
  });

  it('a beat due exactly at the deadline is not sent: no attempt can count any more', () => {
    const h = new Harness();
    h.acquire(); // deadline 10000
    const due = { ...h.state, nextBeatAt: 10_000 };
    const atDeadline = transition(due, { type: 'tick', at: 10_000 }, h.settings, deps);
    expect(ofType(atDeadline.actions, 'send_heartbeat')).toEqual([]);
    expect(atDeadline.state.nextBeatAt).toBeNull();
    const before = transition({ ...due, nextBeatAt: 9_999 }, { type: 'tick', at: 9_999 }, h.settings, deps);
    expect(ofType(before.actions, 'send_heartbeat')).toMatchObject([{ cutoffAt: 10_000 }]);
  });
});
