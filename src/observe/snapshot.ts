import type { Outcome } from '../lease/outcome.js';

/**
 * What the worker exposes to health, STATUS=, the watchdog and metrics: a read-only view,
 * taken on demand. All times are monotonic milliseconds (Clock.now()).
 */
export interface LeaseView {
  workId: string;
  sessionId: string;
  /**
   * acquiring (first heartbeat, no job yet) | held (job running, lease kept) | draining (job asked to stop,
   * heartbeats go on) | fencing (heartbeats failing, job being stopped before the deadline) | ending (lease
   * lost or job gone: reporting or done).
   */
  phase: 'acquiring' | 'held' | 'draining' | 'fencing' | 'ending';
  /** Local deadline minus now; negative once passed; null before the lease is held. */
  leaseLeftMs: number | null;
  /** Time since the last accepted heartbeat's send time; null before the first. */
  sinceAcceptedMs: number | null;
  /** Current heartbeat interval (fraction × granted ttl). */
  intervalMs: number | null;
  /** Result of the last heartbeat attempt ('accepted', 'transient', 'lease_lost', …), null before one. */
  lastHeartbeatResult: string | null;
}

export interface KeeperSnapshot {
  workerId: string;
  /** True once configuration is valid and the first poll answered. */
  ready: boolean;
  /** True after SIGTERM/SIGINT: no more polls; jobs drain, or finish by themselves (`finishing`). */
  draining: boolean;
  /** True while the shutdown lets running jobs end by themselves (LEASE_KEEPER_SHUTDOWN=finish), until a drain. */
  finishing?: boolean;
  leases: LeaseView[];
  /** Monotonic ms when polls began failing in a row, null while they succeed. */
  pollFailingSinceMs: number | null;
  /** The active containment kind (cgroup, tag, process-group), for /metrics. */
  containment?: string;
}

/** Events the worker reports as they happen (metrics counters/histograms subscribe to these). */
export interface KeeperEvents {
  heartbeat(result: string, latencyMs: number): void;
  poll(result: 'work' | 'empty' | 'error'): void;
  outcome(outcome: Outcome): void;
  fence(step: 'signal' | 'kill'): void;
  /** What a job used, once it ended (cgroup containment only). */
  jobUsage?(usage: { cpuSeconds: number | null; memoryPeakBytes: number | null }): void;
}

export const noEvents: KeeperEvents = {
  heartbeat: () => {},
  poll: () => {},
  outcome: () => {},
  fence: () => {},
};
