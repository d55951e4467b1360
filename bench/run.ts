// The benchmarks of lease-keeper (issues 6 and 12). Every measured keeper is the real `bin/lease-keeper run`
// (compiled dist/) in its own process; the emulator runs in another process, so its CPU is not counted.
// This file only chooses the measurements, orders them, and writes the results; each measurement is one
// file in measure/ with one exported function.
//
//   npm run bench                 full run, writes bench/results/latest.json (+ scaling.svg)
//   npm run bench -- --quick      the same measurements, shorter (< 90 s), writes bench/results/quick.json
//   npm run bench -- --scaling    only the scaling run (merged into the results file)
//   options: --only startup,idle,fence,scale,baseline,lateness,reaction,scaling,turnover   --out <file>
//            --hold <s>     the scale hold;  --points 1000,10000   only these scaling points
//            --wait-quiet   wait for an otherwise idle machine before each measurement, re-run disturbed ones
//            --perf         `perf record` the scale keeper, the baseline and a reaction keeper (needs perf)
//            --profile      the scale keeper under node --cpu-prof; top self-time frames of the hold window
//            --keep-logs    keep the keepers' logs, job records and emulator events (path printed)
//   Profiled runs write bench/results/profile.json instead (profilers cost CPU themselves). A run of some
//   measurements only (--only, --scaling) replaces their keys in the results file and keeps the others.
//
// See bench/README.md for what each figure means and how it is measured.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { distStamp, gitState, machine, ROOT, snapshotBuild } from './lib/build.js';
import { scalingSvg } from './lib/chart.js';
import { SHORT_TTL_S, SIZES, type Bench } from './lib/context.js';
import { stopAllEmulators, withEmulator } from './lib/emulator.js';
import { stopAllKeepers } from './lib/keeper.js';
import { busyPct, loadavg, ourCpuSeconds, systemCpu } from './lib/proc.js';
import { round } from './lib/stats.js';
import { sleep } from './lib/time.js';
import { measureBaseline } from './measure/baseline.js';
import { measureFence } from './measure/fence.js';
import { measureIdle } from './measure/idle.js';
import { measureLateness } from './measure/lateness.js';
import { measureReaction } from './measure/reaction.js';
import { measureScale } from './measure/scale.js';
import { measureScaling } from './measure/scaling.js';
import { measureStartup } from './measure/startup.js';
import { measureTurnover } from './measure/turnover.js';
import type { TopFrames } from './tools/profile-top.js';

const MEASUREMENTS = ['startup', 'idle', 'fence', 'scale', 'baseline', 'lateness', 'reaction', 'scaling', 'turnover'] as const;
type Name = (typeof MEASUREMENTS)[number];

const args = process.argv.slice(2);
const flag = (name: string): boolean => args.includes(`--${name}`);
const opt = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const QUICK = flag('quick');
const ONLY: string[] | null = flag('scaling') ? ['scaling'] : (opt('only')?.split(',') ?? null);
for (const n of ONLY ?? []) if (!(MEASUREMENTS as readonly string[]).includes(n)) throw new Error(`--only: no measurement "${n}" (${MEASUREMENTS.join(', ')})`);
const PARTIAL = ONLY !== null;
const PROFILING = flag('profile') || flag('perf');
const OUT = opt('out') ?? join(ROOT, 'bench/results', PROFILING ? 'profile.json' : QUICK ? 'quick.json' : 'latest.json');
const run = (name: Name): boolean => ONLY === null || ONLY.includes(name);

const sizes = { ...(QUICK ? SIZES.quick : SIZES.full) };
if (opt('hold') !== undefined) sizes.holdS = sizes.timingHoldS = Number(opt('hold'));
// --points 10000: only these scaling points (and not the extra one at the short ttl).
if (opt('points') !== undefined) {
  sizes.scalingPoints = (opt('points') ?? '').split(',').map(Number);
  sizes.scalingShortTtlPoint = false;
}
const WORK = join(tmpdir(), `lk-bench-${process.pid}`);
mkdirSync(WORK, { recursive: true });

