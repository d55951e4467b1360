// Baseline: the keeper's CPU per heartbeat against a bare undici loop (bench/loops/baseline-loop.ts) that
// sends the same heartbeat traffic, in alternating windows on one emulator (reset before each):
// keeper, baseline, keeper, baseline, ... The ratio is the median of the pairs' ratios, with its spread;
// each baseline window sends exactly as many heartbeats as the keeper window before it, at its rate.
// The control is the emulator's CPU per beat in each window: the driver calls nothing on the emulator during
// either kind of window, and the baseline spreads its beats over the interval as the keeper's are (its
// wake-ups per beat and its share of bunched beats are recorded beside it, so a difference shows why).
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ROOT } from '../lib/build.js';
import { PERF_NODE_ARGS, TS_NODE_ARGS, type Bench } from '../lib/context.js';
import type { Emulator } from '../lib/emulator.js';
import { holdLeases, type Hold } from '../lib/hold.js';
import { perfRecord, printPerf } from '../lib/perf.js';
import { cpuMeter, foreignMeter, memoryMb, track, wakeups } from '../lib/proc.js';
import { medianSpread, round } from '../lib/stats.js';
import { sleep } from '../lib/time.js';

/** One figure of the emulator in each window of a pair. */
interface PerWindow {
  keeper_window: number | null;
  baseline_window: number | null;
}

interface Window {
  keeper_us: number | null;
  baseline_us: number | null;
  ratio: number | null;
  emulator_us: PerWindow;
  /** The emulator main thread's wake-ups (voluntary context switches) per beat. */
  emulator_wakeups_per_beat: PerWindow;
  /** % of the beats that reached the emulator in the same millisecond as the one before. */
  bunched_pct: PerWindow;
  heartbeats: number;
  foreign_busy_pct: { keeper: number | null; baseline: number | null };
}

export interface BaselineResult {
  baseline: {
    cpu_pct: number | null;
    cpu_per_heartbeat_ratio: number | null;
    ratio_spread: ReturnType<typeof medianSpread>;
    heartbeats: number;
    failures: number;
    window_s: number | null;
    foreign_busy_pct: number | null;
    interval_ms: number;
    cpu_seconds: number | null;
    rss_mb: number | null;
    cpu_us_per_heartbeat: number | null;
    keeper_cpu_us_per_heartbeat: number | null;
    emulator_cpu_us_per_heartbeat: PerWindow;
    emulator_wakeups_per_beat: PerWindow;
    bunched_pct: PerWindow;
    windows: Window[];
  };
  /** The worst foreign load of any window, for the runner's re-run rule. */
  worstForeignPct: number;
}

interface BaselineWindow {
  sent: number;
  failures: number;
  cpuSeconds: number;
  wallSeconds: number;
  pct: number;
  emulatorCpuSeconds: number;
  emulatorWakeups: number;
  /** Beats the emulator accepted in the window, and how many came in the same ms as the one before. */
  emulatorBeats: number;
  bunched: number;
  foreignPct: number;
  rssMb: number;
  intervalMs: number;
}

/** One baseline window: the loop claims `items`, then sends as many beats as the keeper window did. */
async function baselineWindow(b: Bench, emu: Emulator, items: number, keeper: Hold, label: string): Promise<BaselineWindow> {
  await emu.admin.reset();
  await emu.admin.queue(items);
  const count = keeper.beatsInHold;
  const intervalMs = Math.round((items * keeper.cpu.wallSeconds * 1000) / count);
  const child = spawn(
    process.execPath,
    [...TS_NODE_ARGS, ...(b.perf ? PERF_NODE_ARGS : []), join(ROOT, 'bench/loops/baseline-loop.ts'), emu.url, emu.token, emu.environmentId, String(items)],
    { stdio: ['pipe', 'pipe', 'inherit'], env: { PATH: process.env.PATH, HOME: process.env.HOME } },
  );
  const pid = track(child.pid);
  try {
    const lines = createInterface({ input: child.stdout });
    const next = <T>(): Promise<T> => new Promise((r) => lines.once('line', (l) => r(JSON.parse(l) as T)));
    child.stdin.write(`${intervalMs}\n`);
    const ready = await next<{ ready?: boolean }>();
    if (!ready.ready) throw new Error('baseline did not get ready');
    await sleep(500); // leave the prep (acks) behind
    const since = await emu.admin.lastSeq();
    const t0 = Date.now();
    const meter = cpuMeter(pid);
    const emuMeter = cpuMeter(emu.pid);
    const emuWakeups0 = wakeups(emu.pid);
    const foreign = foreignMeter();
    const done = next<{ sent: number; failures: number }>();
    const perf = b.perf ? perfRecord(pid, keeper.cpu.wallSeconds, label, b.work) : null;
    child.stdin.write(`go ${count}\n`);
    const result = await done;
    const cpu = meter.read();
    const emuCpu = emuMeter.read();
    const emulatorWakeups = wakeups(emu.pid) - emuWakeups0;
    const foreignPct = foreign.read();
    const t1 = Date.now();
    if (perf) printPerf(`${label}, heartbeat window`, await perf, pid);
    // The window's beats as the emulator saw them, read after the window (the keeper's hold does the same).
    let emulatorBeats = 0;
    let bunched = 0;
    let last = -1;
    for (const e of await emu.admin.events(since)) {
      if (e.type !== 'heartbeat_accepted' || e.new_lease || e.t_ms < t0 || e.t_ms > t1) continue;
      emulatorBeats++;
      if (e.t_ms === last) bunched++;
      last = e.t_ms;
    }
    return {
      sent: result.sent,
      failures: result.failures,
      cpuSeconds: cpu.cpuSeconds,
      wallSeconds: cpu.wallSeconds,
      pct: cpu.pct,
      emulatorCpuSeconds: emuCpu.cpuSeconds,
      emulatorWakeups,
      emulatorBeats,
      bunched,
      foreignPct,
      rssMb: memoryMb(pid).hwm,
      intervalMs,
    };
  } finally {
    child.kill('SIGKILL');
  }
}

