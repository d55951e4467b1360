import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { OUTCOMES, type Outcome } from '../lease/outcome.js';
import { LIVE_PHASES } from './health.js';
import type { KeeperEvents, KeeperSnapshot } from './snapshot.js';

/**
 * Prometheus metrics (anchors.md §4 item 11). Counters and the histogram are fed by KeeperEvents as things happen;
 * gauges are read from `snapshot()` at scrape time, so they are never stale. Everything lives in a registry of its
 * own (not prom-client's global one), so two keepers in one process (tests, the demo) do not collide.
 */
export interface MetricsOptions {
  snapshot: () => KeeperSnapshot;
  /** Recent event-loop lag in ms (StallGuard.lagMs). */
  lagMs: () => number;
  /** Stall episodes so far (StallGuard.episodes), exported as lease_keeper_event_loop_stalls_total when given. */
  stallEpisodes?: () => number;
  /** Default process/Node metrics (process_cpu_seconds_total, nodejs_heap_*, ...). Default true. */
  defaultMetrics?: boolean;
}

export type Metrics = KeeperEvents & {
  registry: Registry;
  /** Prometheus text exposition of the registry. */
  render(): Promise<string>;
  /** The Content-Type for `render()`'s output. */
  contentType: string;
};

/** Latencies from a loopback millisecond to a slow gateway's many seconds. */
export const HEARTBEAT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];


export function createMetrics(opts: MetricsOptions): Metrics {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });

  // A throwing snapshot must not fail the whole scrape: the gauges are then left empty/zero.
  const snap = (): KeeperSnapshot | null => {
    try {
      return opts.snapshot();
    } catch {
      return null;
    }
  };

  const heartbeats = new Counter({
    name: 'lease_keeper_heartbeats_total',
    help: 'Heartbeat attempts by result (accepted, transient, lease_lost, stopped, ...)',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  heartbeats.inc({ result: 'accepted' }, 0);

  const heartbeatDuration = new Histogram({
    name: 'lease_keeper_heartbeat_duration_seconds',
    help: 'Heartbeat request latency, send to reply or failure',
    buckets: HEARTBEAT_BUCKETS,
    registers: [registry],
  });

  const outcomes = new Counter({
    name: 'lease_keeper_outcomes_total',
    help: 'Claimed work items by how they ended',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  for (const outcome of OUTCOMES) outcomes.inc({ outcome }, 0);

  const fences = new Counter({
    name: 'lease_keeper_fence_events_total',
    help: 'Self-fencing steps taken: stop signal, then SIGKILL, because no heartbeat was accepted in time',
    labelNames: ['step'] as const,
    registers: [registry],
  });
  fences.inc({ step: 'signal' }, 0);
  fences.inc({ step: 'kill' }, 0);

  const polls = new Counter({
    name: 'lease_keeper_polls_total',
    help: 'Work polls by result (work, empty, error)',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  for (const result of ['work', 'empty', 'error'] as const) polls.inc({ result }, 0);

  new Gauge({
    name: 'lease_keeper_lease_time_left_seconds',
    help: 'Time left until the local lease deadline, per held work item (negative once passed)',
    labelNames: ['work_id'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const lease of snap()?.leases ?? []) {
        if (lease.leaseLeftMs !== null) this.set({ work_id: lease.workId }, lease.leaseLeftMs / 1000);
      }
    },
  });

  new Gauge({
    name: 'lease_keeper_leases_held',
    help: 'Work items whose lease is held with a job under it (phases held, draining, fencing, stopping)',
    registers: [registry],
    collect() {
      this.set((snap()?.leases ?? []).filter((l) => LIVE_PHASES.has(l.phase)).length);
    },
  });

  new Gauge({
    name: 'lease_keeper_ready',
    help: '1 once configuration is valid and the first poll answered, else 0',
    registers: [registry],
    collect() {
      this.set(snap()?.ready ? 1 : 0);
    },
  });

  new Gauge({
    name: 'lease_keeper_event_loop_lag_seconds',
    help: 'Recent worst event-loop lag seen by the stall guard',
    registers: [registry],
    collect() {
      try {
        this.set(opts.lagMs() / 1000);
      } catch {
        // leave the last value
      }
    },
  });

  new Gauge({
    name: 'lease_keeper_containment_info',
    help: 'Always 1; the label says how jobs are contained: cgroup, tag (process group + environment tag) or process-group',
    labelNames: ['containment'] as const,
    registers: [registry],
    collect() {
      this.reset();
      const kind = snap()?.containment;
      if (kind !== undefined) this.set({ containment: kind }, 1);
    },
  });

  const jobCpu = new Histogram({
    name: 'lease_keeper_job_cpu_seconds',
    help: "CPU time each finished job used (its cgroup's cpu.stat usage_usec; cgroup containment only)",
    buckets: [0.01, 0.1, 1, 10, 60, 300, 1800, 3600, 14400],
    registers: [registry],
  });
  const jobMemory = new Histogram({
    name: 'lease_keeper_job_memory_peak_bytes',
    help: "Peak memory of each finished job (its cgroup's memory.peak, where the kernel and the memory controller give it)",
    buckets: [2 ** 20, 2 ** 24, 2 ** 26, 2 ** 28, 2 ** 30, 2 ** 32, 2 ** 34, 2 ** 36],
    registers: [registry],
  });

  if (opts.stallEpisodes) {
    const episodes = opts.stallEpisodes;
    new Counter({
      name: 'lease_keeper_event_loop_stalls_total',
      help: 'Event-loop stall episodes',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(episodes());
      },
    });
  }

  return {
    registry,
    contentType: registry.contentType,
    render: () => registry.metrics(),
    heartbeat(result: string, latencyMs: number) {
      heartbeats.inc({ result });
      if (Number.isFinite(latencyMs) && latencyMs >= 0) heartbeatDuration.observe(latencyMs / 1000);
    },
    poll(result: 'work' | 'empty' | 'error') {
      polls.inc({ result });
    },
    outcome(outcome: Outcome) {
      outcomes.inc({ outcome });
    },
    fence(step: 'signal' | 'kill') {
      fences.inc({ step });
    },
    jobUsage(usage: { cpuSeconds: number | null; memoryPeakBytes: number | null }) {
      if (usage.cpuSeconds !== null) jobCpu.observe(usage.cpuSeconds);
      if (usage.memoryPeakBytes !== null) jobMemory.observe(usage.memoryPeakBytes);
    },
  };
}