const b: Bench = {
  quick: QUICK,
  perf: flag('perf'),
  profile: flag('profile'),
  keepLogs: flag('keep-logs'),
  work: WORK,
  sizes,
  log: (text) => void process.stderr.write(`[bench ${new Date().toISOString().slice(11, 23)}] ${text}\n`),
};

// ------------------------------------------------------------------------------------------ targets

type Result = Record<string, any>; // the JSON written

const TARGETS: [string, (r: Result) => number | null | undefined, '<=' | '>=' | '==', number | ((r: Result) => number | null | undefined)][] = [
  ['scale.cpu_pct', (r) => r.scale?.cpu_pct, '<=', 10],
  ['scale.rss_mb', (r) => r.scale?.rss_mb, '<=', 150],
  ['scale.lateness_ms.p99', (r) => r.scale?.lateness_ms?.p99, '<=', 20],
  ['scale.expired', (r) => r.scale?.expired, '==', 0],
  ['scale.claim_all_s', (r) => r.scale?.claim_all_s, '<=', 10],
  ['baseline.cpu_per_heartbeat_ratio', (r) => r.baseline?.cpu_per_heartbeat_ratio, '<=', 1.4],
  ['reaction_ms.p99', (r) => r.reaction_ms?.p99, '<=', 10],
  ['fence_margin_ms.min', (r) => r.fence_margin_ms?.min, '>=', (r) => r.fence_margin_ms?.configured],
  ['idle.rss_mb', (r) => r.idle?.rss_mb, '<=', 60],
  ['idle.cpu_pct', (r) => r.idle?.cpu_pct, '<=', 0.5],
  ['startup_ms', (r) => r.startup_ms, '<=', 300],
  ['scaling: expired at every point', (r) => r.scaling?.points?.reduce((a: number, p: { expired: number }) => a + p.expired, 0), '==', 0],
  ['scaling: µs/beat at 10k ÷ at 100', (r) => perBeatGrowth(r), '<=', 1.5],
  ['turnover: cold fill of 10,000 (s)', (r) => r.turnover?.cold_fill?.find((f: { keeper: { items: number } }) => f.keeper.items === 10_000)?.keeper.fill_s, '<=', 30],
  ['turnover: CPU/item keeper ÷ floor', (r) => r.turnover?.short_jobs?.cpu_per_item_ratio, '<=', 1.5],
];

function perBeatGrowth(r: Result): number | null {
  const at = (n: number): number | undefined => r.scaling?.points?.find((p: { leases: number; ttl_s: number }) => p.leases === n && p.ttl_s === 60)?.cpu_us_per_heartbeat;
  const a = at(100);
  const z = at(10_000);
  return a && z ? round(z / a, 2) : null;
}

function evaluate(r: Result): Record<string, { value: number; target: string; met: boolean }> {
  const out: Record<string, { value: number; target: string; met: boolean }> = {};
  for (const [name, get, op, t] of TARGETS) {
    const value = get(r);
    const target = typeof t === 'function' ? t(r) : t;
    if (value === undefined || value === null || target === undefined || target === null) continue;
    const met = op === '<=' ? value <= target : op === '>=' ? value >= target : value === target;
    out[name] = { value, target: `${op} ${target}`, met };
  }
  return out;
}

