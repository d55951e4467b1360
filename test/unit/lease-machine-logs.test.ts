/**
 * The lease machine's log lines (README "Logs"): which event each rule logs, at which level, with which
 * fields. Operators grep for these names and alert on their levels, so they are part of the contract.
 */
import { describe, expect, it } from 'vitest';
import { NO_HEARTBEAT } from '../../src/api/types.js';
import type { LeaseAction } from '../../src/lease/machine.js';
import { Harness, ofType } from './lease-harness.js';

const logs = (acts: LeaseAction[]) => ofType(acts, 'log').map(({ level, event, fields }) => ({ level, event, fields }));
const logOf = (acts: LeaseAction[], event: string) => {
  const found = ofType(acts, 'log').filter((l) => l.event === event);
  expect(found, `one ${event} line`).toHaveLength(1);
  return found[0]!;
};

describe('lease machine logs: the lease', () => {
  it('lease_acquired (info) with the precondition sent, the reply, and the time left', () => {
    const h = new Harness({ heartbeatFraction: 0.25 });
    h.random = 0;
    h.now = 1000;
    h.start();
    h.now = 1200;
    const acts = h.accept({ ttlSeconds: 20, requestId: 'req-1' }, '2026-07-01T08:15:06.120394Z');
    expect(logOf(acts, 'lease_acquired')).toEqual({
      type: 'log',
      level: 'info',
      event: 'lease_acquired',
      fields: {
        expected: NO_HEARTBEAT,
        last_heartbeat: '2026-07-01T08:15:06.120394Z',
        ttl_seconds: 20,
        state: 'active',
        lease_left_ms: 1000 + 20_000 - 1200,
        next_in_ms: 1000 + 5000 - 1200,
        request_id: 'req-1',
      },
    });
    expect(ofType(acts, 'log').filter((l) => l.event === 'heartbeat')).toHaveLength(0);
  });

  it('a later beat logs heartbeat, not lease_acquired', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    const acts = h.accept();
    expect(ofType(acts, 'log').map((l) => l.event)).toEqual(['heartbeat']);
  });

  it('job_started (info) with the pid; job_exited (info) with the exit code and signal', () => {
    const h = new Harness();
    h.start();
    h.accept();
    expect(logs(h.jobStarted())).toEqual([{ level: 'info', event: 'job_started', fields: { pid: 4242 } }]);
    expect(logOf(h.jobExited({ code: null, signal: 'SIGSEGV' }), 'job_exited')).toMatchObject({
      level: 'info',
      fields: { exit_code: null, signal: 'SIGSEGV' },
    });
  });

  it('spawn_failed (error) with the code and the reason', () => {
    const h = new Harness();
    h.start();
    h.accept();
    expect(logOf(h.spawnFailed(), 'spawn_failed')).toMatchObject({ level: 'error', fields: { code: 127, error: 'job command "nope" not found' } });
  });

  it('heartbeat_retry (warn) with the error, the attempt, the delay and the lease left', () => {
    const h = new Harness();
    h.random = 1;
    h.acquire(); // deadline 10000, interval 3300
    h.advanceTo(h.state.nextBeatAt!); // sent at 2970
    h.now = 3000;
    const line = logOf(h.fail({ kind: 'transient', status: 503, message: 'HTTP 503', requestId: 'req-9' }), 'heartbeat_retry');
    expect(line).toMatchObject({
      level: 'warn',
      fields: { status: 503, kind: 'transient', request_id: 'req-9', error: 'HTTP 503', attempt: 1, retry_in_ms: 330, lease_left_ms: 7000 },
    });
  });

  it('heartbeat_retry before any lease: no lease left to report', () => {
    const h = new Harness();
    h.start();
    expect(logOf(h.fail({ kind: 'transient' }), 'heartbeat_retry').fields.lease_left_ms).toBeNull();
  });

  it('stop_requested (info) with the request id', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    expect(logOf(h.accept({ state: 'stopping', requestId: 'req-s' }), 'stop_requested')).toMatchObject({ level: 'info', fields: { request_id: 'req-s' } });
  });

  it('lease_not_acquired (error) with the time waited', () => {
    const h = new Harness({ desiredTtlSeconds: 2 });
    h.now = 500;
    h.start();
    h.now = 2500;
    const acts = h.fail({ kind: 'transient' });
    expect(logOf(acts, 'lease_not_acquired')).toMatchObject({ level: 'error', fields: { waited_ms: 2000 } });
  });
});

