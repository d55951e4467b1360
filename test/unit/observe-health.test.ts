import { describe, expect, it } from 'vitest';
import { assessHealth, STATUS_MAX, statusLine } from '../../src/observe/health.js';
import type { KeeperSnapshot, LeaseView } from '../../src/observe/snapshot.js';

function lease(over: Partial<LeaseView> = {}): LeaseView {
  return {
    workId: 'work_abc',
    sessionId: 'sess_1',
    phase: 'held',
    leaseLeftMs: 41_500,
    sinceAcceptedMs: 18_500,
    intervalMs: 20_000,
    lastHeartbeatResult: 'accepted',
    ...over,
  };
}

function snap(over: Partial<KeeperSnapshot> = {}): KeeperSnapshot {
  return { workerId: 'host-1', ready: true, draining: false, leases: [], pollFailingSinceMs: null, ...over };
}

describe('assessHealth', () => {
  it('is healthy with fresh leases and a running loop', () => {
    const a = assessHealth(snap({ leases: [lease(), lease({ workId: 'work_b', phase: 'draining' })] }), false, { nowMs: 1e6 });
    expect(a).toEqual({ healthy: true, reasons: [], readiness: { healthy: true, reasons: [] } });
  });

  it('is unhealthy when the event loop is stalled', () => {
    const a = assessHealth(snap(), true, { nowMs: 0 });
    expect(a.healthy).toBe(false);
    expect(a.reasons).toEqual(['event loop stalled']);
    expect(a.readiness.healthy).toBe(false);
  });

  it('is unhealthy when a held or draining lease had no accepted heartbeat for more than 2 intervals', () => {
    for (const phase of ['held', 'draining'] as const) {
      const a = assessHealth(snap({ leases: [lease({ phase, sinceAcceptedMs: 40_001, leaseLeftMs: 19_000 })] }), false, { nowMs: 0 });
      expect(a.healthy).toBe(false);
      expect(a.reasons).toEqual(['work_abc: no heartbeat accepted for 40s (interval 20s)']);
    }
    // exactly 2 intervals is still fine
    expect(assessHealth(snap({ leases: [lease({ sinceAcceptedMs: 40_000 })] }), false, { nowMs: 0 }).healthy).toBe(true);
  });

  it('does not judge heartbeats of leases that are acquiring, fencing or ending', () => {
    for (const phase of ['acquiring', 'fencing', 'ending'] as const) {
      const a = assessHealth(snap({ leases: [lease({ phase, sinceAcceptedMs: 90_000, leaseLeftMs: 5000 })] }), false, { nowMs: 0 });
      expect(a.healthy, phase).toBe(true);
    }
  });

  it('is unhealthy when a lease with a job under it is past its local deadline, not when the job is gone', () => {
    for (const phase of ['held', 'draining', 'fencing'] as const) {
      const a = assessHealth(snap({ leases: [lease({ phase, leaseLeftMs: -1500, sinceAcceptedMs: 1000 })] }), false, { nowMs: 0 });
      expect(a.healthy, phase).toBe(false);
      expect(a.reasons[0]).toBe(`work_abc: lease deadline passed 1s ago (${phase})`);
    }
    for (const phase of ['ending', 'acquiring'] as const) {
      expect(assessHealth(snap({ leases: [lease({ phase, leaseLeftMs: -1500 })] }), false, { nowMs: 0 }).healthy, phase).toBe(true);
    }
  });

  it('ignores null fields (lease not yet held)', () => {
    const l = lease({ phase: 'held', leaseLeftMs: null, sinceAcceptedMs: null, intervalMs: null, lastHeartbeatResult: null });
    expect(assessHealth(snap({ leases: [l] }), false, { nowMs: 0 }).healthy).toBe(true);
  });

  it('failing polls never affect liveness; past 60 s they make readiness unhealthy', () => {
    const s = snap({ pollFailingSinceMs: 1000 });
    const early = assessHealth(s, false, { nowMs: 61_000 });
    expect(early.healthy).toBe(true);
    expect(early.readiness).toEqual({ healthy: true, reasons: [] });
    const late = assessHealth(s, false, { nowMs: 61_001 });
    expect(late.healthy).toBe(true);
    expect(late.reasons).toEqual([]);
    expect(late.readiness).toEqual({ healthy: false, reasons: ['polls failing for 60s'] });
    expect(assessHealth(s, false, { nowMs: 5000, pollFailingLimitMs: 1000 }).readiness.healthy).toBe(false);
  });

  it('collects every reason', () => {
    const a = assessHealth(
      snap({
        leases: [lease({ workId: 'work_a', sinceAcceptedMs: 50_000, leaseLeftMs: -2000 }), lease({ workId: 'work_b' })],
        pollFailingSinceMs: 0,
      }),
      true,
      { nowMs: 200_000 },
    );
    expect(a.reasons).toHaveLength(3);
    expect(a.readiness.reasons).toHaveLength(4);
    expect(a.readiness.reasons[3]).toBe('polls failing for 3m20s');
  });
});

