// Lateness: heartbeat send time - planned time, from a scale run at `debug` (routine beats are not `info`
// lines, and only a debug line carries the plan of the next beat). The extra log lines cost that run CPU,
// so its lateness is, if anything, an overestimate of the production one.
import type { Bench } from '../lib/context.js';
import type { Emulator } from '../lib/emulator.js';
import { holdLeases } from '../lib/hold.js';
import { pick, percentile, round, summary, type Summary } from '../lib/stats.js';

export interface LatenessFigures {
  lateness_ms: Pick<Summary, 'p50' | 'p99' | 'max'>;
  lateness_samples: number;
  lateness_hold_ms: Summary;
  lateness_claim_ms: Summary;
}

export interface LatenessResult extends LatenessFigures {
  expired: number;
  timing_run: { log_level: 'debug'; hold_s: number | null; cpu_pct: number | null; heartbeats_in_hold: number; rejected: number; expired: number };
}

/** Lateness figures of a debug hold (also used by the scaling points). */
export function latenessFigures(lateness: { planned: number; ms: number }[], holdStart: number): LatenessFigures {
  const all = lateness.map((l) => l.ms);
  return {
    lateness_ms: pick(summary(all, 1), ['p50', 'p99', 'max']),
    lateness_samples: all.length,
    lateness_hold_ms: summary(lateness.filter((l) => l.planned >= holdStart).map((l) => l.ms), 1),
    lateness_claim_ms: summary(lateness.filter((l) => l.planned < holdStart).map((l) => l.ms), 1),
  };
}

export async function measureLateness(b: Bench, emu: Emulator): Promise<LatenessResult> {
  const h = await holdLeases(b, emu, { items: b.sizes.scaleItems, holdS: b.sizes.timingHoldS, label: 'scale_timing', logLevel: 'debug' });
  const f = latenessFigures(h.lateness ?? [], h.holdStart);
  b.log(`lateness: p99 ${percentile((h.lateness ?? []).map((l) => l.ms), 99)} ms (${f.lateness_samples} samples), expired ${h.expired}`);
  return {
    ...f,
    expired: h.expired,
    timing_run: { log_level: 'debug', hold_s: round(h.cpu.wallSeconds, 1), cpu_pct: round(h.cpu.pct, 2), heartbeats_in_hold: h.beatsInHold, rejected: h.rejected, expired: h.expired },
  };
}
