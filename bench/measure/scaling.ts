// Scaling: one keeper holding 1, 10, 100, 1000 and 10,000 leases (job `sleep 3600`) against the emulator in
// its own process, granting what the keeper asks for (default ttl 60 s, fraction 0.33), and 1000 leases at
// the short ttl (10 s) of the scale run. Per point: CPU over the hold, CPU per heartbeat, RSS, lateness
// (a second, `debug` run of the point), expired leases (both runs), and the reaction to a 412 on a sample.
import { SHORT_TTL_S, type Bench } from '../lib/context.js';
import { withEmulator } from '../lib/emulator.js';
import { holdLeases } from '../lib/hold.js';
import { kernelLimit } from '../lib/proc.js';
import { pick, round, summary, type Summary } from '../lib/stats.js';
import { latenessFigures } from './lateness.js';

export interface ScalingPoint {
  leases: number;
  ttl_s: number;
  cpu_pct: number | null;
  cpu_us_per_heartbeat: number | null;
  heartbeats_per_s: number | null;
  rss_mb: number | null;
  rss_per_lease_kb: number | null;
  /** (RSS - RSS of the 1-lease point) / (leases - 1): what one more lease costs. */
  rss_marginal_kb_per_lease: number | null;
  lateness_ms: Pick<Summary, 'p50' | 'p99' | 'max'> | null;
  /** Only the beats planned in the hold (not while the keeper was still claiming and spawning). */
  lateness_hold_ms: Pick<Summary, 'p50' | 'p99' | 'max'> | null;
  lateness_samples: number;
  expired: number;
  expired_by_run: { info: number; debug: number | null };
  rejected: number;
  reaction_412_ms: Pick<Summary, 'n' | 'p50' | 'p99' | 'max'>;
  fill_s: number | null;
  hold_s: number | null;
  foreign_busy_pct: number | null;
  /** How the keeper contained each job (its start-up log line), when it says. */
  containment: string | null;
  nofile_soft_limit: number | null;
  /** Open file descriptors of the keeper at the end of the hold. */
  fds: number;
}

export interface ScalingResult {
  scaling: {
    points: ScalingPoint[];
    job: string;
    kernel: { pid_max: number | null; threads_max: number | null };
  };
}

export async function measureScaling(b: Bench, { env = {} }: { env?: Record<string, string> } = {}): Promise<ScalingResult> {
  const runs: { leases: number; ttl: number | null }[] = [...b.sizes.scalingPoints.map((n) => ({ leases: n, ttl: b.sizes.scalingTtlS })), ...(b.sizes.scalingShortTtlPoint ? [{ leases: 1000, ttl: SHORT_TTL_S }] : [])];
  const points: ScalingPoint[] = [];
  for (const { leases, ttl } of runs) {
    const label = `scaling_${leases}${ttl === null ? '' : `_ttl${ttl}`}`;
    const takeovers = Math.min(30, leases);
    const info = await withEmulator(ttl, (emu) =>
      holdLeases(b, emu, {
        items: leases,
        holdS: b.sizes.scalingHoldS,
        label,
        takeovers,
        env,
        fillTimeoutMs: 600_000,
      }),
    );
    // The debug run (lateness) of the full mode: the plan of each beat is only in debug lines.
    const debug = b.quick ? null : await withEmulator(ttl, (emu) => holdLeases(b, emu, { items: leases, holdS: Math.min(20, b.sizes.scalingHoldS), label: `${label}_debug`, logLevel: 'debug', env, fillTimeoutMs: 600_000 }));
    const lat = debug?.lateness ? latenessFigures(debug.lateness, debug.holdStart) : null;
    const one = points.find((p) => p.leases === 1 && p.ttl_s === (ttl ?? 60));
    const rss = info.mem.hwm;
    const containment = info.keeper.tail.lines.find((l) => typeof l.containment === 'string')?.containment;
    const point: ScalingPoint = {
      leases: info.leases,
      ttl_s: ttl ?? 60,
      cpu_pct: round(info.cpu.pct, 2),
      cpu_us_per_heartbeat: info.beatsInHold > 0 ? round((info.cpu.cpuSeconds / info.beatsInHold) * 1e6, 0) : null,
      heartbeats_per_s: round(info.beatsInHold / info.cpu.wallSeconds, 1),
      rss_mb: round(rss, 1),
      rss_per_lease_kb: round((rss * 1024) / leases, 1),
      rss_marginal_kb_per_lease: one && leases > 1 && one.rss_mb !== null ? round(((rss - one.rss_mb) * 1024) / (leases - 1), 1) : null,
      lateness_ms: lat?.lateness_ms ?? null,
      lateness_hold_ms: lat ? pick(lat.lateness_hold_ms, ['p50', 'p99', 'max']) : null,
      lateness_samples: lat?.lateness_samples ?? 0,
      expired: info.expired + (debug?.expired ?? 0),
      expired_by_run: { info: info.expired, debug: debug?.expired ?? null },
      rejected: info.rejected + (debug?.rejected ?? 0),
      reaction_412_ms: pick(summary(info.reactionMs, 0), ['n', 'p50', 'p99', 'max']),
      fill_s: round((info.jobsStartedAllAt - info.keeper.spawnedAt) / 1000, 2),
      hold_s: round(info.cpu.wallSeconds, 1),
      foreign_busy_pct: round(Math.max(info.foreignPct, debug?.foreignPct ?? 0), 1),
      containment: typeof containment === 'string' ? containment : null,
      nofile_soft_limit: info.nofileSoft,
      fds: info.fds,
    };
    points.push(point);
    b.log(
      `scaling ${leases} (ttl ${point.ttl_s} s): cpu ${point.cpu_pct} %, ${point.cpu_us_per_heartbeat} µs/beat, rss ${point.rss_mb} MB, lateness p99 ${point.lateness_ms?.p99 ?? '-'} ms, expired ${point.expired}, 412 reaction p99 ${point.reaction_412_ms.p99} ms, fill ${point.fill_s} s`,
    );
  }
  return { scaling: { points, job: 'sleep 3600', kernel: { pid_max: kernelLimit('kernel/pid_max'), threads_max: kernelLimit('kernel/threads-max') } } };
}
