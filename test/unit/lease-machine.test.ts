import { describe, expect, it } from 'vitest';
import { NO_HEARTBEAT } from '../../src/api/types.js';
import { effectiveFenceGraceMs, fenceMarginMs, reapAllowanceMs } from '../../src/lease/timing.js';
import { wakeAt } from '../../src/lease/machine.js';
import { Harness, ofType } from './lease-harness.js';

describe('lease machine: acquiring', () => {
  it('sends NO_HEARTBEAT first and spawns the job only once the lease is held', () => {
    const h = new Harness();
    const start = h.advanceTo(0);
    h.start();
    const first = ofType(h.actions, 'send_heartbeat');
    expect(start).toEqual([]);
    expect(first).toHaveLength(1);
    expect(first[0]!.precondition).toBe(NO_HEARTBEAT);
    expect(first[0]!.desiredTtlSeconds).toBe(10);
    expect(ofType(h.actions, 'spawn_job')).toHaveLength(0);
    const acc = h.accept();
    expect(ofType(acc, 'spawn_job')).toHaveLength(1);
    expect(h.state.leaseHeld).toBe(true);
  });

  it('a 412 on the first heartbeat ends without spawning and without a stop', () => {
    const h = new Harness();
    h.start();
    const acts = h.fail({ kind: 'lease_lost', status: 412 });
    expect(ofType(acts, 'spawn_job')).toHaveLength(0);
    expect(ofType(acts, 'report')).toHaveLength(0);
    expect(ofType(acts, 'finish')[0]).toMatchObject({ outcome: 'lease_lost' });
  });

  it('gives up acquiring after the desired ttl of transient failures', () => {
    const h = new Harness();
    h.start();
    for (let i = 0; i < 200 && h.state.phase !== 'done'; i++) {
      if (h.state.inFlight) {
        h.now += 100;
        h.fail({ kind: 'transient' });
      } else h.advanceBy(50);
    }
    expect(h.state.phase).toBe('done');
    expect(h.now).toBeGreaterThanOrEqual(10_000);
    expect(ofType(h.actions, 'spawn_job')).toHaveLength(0);
    expect(ofType(h.actions, 'finish')[0]).toMatchObject({ outcome: 'lease_lost' });
  });
});

describe('lease machine: schedule', () => {
  it('deadline = send time of the last accepted beat + granted ttl (not reply time)', () => {
    const h = new Harness();
    h.now = 1000;
    h.start();
    h.now = 1800; // a slow reply: 800 ms in flight
    h.accept({ ttlSeconds: 12 });
    expect(h.state.deadline).toBe(1000 + 12_000);
  });

  it('next beat at fraction × GRANTED ttl minus up to 10% jitter, re-derived from every reply', () => {
    const h = new Harness({ heartbeatFraction: 0.25 });
    h.random = 1; // the most jitter
    h.start();
    h.accept({ ttlSeconds: 20 }); // interval 5000, jitter 500
    expect(h.state.nextBeatAt).toBe(4500);
    h.random = 0;
    h.advanceTo(4500);
    h.accept({ ttlSeconds: 40 }); // interval 10000, sent at 4500
    expect(h.state.intervalMs).toBe(10_000);
    expect(h.state.nextBeatAt).toBe(14_500);
  });

  it('carries each last_heartbeat forward byte for byte as the next precondition', () => {
    const h = new Harness();
    h.start();
    h.accept({}, '2026-07-01T08:15:06.120394Z');
    h.jobStarted();
    h.advanceTo(h.state.nextBeatAt!);
    expect(h.inFlight().precondition).toBe('2026-07-01T08:15:06.120394Z');
    h.accept({}, '2026-07-01T08:15:09.400000+00:00');
    h.advanceTo(h.state.nextBeatAt!);
    expect(h.inFlight().precondition).toBe('2026-07-01T08:15:09.400000+00:00');
  });

  it('keeps one heartbeat in flight: a due beat waits for the outstanding one', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    const sent = ofType(h.actions, 'send_heartbeat').length;
    h.advanceBy(2000); // the reply is slow; nothing else is sent meanwhile
    expect(ofType(h.actions, 'send_heartbeat').length).toBe(sent);
  });

  it('each attempt is cut off no later than the deadline', () => {
    const h = new Harness();
    h.acquire();
    for (let i = 0; i < 50 && h.state.phase === 'held'; i++) {
      h.advanceTo(h.state.nextBeatAt ?? h.now + 10);
      if (h.state.inFlight) {
        expect(h.state.inFlight.cutoffAt).toBeLessThanOrEqual(h.state.deadline!);
        h.now = h.state.inFlight.cutoffAt;
        h.fail({ kind: 'transient' });
      }
    }
    for (const a of ofType(h.actions, 'send_heartbeat').slice(1)) expect(a.cutoffAt).toBeLessThanOrEqual(10_000);
  });
});