function printTable(r: Result, targets: ReturnType<typeof evaluate>): void {
  const rows = Object.entries(targets).map(([name, t]) => [name, String(t.value), t.target, t.met ? 'met' : 'MISSED']);
  if (r.baseline) rows.push(['baseline ratio spread (min..max)', `${r.baseline.ratio_spread?.min}..${r.baseline.ratio_spread?.max}`, '(info)', '']);
  if (r.reaction_ms) rows.push(['reaction_ms.p50', String(r.reaction_ms.p50), '(info)', '']);
  if (r.scale?.lateness_ms) rows.push(['scale.lateness_ms.p50 / max', `${r.scale.lateness_ms.p50} / ${r.scale.lateness_ms.max}`, '(info)', '']);
  for (const p of r.scaling?.points ?? []) {
    rows.push([`scaling ${p.leases} @ttl ${p.ttl_s}: cpu % / µs/beat / rss MB`, `${p.cpu_pct} / ${p.cpu_us_per_heartbeat} / ${p.rss_mb}`, '(info)', '']);
  }
  const w = [0, 1, 2, 3].map((i) => Math.max(...rows.map((x) => (x[i] ?? '').length), ['measurement', 'value', 'target', ''][i]!.length));
  const line = (x: string[]): string => x.map((c, i) => c.padEnd(w[i]!)).join('  ');
  console.log(`\nlease-keeper benchmarks (${r.mode}) on ${r.cores} cores, ${r.cpu_model}, node ${r.node}`);
  console.log(line(['measurement', 'value', 'target', '']));
  console.log(line(w.map((n) => '-'.repeat(n))));
  for (const x of rows) console.log(line(x));
}

function printProfile(p: { file: string; hold: TopFrames; whole: TopFrames }): void {
  console.log(`\ncpu profile: ${p.file}`);
  for (const [title, t] of [['hold window', p.hold], ['whole run', p.whole]] as const) {
    console.log(`\n-- ${title}: ${t.sampledMs} ms sampled`);
    for (const o of t.byOrigin.slice(0, 12)) console.log(`  ${String(o.pct).padStart(5)}%  ${o.origin}`);
    console.log('  top self time:');
    for (const f of t.top.slice(0, 25)) console.log(`  ${String(f.pct).padStart(5)}%  ${String(f.ms).padStart(6)} ms  [${f.origin}] ${f.frame}`);
    console.log('  dependency/node self time charged to our nearest caller:');
    for (const f of t.oursInclusiveOfCallees.slice(0, 15)) console.log(`  ${String(f.pct).padStart(5)}%  ${String(f.ms).padStart(6)} ms  ${f.frame}`);
  }
}

// ------------------------------------------------------------------------------------------ phases

/**
 * The machine must be otherwise quiet: every timing figure suffers when other work competes for the
 * cores. Samples the whole machine for 1-2 s; with --wait-quiet waits (up to 10 min) until it is under 10 % busy.
 */
async function checkQuiet(): Promise<number> {
  const deadline = performance.now() + (flag('wait-quiet') ? 600_000 : 0);
  for (;;) {
    const a = systemCpu();
    await sleep(QUICK ? 1000 : 2000);
    const pct = busyPct(a, systemCpu());
    if (pct < 10) return pct;
    if (performance.now() > deadline) {
      b.log(`WARNING: the machine is ${pct.toFixed(0)} % busy (load ${loadavg()}) before the run: timing figures will suffer (use --wait-quiet)`);
      return pct;
    }
    b.log(`machine ${pct.toFixed(0)} % busy (load ${loadavg()}); waiting for it to calm down`);
    await sleep(10_000);
  }
}

/** With --wait-quiet, a measurement disturbed by more than QUIET_PCT foreign load is run again (at most MAX_ATTEMPTS times). */
const QUIET_PCT = 5;
const MAX_ATTEMPTS = 4;
const phases: Record<string, { foreign_busy_pct: number | null; worst_window_pct?: number | null; attempt: number; loadavg_end: number }> = {};

/**
 * Runs one measurement as a phase: waits for a quiet machine first (--wait-quiet), and measures the CPU
 * that processes other than ours used meanwhile ("foreign", % of the whole machine).
 * `worst`: a measurement that measures in windows is judged by its worst window.
 */
const failures: Record<string, string> = {};

/** A measurement that failed is reported (`failures` in the JSON) and the run goes on with the next one. */
async function phase<T>(name: string, fn: () => Promise<T>, worst?: (out: T) => number): Promise<T | null> {
  try {
    return await measured(name, fn, worst);
  } catch (err) {
    failures[name] = err instanceof Error ? err.message : String(err);
    b.log(`${name}: FAILED: ${failures[name]}`);
    await cleanup();
    return null;
  }
}

