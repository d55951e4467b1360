// Scale: one keeper, concurrency 1000, 1000 queued items, job `sleep 3600`, granted ttl 10 s. Claim
// everything, then hold: keeper CPU and peak RSS over the hold, expired leases, claim time.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../lib/build.js';
import { PERF_NODE_ARGS, type Bench } from '../lib/context.js';
import type { Emulator } from '../lib/emulator.js';
import { holdLeases, type Hold } from '../lib/hold.js';
import { round } from '../lib/stats.js';
import { topFrames, type TopFrames } from '../tools/profile-top.js';

export interface ScaleResult {
  leases: number;
  cpu_pct: number | null;
  rss_mb: number | null;
  expired: number;
  claim_all_s: number | null;
  hold_s: number | null;
  foreign_busy_pct: number | null;
  cpu_seconds: number | null;
  cpu_user_s: number | null;
  cpu_sys_s: number | null;
  cpu_threads_s: Record<string, number>;
  cpu_seconds_total: number | null;
  rss_end_mb: number | null;
  heartbeats_in_hold: number;
  heartbeats_per_s: number | null;
  cpu_us_per_heartbeat: number | null;
  rejected: number;
  first_poll_ms: number | null;
  claim_from_first_poll_s: number | null;
  jobs_started_all_s: number | null;
  [more: string]: unknown;
}

const PROFILE_DIR = join(ROOT, 'bench/results/profiles');

/** The figures of one hold, in the keys of `scale` (also used by the ratio's keeper windows). */
export function scaleFigures(h: Hold): ScaleResult {
  return {
    leases: h.leases,
    cpu_pct: round(h.cpu.pct, 2),
    rss_mb: round(h.mem.hwm, 1),
    expired: h.expired,
    claim_all_s: round((h.lastLeaseAt - h.keeper.spawnedAt) / 1000, 2),
    hold_s: round(h.cpu.wallSeconds, 1),
    foreign_busy_pct: round(h.foreignPct, 1),
    cpu_seconds: round(h.cpu.cpuSeconds, 2),
    cpu_user_s: round(h.cpu.userSeconds, 2),
    cpu_sys_s: round(h.cpu.sysSeconds, 2),
    cpu_threads_s: h.cpu.threads,
    cpu_seconds_total: round(h.cpuTotalSeconds, 2),
    rss_end_mb: round(h.mem.rss, 1),
    heartbeats_in_hold: h.beatsInHold,
    heartbeats_per_s: round(h.beatsInHold / h.cpu.wallSeconds, 1),
    cpu_us_per_heartbeat: h.beatsInHold > 0 ? round((h.cpu.cpuSeconds / h.beatsInHold) * 1e6, 0) : null,
    rejected: h.rejected,
    first_poll_ms: h.firstPollAt === null ? null : h.firstPollAt - h.keeper.spawnedAt,
    claim_from_first_poll_s: h.firstPollAt === null ? null : round((h.lastLeaseAt - h.firstPollAt) / 1000, 2),
    jobs_started_all_s: round((h.jobsStartedAllAt - h.keeper.spawnedAt) / 1000, 2),
  };
}

export async function measureScale(b: Bench, emu: Emulator): Promise<{ scale: ScaleResult; profile: { file: string; hold: TopFrames; whole: TopFrames } | null }> {
  const nodeArgs = b.profile ? ['--cpu-prof', '--cpu-prof-interval=97', `--cpu-prof-dir=${PROFILE_DIR}`] : b.perf ? PERF_NODE_ARGS : undefined;
  const h = await holdLeases(b, emu, { items: b.sizes.scaleItems, holdS: b.sizes.holdS, label: 'scale', perf: b.perf, ...(nodeArgs ? { nodeArgs } : {}) });
  const scale = scaleFigures(h);
  b.log(`scale: cpu ${scale.cpu_pct} %, rss peak ${scale.rss_mb} MB, ${h.beatsInHold} beats in the hold, expired ${h.expired}`);
  let profile = null;
  const file = h.profileDir ? readdirSync(h.profileDir).find((f) => f.endsWith('.cpuprofile')) : undefined;
  if (h.profileDir && file) {
    // The profile starts when the process does (≈ spawn); the hold window in ms after that.
    const path = join(h.profileDir, file);
    const from = h.holdStart - h.keeper.spawnedAt;
    profile = { file: path, hold: topFrames(path, { fromMs: from, toMs: h.holdEnd - h.keeper.spawnedAt, top: 30 }), whole: topFrames(path, { top: 30 }) };
  }
  return { scale, profile };
}