describe('lease machine: transient failures', () => {
  it('an attempt with no reply by its cutoff is aborted by the machine and retried with the same key', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    const first = h.inFlight();
    const sentAt = h.now;
    const cutoff = h.state.inFlight!.cutoffAt;
    expect(wakeAt(h.state, h.settings)).toBe(cutoff); // the driver's one timer covers the cutoff
    expect(h.advanceTo(cutoff - 1).filter((a) => a.type === 'abort_heartbeat')).toHaveLength(0);
    const acts = h.advanceTo(cutoff);
    expect(ofType(acts, 'abort_heartbeat')).toHaveLength(1);
    expect(h.state.inFlight).toBeNull();
    expect(ofType(acts, 'log').find((l) => l.event === 'heartbeat_retry')?.fields).toMatchObject({ kind: 'transient', error: `no reply within ${cutoff - sentAt} ms` });
    h.advanceTo(h.state.nextBeatAt!);
    const retry = h.inFlight();
    expect(retry.idempotencyKey).toBe(first.idempotencyKey);
    expect(retry.precondition).toBe(first.precondition);
    expect(retry.attemptId).not.toBe(first.attemptId);
  });

  it('logs routine beats at debug, and at info a beat that needed retries or changed the ttl', () => {
    const h = new Harness();
    h.acquire();
    const beatLog = (acts: ReturnType<Harness['accept']>) => ofType(acts, 'log').find((l) => l.event === 'heartbeat');
    h.advanceTo(h.state.nextBeatAt!);
    expect(beatLog(h.accept())).toMatchObject({ level: 'debug', fields: { next_in_ms: expect.any(Number) } });
    h.advanceTo(h.state.nextBeatAt!);
    h.fail({ kind: 'transient', status: 503 });
    h.advanceTo(h.state.nextBeatAt!);
    expect(beatLog(h.accept())).toMatchObject({ level: 'info', fields: { attempt: 2 } });
    h.advanceTo(h.state.nextBeatAt!);
    expect(beatLog(h.accept({ ttlSeconds: 30 }))).toMatchObject({ level: 'info', fields: { ttl_seconds: 30, attempt: 1 } });
    h.advanceTo(h.state.nextBeatAt!);
    expect(beatLog(h.accept({ ttlSeconds: 30 }))?.level).toBe('debug');
  });

  it('retries with the same precondition and Idempotency-Key, jittered backoff', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    const first = h.inFlight();
    h.now += 20;
    h.fail({ kind: 'transient', status: 503 });
    const retryAt = h.state.nextBeatAt!;
    expect(retryAt).toBeGreaterThan(h.now);
    h.advanceTo(retryAt);
    const second = h.inFlight();
    expect(second.precondition).toBe(first.precondition);
    expect(second.idempotencyKey).toBe(first.idempotencyKey);
    expect(second.attemptId).not.toBe(first.attemptId);
    expect(second.attempt).toBe(2);
    h.accept();
    h.advanceTo(h.state.nextBeatAt!);
    expect(h.inFlight().idempotencyKey).not.toBe(first.idempotencyKey); // new precondition, new key
  });

  it('a retry that is accepted dates the lease from the exchange\'s first attempt (the server may have applied that one)', () => {
    // The first attempt's reply is lost after the server applied it; the retry (same Idempotency-Key) gets
    // the stored reply replayed. The server's lease started at the first send, so the deadline must too.
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    const firstSentAt = h.now;
    h.now += 400;
    h.fail({ kind: 'transient', message: 'socket hang up' });
    h.advanceTo(h.state.nextBeatAt!);
    expect(h.now).toBeGreaterThan(firstSentAt + 400);
    h.now += 50;
    h.accept({ ttlSeconds: 10 });
    expect(h.state.deadline).toBe(firstSentAt + 10_000);
    expect(h.state.lastAcceptedSentAt).toBe(firstSentAt);
    // The next exchange starts afresh: its own first send is what counts.
    h.advanceTo(h.state.nextBeatAt!);
    const nextSentAt = h.now;
    h.now += 30;
    h.accept({ ttlSeconds: 10 });
    expect(h.state.deadline).toBe(nextSentAt + 10_000);
  });

  it('a first heartbeat accepted on a retry does not start the job when the lease from the first send leaves no room', () => {
    const h = new Harness();
    h.now = 0;
    h.start();
    h.now = 4_000;
    h.fail({ kind: 'transient', message: 'socket hang up' });
    // Retry much later: the replayed grant (10 s) counted from the first send at 0 leaves too little.
    h.advanceTo(9_000);
    expect(h.state.inFlight).not.toBeNull();
    h.now = 9_100;
    const acts = h.accept({ ttlSeconds: 10 });
    expect(h.state.deadline).toBe(10_000);
    expect(ofType(acts, 'spawn_job')).toHaveLength(0);
  });

  it('honours Retry-After', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    h.fail({ kind: 'transient', status: 429, retryAfterMs: 2000 });
    expect(h.state.nextBeatAt! - h.now).toBe(2000);
  });

  it('treats a malformed 2xx like a transient failure (the server may have applied it)', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    const pre = h.inFlight().precondition;
    h.fail({ kind: 'malformed' });
    h.advanceTo(h.state.nextBeatAt!);
    expect(h.inFlight().precondition).toBe(pre);
    expect(h.state.loss).toBeNull();
  });

  it('ignores a late answer to an attempt that was already abandoned', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    const stale = h.inFlight();
    h.fail({ kind: 'transient' });
    const before = h.state;
    const t = h as unknown as { apply: (e: unknown) => unknown };
    t.apply({ type: 'heartbeat_accepted', at: h.now, attemptId: stale.attemptId, reply: { lastHeartbeat: 'x', leaseExtended: true, state: 'active', ttlSeconds: 10 } });
    expect(h.state).toBe(before);
  });
});

