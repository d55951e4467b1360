/**
 * The numbers of the lease rules (spec §5), as pure functions of the granted ttl. Kept apart from the
 * machine so each rule can be read, tested and documented on its own.
 */

export interface FenceTimes {
  /** Send the stop signal to the job's group at this time unless a heartbeat is accepted first. */
  signalAt: number;
  /** SIGKILL the group at this time at the latest: deadline - margin - reap allowance. */
  killAt: number;
  marginMs: number;
  graceMs: number;
}

/** Interval between heartbeats: fraction × GRANTED ttl (re-derived from every reply). */
export function heartbeatIntervalMs(grantedTtlMs: number, fraction: number): number {
  return grantedTtlMs * fraction;
}

/**
 * Safety margin before the deadline by which the job's group must be dead: it absorbs clock-rate skew
 * between us and the server, signal delivery and reaping. Default 10% of the ttl, within 250 ms..2 s.
 */
export function fenceMarginMs(grantedTtlMs: number, configured: number | null): number {
  if (configured !== null) return Math.min(configured, grantedTtlMs / 2);
  return Math.min(2000, Math.max(250, grantedTtlMs * 0.1));
}

/**
 * SIGKILL is not death: the kernel still has to tear the group down. The kill goes out this much before
 * deadline - margin, so that the group is DEAD by then and the whole margin is kept (measured: under a
 * millisecond on an idle machine; the allowance covers a loaded one). 10% of the margin, at most 50 ms.
 */
export function reapAllowanceMs(marginMs: number): number {
  return Math.min(50, marginMs / 10);
}

/**
 * The grace a FENCE may use. The configured grace (10 s by default) often does not fit into a short
 * lease (ttl 10 s), and fencing earlier would stop jobs whose heartbeats are merely slow. So the fence
 * waits until at least two heartbeat intervals have been tried, and keeps whatever grace is left, but
 * never less than 10% of the ttl. Drains use the full configured grace while heartbeats are accepted.
 */
export function effectiveFenceGraceMs(grantedTtlMs: number, intervalMs: number, marginMs: number, graceMs: number): number {
  const room = grantedTtlMs - marginMs - 2 * intervalMs;
  return Math.max(0, Math.min(graceMs, Math.max(0.1 * grantedTtlMs, room)));
}

/**
 * Delay before retrying a failed heartbeat attempt: exponential from a tenth of the interval (50 ms..1 s),
 * capped at half the interval, with "equal jitter" (half fixed, half random) so retries of many keepers
 * do not align. `attempt` is the number of attempts already made (1 after the first failure).
 */
export function backoffMs(attempt: number, intervalMs: number | null, random: number): number {
  const interval = intervalMs ?? 5000;
  const base = Math.min(1000, Math.max(50, interval / 10));
  const cap = Math.max(base, interval / 2);
  const raw = Math.min(cap, base * 2 ** Math.max(0, attempt - 1));
  return raw / 2 + (raw / 2) * random;
}
