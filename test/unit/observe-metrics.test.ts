import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/observe/metrics.js';
import type { KeeperSnapshot, LeaseView } from '../../src/observe/snapshot.js';

function lease(workId: string, leaseLeftMs: number | null, phase: LeaseView['phase'] = 'held'): LeaseView {
  return { workId, sessionId: 's', phase, leaseLeftMs, sinceAcceptedMs: 1000, intervalMs: 20_000, lastHeartbeatResult: 'accepted' };
}

/** The value of one series in the text exposition, or undefined when absent. */
function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('createMetrics', () => {
  it('exports gauges read from the snapshot at scrape time', async () => {
    let s: KeeperSnapshot = { workerId: 'w', ready: false, draining: false, leases: [], pollFailingSinceMs: null };
    let lag = 3;
    const m = createMetrics({ snapshot: () => s, lagMs: () => lag });

    let text = await m.render();
    expect(value(text, 'lease_keeper_ready')).toBe(0);
    expect(value(text, 'lease_keeper_leases_held')).toBe(0);
    expect(value(text, 'lease_keeper_event_loop_lag_seconds')).toBe(0.003);
    expect(text).not.toMatch(/lease_keeper_lease_time_left_seconds\{/);

    s = { ...s, ready: true, leases: [lease('work_a', 41_500), lease('work_b', -500, 'fencing'), lease('work_c', null, 'acquiring')] };
    lag = 250;
    text = await m.render();
    expect(value(text, 'lease_keeper_ready')).toBe(1);
    expect(value(text, 'lease_keeper_leases_held')).toBe(2);
    expect(value(text, 'lease_keeper_lease_time_left_seconds{work_id="work_a"}')).toBe(41.5);
    expect(value(text, 'lease_keeper_lease_time_left_seconds{work_id="work_b"}')).toBe(-0.5);
    expect(value(text, 'lease_keeper_event_loop_lag_seconds')).toBe(0.25);

    // a finished item disappears from the per-item gauge
    s = { ...s, leases: [lease('work_b', 9000)] };
    text = await m.render();
    expect(text).not.toContain('work_id="work_a"');
    expect(value(text, 'lease_keeper_lease_time_left_seconds{work_id="work_b"}')).toBe(9);
  });

  it('says which containment is active, and histograms what finished jobs used', async () => {
    const s: KeeperSnapshot = { workerId: 'w', ready: true, draining: false, leases: [], pollFailingSinceMs: null, containment: 'cgroup' };
    const m = createMetrics({ snapshot: () => s, lagMs: () => 0, defaultMetrics: false });
    m.jobUsage!({ cpuSeconds: 2.5, memoryPeakBytes: 300 * 2 ** 20 });
    m.jobUsage!({ cpuSeconds: 0.05, memoryPeakBytes: null });
    const text = await m.render();
    expect(value(text, 'lease_keeper_containment_info{containment="cgroup"}')).toBe(1);
    expect(value(text, 'lease_keeper_job_cpu_seconds_count')).toBe(2);
    expect(value(text, 'lease_keeper_job_cpu_seconds_sum')).toBeCloseTo(2.55);
    expect(value(text, 'lease_keeper_job_memory_peak_bytes_count')).toBe(1);
    expect(value(text, 'lease_keeper_job_memory_peak_bytes_bucket{le="1073741824"}')).toBe(1);
  });

  it('counts events', async () => {
    const s: KeeperSnapshot = { workerId: 'w', ready: true, draining: false, leases: [], pollFailingSinceMs: null };
    const m = createMetrics({ snapshot: () => s, lagMs: () => 0, stallEpisodes: () => 2 });
    let text = await m.render();
    // pre-initialised series exist at 0, so rate() works from the first scrape
    expect(value(text, 'lease_keeper_heartbeats_total{result="accepted"}')).toBe(0);
    expect(value(text, 'lease_keeper_outcomes_total{outcome="self_fenced"}')).toBe(0);
    expect(value(text, 'lease_keeper_fence_events_total{step="kill"}')).toBe(0);
    expect(value(text, 'lease_keeper_polls_total{result="error"}')).toBe(0);

    m.heartbeat('accepted', 12);
    m.heartbeat('accepted', 30);
    m.heartbeat('transient', 2500);
    m.poll('empty');
    m.poll('work');
    m.poll('error');
    m.poll('error');
    m.outcome('completed');
    m.outcome('self_fenced');
    m.fence('signal');
    m.fence('kill');
    text = await m.render();
    expect(value(text, 'lease_keeper_heartbeats_total{result="accepted"}')).toBe(2);
    expect(value(text, 'lease_keeper_heartbeats_total{result="transient"}')).toBe(1);
    expect(value(text, 'lease_keeper_heartbeat_duration_seconds_count')).toBe(3);
    expect(value(text, 'lease_keeper_heartbeat_duration_seconds_bucket{le="0.025"}')).toBe(1);
    expect(value(text, 'lease_keeper_heartbeat_duration_seconds_bucket{le="0.05"}')).toBe(2);
    expect(value(text, 'lease_keeper_heartbeat_duration_seconds_bucket{le="5"}')).toBe(3);
    expect(value(text, 'lease_keeper_heartbeat_duration_seconds_sum')).toBeCloseTo(2.542, 6);
    expect(value(text, 'lease_keeper_polls_total{result="error"}')).toBe(2);
    expect(value(text, 'lease_keeper_polls_total{result="empty"}')).toBe(1);
    expect(value(text, 'lease_keeper_outcomes_total{outcome="completed"}')).toBe(1);
    expect(value(text, 'lease_keeper_outcomes_total{outcome="self_fenced"}')).toBe(1);
    expect(value(text, 'lease_keeper_fence_events_total{step="signal"}')).toBe(1);
    expect(value(text, 'lease_keeper_fence_events_total{step="kill"}')).toBe(1);
    expect(value(text, 'lease_keeper_event_loop_stalls_total')).toBe(2);
  });

  it('has its own registry with the default process metrics, and two instances do not collide', async () => {
    const s: KeeperSnapshot = { workerId: 'w', ready: true, draining: false, leases: [], pollFailingSinceMs: null };
    const a = createMetrics({ snapshot: () => s, lagMs: () => 0 });
    const b = createMetrics({ snapshot: () => s, lagMs: () => 0 });
    a.poll('work');
    const textA = await a.render();
    const textB = await b.render();
    expect(textA).toContain('process_cpu_user_seconds_total');
    expect(textA).toContain('nodejs_heap_size_used_bytes');
    expect(value(textA, 'lease_keeper_polls_total{result="work"}')).toBe(1);
    expect(value(textB, 'lease_keeper_polls_total{result="work"}')).toBe(0);
    expect(a.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  });

  it('survives a throwing snapshot', async () => {
    const m = createMetrics({
      snapshot: () => {
        throw new Error('not yet');
      },
      lagMs: () => 0,
      defaultMetrics: false,
    });
    const text = await m.render();
    expect(value(text, 'lease_keeper_ready')).toBe(0);
    expect(text).not.toContain('process_cpu');
  });
});