describe('statusLine', () => {
  it('shows items held of capacity, the lease left and the last heartbeat, then polling', () => {
    expect(statusLine(snap({ leases: [lease(), lease({ workId: 'work_b', leaseLeftMs: 50_000 })] }), { capacity: 3, nowMs: 0 })).toBe(
      '2/3 items held; work_abc lease 41s left, last heartbeat accepted (+1 more); polling',
    );
  });

  it('does not say polling when all slots are taken', () => {
    expect(statusLine(snap({ leases: [lease()] }), { capacity: 1, nowMs: 0 })).toBe('1/1 items held; work_abc lease 41s left, last heartbeat accepted');
  });

  it('shows an idle keeper', () => {
    expect(statusLine(snap(), { capacity: 1, nowMs: 0 })).toBe('0/1 items held; polling');
    expect(statusLine(snap(), { nowMs: 0 })).toBe('0 items held; polling');
  });

  it('shows startup and failing polls', () => {
    expect(statusLine(snap({ ready: false }), { nowMs: 0 })).toBe('starting; waiting for the first poll');
    expect(statusLine(snap({ pollFailingSinceMs: 0 }), { capacity: 2, nowMs: 95_000 })).toBe('0/2 items held; polls failing for 95s');
  });

  it('shows draining', () => {
    const line = statusLine(snap({ draining: true, leases: [lease({ phase: 'draining', leaseLeftMs: 12_000, lastHeartbeatResult: 'accepted' })] }), {
      capacity: 2,
      nowMs: 0,
    });
    expect(line).toBe('draining 1 item; work_abc draining lease 12s left, last heartbeat accepted');
    expect(statusLine(snap({ draining: true }), { nowMs: 0 })).toBe('stopping');
  });

  it('names the most urgent lease and unusual phases', () => {
    const line = statusLine(
      snap({
        leases: [
          lease({ workId: 'work_slow', leaseLeftMs: null, phase: 'acquiring', lastHeartbeatResult: null }),
          lease({ workId: 'work_hot', phase: 'fencing', leaseLeftMs: -3000, lastHeartbeatResult: 'transient' }),
        ],
      }),
      { capacity: 2, nowMs: 0 },
    );
    expect(line).toBe('1/2 items held; work_hot fencing lease expired 3s ago, last heartbeat transient (+1 more)');
    expect(statusLine(snap({ leases: [lease({ phase: 'acquiring', leaseLeftMs: null })] }), { capacity: 1, nowMs: 0 })).toBe(
      '0/1 items held; work_abc acquiring lease',
    );
  });

  it('stays short', () => {
    const long = lease({ workId: `work_${'x'.repeat(300)}` });
    const line = statusLine(snap({ leases: [long] }), { capacity: 1, nowMs: 0 });
    expect(line.length).toBeLessThanOrEqual(STATUS_MAX);
    expect(line.length).toBeLessThan(200);
    expect(line).not.toMatch(/\n/);
  });
});