describe('lease machine: self-fencing', () => {
  it('stop signal at deadline - grace - margin, SIGKILL at deadline - margin, with the network gone', () => {
    const h = new Harness({ graceMs: 10_000 });
    h.acquire({ ttlSeconds: 10 }); // sent at 0: deadline 10000
    const margin = fenceMarginMs(10_000, null); // 1000
    const grace = effectiveFenceGraceMs(10_000, 3300, margin, 10_000); // 2400
    const killAt = 10_000 - margin - reapAllowanceMs(margin); // 8950: dead by 9000
    // Every attempt hangs until its cutoff.
    const signalAt = killAt - grace;
    while (h.now < signalAt - 1) {
      h.advanceTo(Math.min(h.state.nextBeatAt ?? Infinity, signalAt - 1));
      if (h.state.inFlight) {
        h.now = Math.min(h.state.inFlight.cutoffAt, signalAt - 1);
        if (h.now === h.state.inFlight.cutoffAt) h.fail({ kind: 'transient' });
      }
    }
    expect(ofType(h.actions, 'signal_job')).toHaveLength(0);
    h.advanceTo(signalAt);
    expect(ofType(h.actions, 'signal_job')).toEqual([{ type: 'signal_job', signal: 'SIGTERM', reason: 'self_fenced' }]);
    expect(ofType(h.actions, 'kill_job')).toHaveLength(0);
    h.advanceTo(killAt - 1);
    expect(ofType(h.actions, 'kill_job')).toHaveLength(0);
    h.advanceTo(killAt);
    expect(ofType(h.actions, 'kill_job')).toEqual([{ type: 'kill_job', reason: 'self_fenced' }]);
    expect(h.now).toBe(killAt);
    h.jobExited({ code: null, signal: 'SIGKILL' });
    expect(ofType(h.actions, 'report')).toHaveLength(0); // the item is not ours to report on
    expect(ofType(h.actions, 'finish')[0]).toMatchObject({ outcome: 'self_fenced' });
  });

  it('uses a shorter effective grace when the configured one does not fit the lease', () => {
    expect(effectiveFenceGraceMs(10_000, 3300, 1000, 10_000)).toBe(2400);
    expect(effectiveFenceGraceMs(60_000, 19_800, 2000, 10_000)).toBe(10_000);
    expect(effectiveFenceGraceMs(10_000, 5000, 1000, 10_000)).toBe(1000); // never below 10% of ttl
    expect(effectiveFenceGraceMs(10_000, 3300, 1000, 500)).toBe(500); // never above the configured grace
  });

  it('a job whose heartbeats keep being accepted is never fenced', () => {
    const h = new Harness();
    h.acquire();
    for (let i = 0; i < 100; i++) {
      h.advanceTo(h.state.nextBeatAt!);
      h.now += 50;
      h.accept();
    }
    expect(ofType(h.actions, 'signal_job')).toHaveLength(0);
    expect(h.state.loss).toBeNull();
  });

  it('an accepted heartbeat during a fence postpones the kill to the grace (lease recovered)', () => {
    const h = new Harness({ graceMs: 3000 });
    h.acquire();
    const margin = fenceMarginMs(10_000, null);
    const signalAt = 10_000 - margin - reapAllowanceMs(margin) - effectiveFenceGraceMs(10_000, 3300, margin, 3000);
    while (ofType(h.actions, 'signal_job').length === 0) {
      h.advanceTo(h.state.inFlight ? h.state.inFlight.cutoffAt : (h.state.nextBeatAt ?? signalAt));
      if (h.state.inFlight && h.now >= h.state.inFlight.cutoffAt) h.fail({ kind: 'transient' });
    }
    const signaledAt = h.state.signaledAt!;
    h.advanceTo(h.state.nextBeatAt ?? h.now);
    h.accept(); // the network is back: the attempt in flight is accepted
    h.advanceTo(signaledAt + 2999);
    expect(ofType(h.actions, 'kill_job')).toHaveLength(0);
    h.advanceTo(signaledAt + 3000);
    expect(ofType(h.actions, 'kill_job')).toHaveLength(1);
  });
});