async function measured<T>(name: string, fn: () => Promise<T>, worst?: (out: T) => number): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    if (flag('wait-quiet')) await checkQuiet();
    const s0 = systemCpu();
    const o0 = ourCpuSeconds();
    const out = await fn();
    const s1 = systemCpu();
    const phasePct = (100 * Math.max(0, s1.busy - s0.busy - (ourCpuSeconds() - o0))) / Math.max(1e-9, s1.total - s0.total);
    const windows = worst?.(out);
    const foreignPct = windows ?? phasePct;
    phases[name] = { foreign_busy_pct: round(phasePct, 1), ...(windows !== undefined ? { worst_window_pct: round(windows, 1) } : {}), attempt, loadavg_end: loadavg() };
    b.log(`${name}: other processes kept the machine ${foreignPct.toFixed(1)} % busy meanwhile (load ${loadavg()})`);
    if (!flag('wait-quiet') || foreignPct <= QUIET_PCT || attempt >= MAX_ATTEMPTS) return out;
    b.log(`${name}: disturbed, running it again`);
  }
}

async function cleanup(): Promise<void> {
  await stopAllKeepers();
  await stopAllEmulators();
}
// Ctrl-C / kill: stop the keepers (and their jobs) and the emulators before leaving.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    b.log(`${sig}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });
}

