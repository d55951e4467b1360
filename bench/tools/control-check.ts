// What makes the emulator's CPU per heartbeat (the ratio's control) differ between a keeper window and a
// baseline window? One emulator (ttl 10 s), phases that alternate: a keeper holding N leases, then the
// baseline loop holding as many, then again. Within each phase, windows alternate between the driver
// reading the emulator's event log once a second (as the EventFeed of a hold does) and the driver leaving
// the emulator alone; every window's beats and other calls are counted from the event log afterwards.
//
//   npm run build && node --import tsx bench/tools/control-check.ts [--items 1000] [--window 10] [--phases 4]
import { spawn } from 'node:child_process';
import { readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ROOT, snapshotBuild } from '../lib/build.js';
import { TS_NODE_ARGS } from '../lib/context.js';
import { EventFeed, withEmulator, type Emulator, type EmuEvent } from '../lib/emulator.js';
import { spawnKeeper } from '../lib/keeper.js';
import { cpuMeter, foreignMeter, track, wakeups } from '../lib/proc.js';
import { medianSpread, round } from '../lib/stats.js';
import { sleep, waitUntil } from '../lib/time.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const ITEMS = opt('items', 1000);
const WINDOW_S = opt('window', 10);
const PHASES = opt('phases', 4);
const WORK = join(tmpdir(), `lk-control-check-${process.pid}`);
const log = (t: string): void => void process.stderr.write(`[control ${new Date().toISOString().slice(11, 23)}] ${t}\n`);

type Mode = 'reads' | 'quiet';
interface WindowResult {
  phase: string;
  mode: Mode;
  beats: number;
  emu_us_per_beat: number;
  emu_cpu_s: number;
  other_events: Record<string, number>;
  emu_sockets: number;
  /** Sockets of the emulator first seen during the window (sampled every 50 ms): new connections. */
  new_sockets: number;
  /** Voluntary context switches of the emulator's main thread per beat: its wake-ups. */
  wakeups_per_beat: number;
  /** Share of beats that arrived in the same millisecond as the one before (bunched). */
  bunched_pct: number;
  foreign_pct: number;
}

function socketInodes(pid: number): Set<string> {
  const out = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const l = readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (l.startsWith('socket:')) out.add(l);
    } catch {
      /* closed meanwhile */
    }
  }
  return out;
}


function sockets(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
    } catch {
      /* closed meanwhile */
    }
  }
  return n;
}

/** One window: the emulator's CPU over it, with or without the driver reading its event log each second. */
async function window(emu: Emulator, phase: string, mode: Mode): Promise<WindowResult> {
  const since = await emu.admin.lastSeq();
  const feed = mode === 'reads' ? new EventFeed(emu.admin, () => {}) : null;
  if (feed) await feed.start(1000);
  const t0 = Date.now();
  const meter = cpuMeter(emu.pid);
  const foreign = foreignMeter();
  const sw0 = wakeups(emu.pid);
  const seen = socketInodes(emu.pid);
  let fresh = 0;
  const sampler = setInterval(() => {
    for (const s of socketInodes(emu.pid)) if (!seen.has(s)) (seen.add(s), fresh++);
  }, 50);
  await sleep(WINDOW_S * 1000);
  const cpu = meter.read();
  const foreignPct = foreign.read();
  const switches = wakeups(emu.pid) - sw0;
  clearInterval(sampler);
  const t1 = Date.now();
  const socks = sockets(emu.pid);
  await feed?.stop();
  const events: EmuEvent[] = await emu.admin.events(since);
  let beats = 0;
  let bunched = 0;
  let prev = -1;
  const other: Record<string, number> = {};
  for (const e of events) {
    if (e.t_ms < t0 || e.t_ms >= t1) continue;
    if (e.type === 'heartbeat_accepted' && !e.new_lease) {
      beats++;
      if (e.t_ms === prev) bunched++;
      prev = e.t_ms;
    } else other[e.type] = (other[e.type] ?? 0) + 1;
  }
  const r = {
    phase,
    mode,
    beats,
    emu_us_per_beat: round((cpu.cpuSeconds / beats) * 1e6, 0)!,
    emu_cpu_s: round(cpu.cpuSeconds, 2)!,
    other_events: other,
    emu_sockets: socks,
    new_sockets: fresh,
    wakeups_per_beat: round(switches / beats, 2)!,
    bunched_pct: round((100 * bunched) / beats, 1)!,
    foreign_pct: round(foreignPct, 1)!,
  };
  log(`${phase} ${mode}: ${beats} beats, emulator ${r.emu_us_per_beat} µs/beat, wake-ups/beat ${r.wakeups_per_beat}, bunched ${r.bunched_pct} %, new sockets ${fresh}, other events ${JSON.stringify(other)}, foreign ${r.foreign_pct} %`);
  return r;
}