describe('lease machine: server answers', () => {
  it('412 → lease lost: stop at once, no more heartbeats, no stop report', () => {
    const h = new Harness({ graceMs: 5000 });
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    const acts = h.fail({ kind: 'lease_lost', status: 412 });
    expect(ofType(acts, 'signal_job')).toEqual([{ type: 'signal_job', signal: 'SIGTERM', reason: 'lease_lost' }]);
    const sends = ofType(h.actions, 'send_heartbeat').length;
    h.advanceBy(20_000);
    expect(ofType(h.actions, 'send_heartbeat').length).toBe(sends);
    h.jobExited({ code: 143, signal: null });
    expect(ofType(h.actions, 'report')).toHaveLength(0);
    expect(ofType(h.actions, 'finish')[0]).toMatchObject({ outcome: 'lease_lost' });
  });

  it('after 412 the grace is capped by what remains of the lease', () => {
    const h = new Harness({ graceMs: 10_000 });
    h.acquire(); // deadline 10000
    h.advanceTo(h.state.nextBeatAt!); // ~3135
    h.fail({ kind: 'lease_lost', status: 412 });
    h.advanceBy(20_000);
    const kill = h.actions.findIndex((a) => a.type === 'kill_job');
    expect(kill).toBeGreaterThan(-1);
    const margin = fenceMarginMs(10_000, null);
    expect(h.state.killedAt).toBe(10_000 - margin - reapAllowanceMs(margin));
  });

  it('lease_extended: false → lease lost', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    const acts = h.accept({ leaseExtended: false });
    expect(ofType(acts, 'signal_job')[0]).toMatchObject({ reason: 'lease_lost' });
    expect(h.state.leaseHeld).toBe(false);
  });

  it('409 → stopped by server: stop at once, no confirmation', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    const acts = h.fail({ kind: 'conflict', status: 409 });
    expect(ofType(acts, 'signal_job')[0]).toMatchObject({ reason: 'stopped_by_server' });
    h.jobExited({ code: 0, signal: null });
    expect(ofType(h.actions, 'report')).toHaveLength(0);
    expect(ofType(h.actions, 'finish')[0]).toMatchObject({ outcome: 'stopped_by_server' });
  });

  it('state stopping → drain: signal, keep heartbeating, then report with a stop', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    const acts = h.accept({ state: 'stopping' });
    expect(ofType(acts, 'signal_job')[0]).toMatchObject({ reason: 'drained' });
    const sends = ofType(h.actions, 'send_heartbeat').length;
    h.advanceTo(h.state.nextBeatAt!);
    expect(ofType(h.actions, 'send_heartbeat').length).toBe(sends + 1); // heartbeats go on
    h.accept({ state: 'stopping' });
    h.jobExited({ code: 0, signal: null });
    const report = ofType(h.actions, 'report');
    expect(report).toEqual([
      { type: 'report', outcome: 'drained', stop: true, metadata: { outcome: 'drained', worker_id: 'w-1', exit_code: '0' } },
    ]);
    h.reported();
    expect(ofType(h.actions, 'finish')[0]).toMatchObject({ outcome: 'drained' });
  });

  it('a drain uses the full configured grace while heartbeats are accepted', () => {
    const h = new Harness({ graceMs: 8000 });
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    h.accept({ state: 'stopping' });
    const signaledAt = h.now;
    while (h.now < signaledAt + 7990) {
      h.advanceTo(Math.min(h.state.nextBeatAt!, signaledAt + 7990));
      if (h.state.inFlight) h.accept({ state: 'stopping' });
    }
    expect(ofType(h.actions, 'kill_job')).toHaveLength(0);
    h.advanceTo(signaledAt + 8000);
    expect(ofType(h.actions, 'kill_job')).toHaveLength(1);
  });

  it('401 on a heartbeat stops the job and ends fatally (auth)', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    h.fail({ kind: 'auth', status: 401 });
    h.jobExited({ code: null, signal: 'SIGTERM' });
    expect(ofType(h.actions, 'finish')[0]).toMatchObject({ fatal: 'auth' });
  });
});