async function main(): Promise<void> {
  const busyBefore = await checkQuiet();
  const t0 = performance.now();
  const sys0 = systemCpu();
  const m = machine();
  const built = distStamp();
  snapshotBuild(join(WORK, 'build'));
  const result: Result = { mode: QUICK ? 'quick' : 'full', ...m, at: new Date().toISOString(), git: gitState() };
  const short = <T>(fn: Parameters<typeof withEmulator<T>>[1]): Promise<T> => withEmulator(SHORT_TTL_S, fn);
  try {
    if (QUICK && run('fence')) {
      // Quick mode: the fence (≈ one ttl of waiting on hung requests) runs beside startup and idle, each
      // against its own emulator. Full mode runs every measurement alone.
      const [fence] = await Promise.all([
        short((emu) => measureFence(b, emu)),
        short(async (emu) => {
          if (run('startup')) Object.assign(result, await measureStartup(b, emu));
          if (run('idle')) Object.assign(result, await measureIdle(b, emu));
        }),
      ]);
      Object.assign(result, fence);
    } else {
      if (run('startup')) Object.assign(result, await phase('startup', () => short((emu) => measureStartup(b, emu))));
      if (run('idle')) Object.assign(result, await phase('idle', () => short((emu) => measureIdle(b, emu))));
      if (run('fence')) Object.assign(result, await phase('fence', () => short((emu) => measureFence(b, emu))));
    }
    if (run('scale')) {
      const sc = await phase('scale', () => short((emu) => measureScale(b, emu)), (o) => o.scale.foreign_busy_pct ?? 0);
      if (sc?.profile) printProfile(sc.profile);
      if (sc) result.scale = sc.scale;
    }
    if (run('baseline')) {
      const base = await phase('baseline', () => short((emu) => measureBaseline(b, emu)), (o) => o.worstForeignPct);
      if (base) result.baseline = base.baseline;
    }
    const t = run('lateness') ? await phase('scale_timing', () => short((emu) => measureLateness(b, emu))) : null;
    if (t) {
      const production = result.scale?.expired ?? null;
      result.scale ??= {};
      Object.assign(result.scale, {
        lateness_ms: t.lateness_ms,
        expired: (production ?? 0) + t.expired,
        lateness_samples: t.lateness_samples,
        lateness_hold_ms: t.lateness_hold_ms,
        lateness_claim_ms: t.lateness_claim_ms,
        expired_by_run: { production, timing: t.expired },
        timing_run: t.timing_run,
      });
    }
    if (run('reaction')) {
      // Steady churn (the figure the target is about), then, in full mode, a mass stop.
      result.reaction_ms = (await phase('reaction', () => short((emu) => measureReaction(b, emu, { label: 'steady', triggersPerS: sizes.reactionRate })))) ?? undefined;
      if (!QUICK && result.reaction_ms) {
        result.reaction_ms.mass_stop = await phase('reaction_mass_stop', () => short((emu) => measureReaction(b, emu, { label: 'mass', triggersPerS: null })));
        // The same mass stop with each job in its process group only, beside the default containment.
        const pg = await phase('reaction_mass_stop_pg', () =>
          short((emu) => measureReaction(b, emu, { label: 'mass_pg', triggersPerS: null, env: { LEASE_KEEPER_CONTAINMENT: 'process-group' } })),
        );
        result.reaction_ms.mass_stop_by_containment = { [result.reaction_ms.mass_stop?.containment ?? 'default']: result.reaction_ms.mass_stop, 'process-group': pg };
      }
    }
    if (run('scaling')) Object.assign(result, await phase('scaling', () => measureScaling(b)));
    if (run('turnover')) Object.assign(result, await phase('turnover', () => measureTurnover(b)));
  } finally {
    await cleanup();
  }
  if (Object.keys(failures).length > 0) result.failures = failures;
  result.duration_s = round((performance.now() - t0) / 1000, 1);
  // Every measurement ran a private copy of the build made at the start (others may rebuild dist/ meanwhile).
  result.git.dist_rebuilt_during_run = distStamp() !== built;
  result.machine_busy_pct = { before: round(busyBefore, 1), during: round(busyPct(sys0, systemCpu()), 1), loadavg_end: loadavg(), phases };
  const written = PARTIAL && existsSync(OUT) ? mergeInto(JSON.parse(readFileSync(OUT, 'utf8')) as Result, result) : result;
  written.targets = evaluate(written);
  mkdirSync(dirname(OUT), { recursive: true });
  writeFileSync(OUT, `${JSON.stringify(orderKeys(written), null, 2)}\n`);
  if (result.scaling) {
    const svg = join(dirname(OUT), basename(OUT) === 'latest.json' ? 'scaling.svg' : `${basename(OUT, '.json')}.scaling.svg`);
    const pts = (result.scaling.points as { ttl_s: number; leases: number; cpu_us_per_heartbeat: number | null; rss_marginal_kb_per_lease: number | null }[]).filter((p) => p.ttl_s === (sizes.scalingTtlS ?? 60));
    writeFileSync(svg, scalingSvg(pts, `lease-keeper ${result.git.commit}, ${result.mode} run ${String(result.at).slice(0, 16)}Z, ${m.cores} cores, node ${m.node}; ttl ${sizes.scalingTtlS ?? 60} s, job sleep`));
    console.log(`chart: ${svg}`);
  }
  printTable(written, written.targets);
  console.log(`\nwritten ${OUT} in ${result.duration_s} s`);
  if (!b.keepLogs) rmSync(WORK, { recursive: true, force: true });
  else console.log(`logs kept in ${WORK}`);
}

/** A partial run replaces the keys it measured and records when and on which commit. */
function mergeInto(old: Result, fresh: Result): Result {
  const keys = Object.keys(fresh).filter((k) => !['mode', 'node', 'cores', 'cpu_model', 'kernel', 'at', 'git', 'duration_s', 'machine_busy_pct'].includes(k));
  const merged: Result = { ...old };
  for (const k of keys) merged[k] = fresh[k];
  merged.partial_runs = { ...(old.partial_runs ?? {}), ...Object.fromEntries(keys.map((k) => [k, { at: fresh.at, git: fresh.git, duration_s: fresh.duration_s, machine_busy_pct: fresh.machine_busy_pct }])) };
  return merged;
}

/** The keys first, in its order, then the rest. */
function orderKeys(r: Result): Result {
  const first = ['scale', 'baseline', 'reaction_ms', 'fence_margin_ms', 'idle', 'startup_ms', 'scaling', 'turnover', 'node', 'cores', 'at'];
  const out: Result = {};
  for (const k of first) if (k in r) out[k] = r[k];
  for (const [k, v] of Object.entries(r)) if (!(k in out)) out[k] = v;
  return out;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