export async function measureBaseline(b: Bench, emu: Emulator): Promise<BaselineResult> {
  const items = b.sizes.scaleItems;
  const windows: Window[] = [];
  let last: BaselineWindow | null = null;
  let worst = 0;
  for (let i = 0; i < b.sizes.ratioPairs; i++) {
    await emu.admin.reset();
    const k = await holdLeases(b, emu, { items, holdS: b.sizes.ratioWindowS, label: `ratio_keeper_${i}` });
    const base = await baselineWindow(b, emu, items, k, `ratio_baseline_${i}`);
    const keeperUs = (k.cpu.cpuSeconds / k.beatsInHold) * 1e6;
    const baseUs = (base.cpuSeconds / base.sent) * 1e6;
    windows.push({
      keeper_us: round(keeperUs, 0),
      baseline_us: round(baseUs, 0),
      ratio: round(keeperUs / baseUs, 2),
      emulator_us: { keeper_window: round((k.emulatorCpuSeconds / k.beatsInHold) * 1e6, 0), baseline_window: round((base.emulatorCpuSeconds / base.sent) * 1e6, 0) },
      emulator_wakeups_per_beat: { keeper_window: round(k.emulatorWakeups / k.beatsInHold, 2), baseline_window: round(base.emulatorWakeups / base.emulatorBeats, 2) },
      bunched_pct: { keeper_window: round((100 * k.bunchedInHold) / k.beatsInHold, 1), baseline_window: round((100 * base.bunched) / base.emulatorBeats, 1) },
      heartbeats: base.sent,
      foreign_busy_pct: { keeper: round(k.foreignPct, 1), baseline: round(base.foreignPct, 1) },
    });
    worst = Math.max(worst, k.foreignPct, base.foreignPct);
    last = base;
    const w = windows[windows.length - 1]!;
    b.log(
      `ratio window ${i + 1}/${b.sizes.ratioPairs}: keeper ${round(keeperUs, 0)} µs, baseline ${round(baseUs, 0)} µs per beat, ratio ${(keeperUs / baseUs).toFixed(2)}; ` +
        `emulator ${w.emulator_us.keeper_window} / ${w.emulator_us.baseline_window} µs per beat, ${w.emulator_wakeups_per_beat.keeper_window} / ${w.emulator_wakeups_per_beat.baseline_window} wake-ups per beat, ` +
        `${w.bunched_pct.keeper_window} / ${w.bunched_pct.baseline_window} % bunched (keeper's window / baseline's)`,
    );
  }
  const med = (f: (w: Window) => number | null, digits = 0): number | null => medianSpread(windows.map(f).filter((v): v is number => v !== null), digits).median;
  const perWindow = (f: (w: Window) => PerWindow, digits = 0): PerWindow => ({ keeper_window: med((w) => f(w).keeper_window, digits), baseline_window: med((w) => f(w).baseline_window, digits) });
  const ratios = medianSpread(windows.map((w) => w.ratio).filter((v): v is number => v !== null), 2);
  const l = last!;
  return {
    baseline: {
      cpu_pct: round(l.pct, 2),
      cpu_per_heartbeat_ratio: ratios.median,
      ratio_spread: ratios,
      heartbeats: windows.reduce((a, w) => a + w.heartbeats, 0),
      failures: l.failures,
      window_s: round(l.wallSeconds, 1),
      foreign_busy_pct: round(worst, 1),
      interval_ms: l.intervalMs,
      cpu_seconds: round(l.cpuSeconds, 2),
      rss_mb: round(l.rssMb, 1),
      cpu_us_per_heartbeat: med((w) => w.baseline_us),
      keeper_cpu_us_per_heartbeat: med((w) => w.keeper_us),
      // Control: the emulator does the same work per beat in both windows, so its cost per beat shows
      // whether the machine ran at the same speed during the two.
      emulator_cpu_us_per_heartbeat: perWindow((w) => w.emulator_us),
      emulator_wakeups_per_beat: perWindow((w) => w.emulator_wakeups_per_beat, 2),
      bunched_pct: perWindow((w) => w.bunched_pct, 1),
      windows,
    },
    worstForeignPct: worst,
  };
}