describe('lease machine logs: losing the lease', () => {
  it('412: lease_lost (warn) with the reason, the status, the kind and the request id', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    const acts = h.fail({ kind: 'lease_lost', status: 412, message: 'precondition failed', requestId: 'req-4' });
    expect(logs(acts)).toEqual([
      { level: 'warn', event: 'lease_lost', fields: { reason: 'precondition failed', status: 412, kind: 'lease_lost', request_id: 'req-4' } },
    ]);
  });

  it('409: stopped_by_server (info), not lease_lost', () => {
    const h = new Harness();
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    const acts = h.fail({ kind: 'conflict', status: 409, message: 'stopped' });
    expect(logs(acts)).toEqual([
      { level: 'info', event: 'stopped_by_server', fields: { reason: 'stopped', status: 409, kind: 'conflict', request_id: undefined } },
    ]);
  });

  it('an accepted reply that does not extend the lease names why', () => {
    const cases = [
      { reply: { leaseExtended: false }, event: 'lease_lost', reason: 'lease_extended: false' },
      { reply: { state: 'stopped' as const }, event: 'stopped_by_server', reason: 'heartbeat reply state stopped' },
      { reply: { state: 'queued' as const }, event: 'lease_lost', reason: 'heartbeat reply state queued' },
    ];
    for (const c of cases) {
      const h = new Harness();
      h.acquire();
      h.advanceTo(h.state.nextBeatAt!);
      expect(logOf(h.accept(c.reply), c.event).fields).toEqual({ reason: c.reason });
    }
  });

  it('a lease that runs out before the job could start: lease_lost with that reason', () => {
    const h = new Harness();
    h.start();
    h.now = 9_500; // first reply far too late: the job is not started
    h.accept({ ttlSeconds: 10 });
    const acts = h.advanceTo(10_000);
    expect(logOf(acts, 'lease_lost')).toMatchObject({ level: 'warn', fields: { reason: 'the lease ran out before the job could be started' } });
  });
});

describe('lease machine logs: stopping the job', () => {
  it('the fence logs its signal step with the lease left and the margin, then its kill step', () => {
    const h = new Harness({ graceMs: 10_000 });
    h.acquire(); // deadline 10000, margin 1000, kill at 8950, signal at 6550
    const signal = logOf(h.advanceTo(6550).concat(), 'fenced');
    expect(signal).toEqual({ type: 'log', level: 'warn', event: 'fenced', fields: { step: 'signal', lease_left_ms: 3450, margin_ms: 1000 } });
    const kill = logOf(h.advanceTo(8950), 'fenced');
    expect(kill).toEqual({ type: 'log', level: 'warn', event: 'fenced', fields: { step: 'kill', lease_left_ms: 1050 } });
    expect(ofType(h.actions, 'log').filter((l) => l.event === 'grace_expired')).toHaveLength(0);
  });

  it('a drain whose grace runs out logs grace_expired (warn) with the grace, not fenced', () => {
    const h = new Harness({ graceMs: 1000 });
    h.acquire();
    h.advanceTo(h.state.nextBeatAt!);
    h.accept({ state: 'stopping' });
    const acts = h.advanceBy(1000);
    expect(logs(acts).filter((l) => l.event !== 'heartbeat')).toEqual([{ level: 'warn', event: 'grace_expired', fields: { grace_ms: 1000 } }]);
    expect(ofType(acts, 'kill_job')).toEqual([{ type: 'kill_job', reason: 'drained' }]);
  });

  it('shutdown_drain (info) on the first signal', () => {
    const h = new Harness();
    h.acquire();
    expect(logs(h.shutdown())).toEqual([{ level: 'info', event: 'shutdown_drain', fields: {} }]);
  });
});