describe('lease machine: job ends', () => {
  it('job exits by itself: stop heartbeating, report exit_code and worker_id, then stop', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    const acts = h.jobExited({ code: 3, signal: null });
    expect(ofType(acts, 'abort_heartbeat')).toHaveLength(1);
    expect(ofType(acts, 'report')).toEqual([
      { type: 'report', outcome: 'failed', stop: true, metadata: { outcome: 'failed', worker_id: 'w-1', exit_code: '3' } },
    ]);
    h.advanceBy(30_000);
    expect(ofType(h.actions, 'send_heartbeat')).toHaveLength(2);
    h.reported();
    expect(ofType(h.actions, 'finish')[0]).toMatchObject({ outcome: 'failed', exit: { code: 3, signal: null } });
  });

  it('a report still in progress when the lease runs out is abandoned at deadline - margin (the item may be another worker\'s by then)', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    h.accept();
    h.jobExited({ code: 0, signal: null });
    const deadline = h.state.deadline!;
    const margin = fenceMarginMs(h.state.grantedTtlMs!, null);
    expect(wakeAt(h.state, h.settings)).toBe(deadline - margin);
    const before = h.advanceTo(deadline - margin - 1);
    expect(ofType(before, 'abort_report')).toHaveLength(0);
    const at = h.advanceTo(deadline - margin);
    expect(ofType(at, 'abort_report')).toHaveLength(1);
    expect(at.filter((a) => a.type === 'log' && a.event === 'report_abandoned')).toHaveLength(1);
    expect(wakeAt(h.state, h.settings)).toBeNull();
    expect(ofType(h.advanceBy(60_000), 'abort_report')).toHaveLength(0);
    h.reported();
    expect(ofType(h.actions, 'finish')[0]).toMatchObject({ outcome: 'completed' });
  });

  it('a report that ends in time is not abandoned', () => {
    const h = new Harness();
    h.acquire();
    h.jobExited({ code: 0, signal: null });
    h.now += 20;
    h.reported();
    expect(ofType(h.advanceBy(60_000), 'abort_report')).toHaveLength(0);
    expect(wakeAt(h.state, h.settings)).toBeNull();
  });

  it('a job whose cgroup saw an OOM kill failed, even when its leader exited 0; the metadata says oom_killed', () => {
    const h = new Harness();
    h.acquire();
    const acts = h.jobExited({ code: 0, signal: null }, true);
    expect(ofType(acts, 'report')).toEqual([
      { type: 'report', outcome: 'failed', stop: true, metadata: { outcome: 'failed', worker_id: 'w-1', exit_code: '0', oom_killed: 'true' } },
    ]);
  });

  it('a job killed by a signal reports the signal', () => {
    const h = new Harness();
    h.acquire();
    h.jobExited({ code: null, signal: 'SIGSEGV' });
    expect(ofType(h.actions, 'report')[0]!.metadata).toEqual({ outcome: 'failed', worker_id: 'w-1', signal: 'SIGSEGV' });
  });

  it('spawn failure is an outcome: the item is reported and stopped', () => {
    const h = new Harness();
    h.start();
    h.accept();
    h.spawnFailed();
    expect(ofType(h.actions, 'report')[0]).toMatchObject({ outcome: 'spawn_failed', stop: true });
    h.reported();
    expect(ofType(h.actions, 'finish')[0]).toMatchObject({ outcome: 'spawn_failed', detail: expect.stringContaining('not found') });
  });

  it('a job spawned after the lease was lost is stopped as soon as it starts', () => {
    const h = new Harness();
    h.start();
    h.accept();
    h.now = 4000;
    h.advanceTo(4000);
    h.fail({ kind: 'lease_lost' });
    const acts = h.jobStarted();
    expect(ofType(acts, 'signal_job')[0]).toMatchObject({ reason: 'lease_lost' });
  });
});