/** Windows in the order reads, quiet, quiet, reads (drift within the phase cancels). */
async function windows(emu: Emulator, phase: string): Promise<WindowResult[]> {
  const out: WindowResult[] = [];
  for (const mode of ['reads', 'quiet', 'quiet', 'reads'] as const) out.push(await window(emu, phase, mode));
  return out;
}

async function keeperPhase(emu: Emulator, i: number): Promise<WindowResult[]> {
  await emu.admin.reset();
  await emu.admin.queue(ITEMS);
  const k = spawnKeeper(emu, { workerId: `control-keeper-${i}`, concurrency: ITEMS, command: ['sleep', '3600'], logFile: join(WORK, `keeper-${i}.log`) });
  try {
    await waitUntil(() => (k.tail.poll(), k.tail.count('job_started') >= ITEMS), { timeoutMs: 180_000, everyMs: 100, what: `${ITEMS} jobs started` });
    await sleep(1000);
    return await windows(emu, `keeper_${i}`);
  } finally {
    await k.stop({ drainMs: 180_000, timeoutMs: 30_000 });
  }
}

async function baselinePhase(emu: Emulator, i: number, intervalMs: number): Promise<WindowResult[]> {
  await emu.admin.reset();
  await emu.admin.queue(ITEMS);
  const child = spawn(process.execPath, [...TS_NODE_ARGS, join(ROOT, 'bench/loops/baseline-loop.ts'), emu.url, emu.token, emu.environmentId, String(ITEMS)], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { PATH: process.env.PATH, HOME: process.env.HOME },
  });
  track(child.pid);
  try {
    const lines = createInterface({ input: child.stdout });
    const ready = new Promise((r) => lines.once('line', r));
    child.stdin.write(`${intervalMs}\n`);
    await ready;
    child.stdin.write(`go 1000000000\n`); // beats until killed
    await sleep(1000);
    return await windows(emu, `baseline_${i}`);
  } finally {
    child.kill('SIGKILL');
  }
}

async function main(): Promise<void> {
  snapshotBuild(join(WORK, 'build'));
  const all: WindowResult[] = [];
  await withEmulator(10, async (emu) => {
    let intervalMs = 3135; // the keeper's mean per-item interval at ttl 10 s; replaced by the measured one
    for (let i = 0; i < PHASES; i++) {
      if (i % 2 === 0) {
        const w = await keeperPhase(emu, i);
        all.push(...w);
        const beats = w.reduce((a, x) => a + x.beats, 0);
        intervalMs = Math.round((ITEMS * w.length * WINDOW_S * 1000) / beats);
      } else all.push(...(await baselinePhase(emu, i, intervalMs)));
    }
  });
  const med = (f: (w: WindowResult) => boolean): number | null => medianSpread(all.filter(f).map((w) => w.emu_us_per_beat), 0).median;
  const summary = {
    items: ITEMS,
    window_s: WINDOW_S,
    emulator_us_per_beat: {
      keeper_reads: med((w) => w.phase.startsWith('keeper') && w.mode === 'reads'),
      keeper_quiet: med((w) => w.phase.startsWith('keeper') && w.mode === 'quiet'),
      baseline_reads: med((w) => w.phase.startsWith('baseline') && w.mode === 'reads'),
      baseline_quiet: med((w) => w.phase.startsWith('baseline') && w.mode === 'quiet'),
    },
    windows: all,
  };
  console.log(JSON.stringify(summary, null, 2));
  rmSync(WORK, { recursive: true, force: true });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
