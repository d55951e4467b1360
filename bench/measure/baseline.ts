// Baseline: the keeper's CPU per heartbeat against a bare undici loop (bench/loops/baseline-loop.ts) that
// sends the same heartbeat traffic, in alternating windows on one emulator (reset before each):
// keeper, baseline, keeper, baseline, ... The ratio is the median of the pairs' ratios, with its spread;
// each baseline window sends exactly as many heartbeats as the keeper window before it, at its rate.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ROOT } from '../lib/build.js';
import { PERF_NODE_ARGS, TS_NODE_ARGS, type Bench } from '../lib/context.js';
import type { Emulator } from '../lib/emulator.js';
import { holdLeases, type Hold } from '../lib/hold.js';
import { perfRecord, printPerf } from '../lib/perf.js';
import { cpuMeter, foreignMeter, memoryMb, track } from '../lib/proc.js';
import { medianSpread, round } from '../lib/stats.js';
import { sleep } from '../lib/time.js';

interface Window {
  keeper_us: number | null;
  baseline_us: number | null;
  ratio: number | null;
  emulator_us: { keeper_window: number | null; baseline_window: number | null };
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
    emulator_cpu_us_per_heartbeat: { keeper_window: number | null; baseline_window: number | null };
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
    const meter = cpuMeter(pid);
    const emuMeter = cpuMeter(emu.pid);
    const foreign = foreignMeter();
    const done = next<{ sent: number; failures: number }>();
    const perf = b.perf ? perfRecord(pid, keeper.cpu.wallSeconds, label, b.work) : null;
    child.stdin.write(`go ${count}\n`);
    const result = await done;
    const cpu = meter.read();
    const emuCpu = emuMeter.read();
    const foreignPct = foreign.read();
    if (perf) printPerf(`${label}, heartbeat window`, await perf, pid);
    return {
      sent: result.sent,
      failures: result.failures,
      cpuSeconds: cpu.cpuSeconds,
      wallSeconds: cpu.wallSeconds,
      pct: cpu.pct,
      emulatorCpuSeconds: emuCpu.cpuSeconds,
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
      heartbeats: base.sent,
      foreign_busy_pct: { keeper: round(k.foreignPct, 1), baseline: round(base.foreignPct, 1) },
    });
    worst = Math.max(worst, k.foreignPct, base.foreignPct);
    last = base;
    b.log(`ratio window ${i + 1}/${b.sizes.ratioPairs}: keeper ${round(keeperUs, 0)} µs, baseline ${round(baseUs, 0)} µs per beat, ratio ${(keeperUs / baseUs).toFixed(2)}`);
  }
  const med = (f: (w: Window) => number | null): number | null => medianSpread(windows.map(f).filter((v): v is number => v !== null), 0).median;
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
      emulator_cpu_us_per_heartbeat: { keeper_window: med((w) => w.emulator_us.keeper_window), baseline_window: med((w) => w.emulator_us.baseline_window) },
      windows,
    },
    worstForeignPct: worst,
  };
}