describe('lease machine: keeper shutdown', () => {
  it('first signal drains (heartbeats go on), then stops the item (on-shutdown=stop)', () => {
    const h = new Harness();
    h.acquire();
    const acts = h.shutdown();
    expect(ofType(acts, 'signal_job')[0]).toMatchObject({ reason: 'shutdown' });
    h.advanceTo(h.state.nextBeatAt!);
    expect(h.state.inFlight).not.toBeNull();
    h.accept();
    h.jobExited({ code: 0, signal: null });
    expect(ofType(h.actions, 'report')[0]).toMatchObject({ outcome: 'shutdown', stop: true });
  });

  it('on-shutdown=release writes metadata but sends no stop', () => {
    const h = new Harness({ onShutdown: 'release' });
    h.acquire();
    h.shutdown();
    h.jobExited({ code: 0, signal: null });
    expect(ofType(h.actions, 'report')[0]).toMatchObject({ outcome: 'shutdown', stop: false });
  });

  it('a second signal kills the group and finishes at once', () => {
    const h = new Harness();
    h.acquire();
    h.shutdown();
    const acts = h.shutdownNow();
    expect(ofType(acts, 'kill_job')).toHaveLength(1);
    expect(ofType(acts, 'finish')[0]).toMatchObject({ outcome: 'shutdown' });
  });

  it('shutdown before the job started: no job, item handed back', () => {
    const h = new Harness();
    h.start();
    h.accept();
    // spawn_job was emitted but job_started not yet seen: shut down
    h.shutdown();
    const acts = h.jobStarted();
    expect(ofType(acts, 'signal_job')[0]).toMatchObject({ reason: 'shutdown' });
  });
});

