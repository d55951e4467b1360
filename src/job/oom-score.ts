import { readFileSync, writeFileSync } from 'node:fs';

/** The keeper's own oom_score_adj (a unit's OOMScoreAdjust=), 0 where it cannot be read. */
export function ownOomScoreAdj(): number {
  try {
    const n = Number(readFileSync('/proc/self/oom_score_adj', 'utf8').trim());
    return Number.isInteger(n) ? n : 0;
  } catch {
    return 0;
  }
}

/**
 * The job's oom_score_adj: the keeper's own plus `raise` (LEASE_KEEPER_JOB_OOM_SCORE_ADJ), at most 1000,
 * so that the kernel's OOM killer takes a job before the keeper that holds every lease. Null for 0.
 * Raising needs no privilege; it is never lowered (that needs CAP_SYS_RESOURCE, and a negative
 * OOMScoreAdjust= would then make every job unkillable).
 */
export function jobOomScore(raise: number, own: number = ownOomScoreAdj()): number | null {
  if (raise <= 0) return null;
  return Math.min(1000, own + raise);
}

/** Best effort: a job that already exited, or a kernel that refuses, changes nothing for the lease. */
export function raiseOomScore(pid: number, score: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/oom_score_adj`, String(score));
    return true;
  } catch {
    return false;
  }
}
