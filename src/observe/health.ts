import { monotonicClock } from '../lease/clock.js';
import type { KeeperSnapshot, LeaseView } from './snapshot.js';

/**
 * Health rules (pure: no I/O; time comes in as `nowMs` on the snapshot's monotonic clock, which defaults to
 * `monotonicClock.now()`, the clock the worker's snapshot uses).
 *
 * Two verdicts, because two consumers need different things:
 * - `healthy` / `reasons` is LIVENESS, for the systemd watchdog: false means "restarting the keeper could help".
 *   The event loop is stalled, or a lease that may have a running job is overdue (no accepted heartbeat for more
 *   than 2 × interval, as Buildkite gates its watchdog) or already past its local deadline.
 * - `readiness` is what `/healthz` reports: liveness plus "polls have been failing for more than 60 s". A poll outage
 *   never stops the watchdog pings, because a restart cannot fix a network or control-plane outage and would only
 *   add a crash loop; but a monitoring system should see it.
 */
export interface HealthVerdict {
  healthy: boolean;
  reasons: string[];
}

export interface HealthAssessment extends HealthVerdict {
  /** For /healthz: unhealthy also when polls have failed for longer than `pollFailingLimitMs`. */
  readiness: HealthVerdict;
}

export interface HealthOptions {
  /** Now on the snapshot's monotonic clock. Needed for the poll-failure age only. Default monotonicClock.now(). */
  nowMs?: number;
  /** Poll failures older than this make /healthz unhealthy. Default 60 000. */
  pollFailingLimitMs?: number;
}

/**
 * Phases in which a job may be running under the lease: not `acquiring` (no job yet), nor `ending` (lease
 * lost or job gone: a report that runs past the deadline is no reason to restart).
 */
export const LIVE_PHASES: ReadonlySet<string> = new Set(['held', 'draining', 'fencing']);
/**
 * Phases whose heartbeats are expected to be accepted. Not `fencing`: there the keeper is already handling
 * the missing heartbeats, and its fence timers do the right thing; a watchdog restart would only SIGKILL the
 * job earlier and lose the stop report.
 */
const BEATING_PHASES: ReadonlySet<string> = new Set(['held', 'draining']);

export function assessHealth(s: KeeperSnapshot, lagStalled: boolean, opts: HealthOptions = {}): HealthAssessment {
  const reasons: string[] = [];
  if (lagStalled) reasons.push('event loop stalled');
  for (const lease of s.leases) {
    if (
      BEATING_PHASES.has(lease.phase) &&
      lease.sinceAcceptedMs !== null &&
      lease.intervalMs !== null &&
      lease.sinceAcceptedMs > 2 * lease.intervalMs
    ) {
      reasons.push(
        `${lease.workId}: no heartbeat accepted for ${secs(lease.sinceAcceptedMs)} (interval ${secs(lease.intervalMs)})`,
      );
    }
    if (LIVE_PHASES.has(lease.phase) && lease.leaseLeftMs !== null && lease.leaseLeftMs < 0) {
      reasons.push(`${lease.workId}: lease deadline passed ${secs(-lease.leaseLeftMs)} ago (${lease.phase})`);
    }
  }
  const healthy = reasons.length === 0;

  const readinessReasons = [...reasons];
  const limit = opts.pollFailingLimitMs ?? 60_000;
  if (s.pollFailingSinceMs !== null) {
    const failingFor = (opts.nowMs ?? monotonicClock.now()) - s.pollFailingSinceMs;
    if (failingFor > limit) readinessReasons.push(`polls failing for ${secs(failingFor)}`);
  }
  return { healthy, reasons, readiness: { healthy: readinessReasons.length === 0, reasons: readinessReasons } };
}

export interface StatusLineOptions {
  /** LEASE_KEEPER_CONCURRENCY, shown as `held/capacity`. */
  capacity?: number;
  /** Now on the snapshot's clock, to show how long polls have been failing. Default monotonicClock.now(). */
  nowMs?: number;
}

/** Max length of the STATUS= text; `systemctl status` shows one line. */
export const STATUS_MAX = 199;

/**
 * The `STATUS=` line: items held, the most urgent lease (least time left) with its last heartbeat, then what the
 * keeper does next. E.g. `2/3 items held; work_abc lease 41s left, last heartbeat accepted; polling`,
 * `draining 1 item; work_abc lease 12s left, last heartbeat accepted`, `starting: waiting for the first poll`.
 */
export function statusLine(s: KeeperSnapshot, opts: StatusLineOptions = {}): string {
  const live = s.leases.filter((l) => l.phase !== 'acquiring');
  const parts: string[] = [];

  if (s.draining) {
    parts.push(s.leases.length === 0 ? 'stopping' : `${s.finishing === true ? 'finishing' : 'draining'} ${count(s.leases.length)}`);
  } else if (!s.ready) {
    parts.push('starting');
  } else {
    const held = opts.capacity !== undefined ? `${live.length}/${opts.capacity}` : String(live.length);
    parts.push(`${held} ${opts.capacity !== undefined ? 'items' : plural(live.length, 'item')} held`);
  }

  const urgent = mostUrgent(s.leases);
  if (urgent) parts.push(describeLease(urgent));
  if (s.leases.length > 1 && urgent) parts[parts.length - 1] += ` (+${s.leases.length - 1} more)`;

  if (!s.draining) {
    if (s.pollFailingSinceMs !== null) {
      parts.push(`polls failing for ${secs((opts.nowMs ?? monotonicClock.now()) - s.pollFailingSinceMs)}`);
    } else if (!s.ready) {
      parts.push('waiting for the first poll');
    } else if (opts.capacity === undefined || s.leases.length < opts.capacity) {
      parts.push('polling');
    }
  }
  const line = parts.join('; ').replace(/[\r\n]+/g, ' ');
  return line.length > STATUS_MAX ? `${line.slice(0, STATUS_MAX - 1)}…` : line;
}

function describeLease(l: LeaseView): string {
  if (l.phase === 'acquiring') return `${l.workId} acquiring lease`;
  const left =
    l.leaseLeftMs === null ? 'no lease' : l.leaseLeftMs < 0 ? `lease expired ${secs(-l.leaseLeftMs)} ago` : `lease ${secs(l.leaseLeftMs)} left`;
  const beat = l.lastHeartbeatResult === null ? 'no heartbeat yet' : `last heartbeat ${l.lastHeartbeatResult.replace(/_/g, ' ')}`;
  const phase = l.phase === 'held' ? '' : ` ${l.phase}`;
  return `${l.workId}${phase} ${left}, ${beat}`;
}

/** The lease with the least time left; leases without a deadline come last. */
function mostUrgent(leases: LeaseView[]): LeaseView | undefined {
  let best: LeaseView | undefined;
  for (const l of leases) {
    if (!best) best = l;
    else if (l.leaseLeftMs !== null && (best.leaseLeftMs === null || l.leaseLeftMs < best.leaseLeftMs)) best = l;
  }
  return best;
}

function secs(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  return m < 120 ? `${m}m${s % 60 ? `${s % 60}s` : ''}` : `${Math.floor(m / 60)}h${m % 60 ? `${m % 60}m` : ''}`;
}

function plural(n: number, word: string): string {
  return n === 1 ? word : `${word}s`;
}

function count(n: number): string {
  return `${n} ${plural(n, 'item')}`;
}