describe('lease machine: keeper shutdown, finish mode', () => {
  it('a running job gets no stop signal, heartbeats go on, and the item is reported with its own outcome', () => {
    const h = new Harness();
    h.acquire();
    const acts = h.shutdownFinish();
    expect(ofType(acts, 'signal_job')).toHaveLength(0);
    expect(ofType(acts, 'log').map((l) => l.event)).toContain('shutdown_finish');
    // Two more intervals: every beat is still sent and accepted, the job is never signalled.
    for (let i = 0; i < 2; i++) {
      h.advanceTo(h.state.nextBeatAt!);
      expect(h.state.inFlight).not.toBeNull();
      h.accept();
    }
    expect(ofType(h.actions, 'signal_job')).toHaveLength(0);
    expect(ofType(h.actions, 'kill_job')).toHaveLength(0);
    h.jobExited({ code: 3, signal: null });
    expect(ofType(h.actions, 'report')[0]).toMatchObject({ outcome: 'failed', stop: true, metadata: { outcome: 'failed', exit_code: '3' } });
  });

  it('a job that exits 0 while finishing is completed, not shutdown (even with on-shutdown=release)', () => {
    const h = new Harness({ onShutdown: 'release' });
    h.acquire();
    h.shutdownFinish();
    h.jobExited({ code: 0, signal: null });
    expect(ofType(h.actions, 'report')[0]).toMatchObject({ outcome: 'completed', stop: true });
  });

  it('a job not started yet is not started: the item is left as by a drain', () => {
    const h = new Harness();
    h.start();
    const acts = h.shutdownFinish(); // the first heartbeat is in flight, no job yet
    expect(ofType(acts, 'abort_heartbeat')).toHaveLength(1);
    expect(ofType(acts, 'finish')[0]).toMatchObject({ outcome: 'shutdown' });
    expect(ofType(h.actions, 'spawn_job')).toHaveLength(0);
  });

  it('a job being spawned counts as started: it is not signalled once it runs', () => {
    const h = new Harness();
    h.start();
    h.accept(); // spawn_job emitted, job_started not seen yet
    h.shutdownFinish();
    const acts = h.jobStarted();
    expect(ofType(acts, 'signal_job')).toHaveLength(0);
  });

  it('a lost lease while finishing still stops the job at once', () => {
    const h = new Harness();
    h.acquire();
    h.shutdownFinish();
    h.advanceTo(h.state.nextBeatAt!);
    const acts = h.fail({ kind: 'lease_lost', status: 412 });
    expect(ofType(acts, 'signal_job')[0]).toMatchObject({ reason: 'lease_lost' });
    h.jobExited({ code: null, signal: 'SIGTERM' });
    expect(ofType(h.actions, 'report')).toHaveLength(0);
    expect(ofType(h.actions, 'finish')[0]).toMatchObject({ outcome: 'lease_lost' });
  });

  it('a server stop while finishing drains the job as usual', () => {
    const h = new Harness();
    h.acquire();
    h.shutdownFinish();
    h.advanceTo(h.state.nextBeatAt!);
    const acts = h.accept({ state: 'stopping' });
    expect(ofType(acts, 'signal_job')[0]).toMatchObject({ reason: 'drained' });
  });

  it('the second signal (shutdown) turns finish into a drain; the third kills', () => {
    const h = new Harness();
    h.acquire();
    h.shutdownFinish();
    const drain = h.shutdown();
    expect(ofType(drain, 'signal_job')[0]).toMatchObject({ reason: 'shutdown' });
    const now = h.shutdownNow();
    expect(ofType(now, 'kill_job')).toHaveLength(1);
    expect(ofType(now, 'finish')[0]).toMatchObject({ outcome: 'shutdown' });
  });
});
