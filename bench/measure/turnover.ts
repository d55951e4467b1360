// Turnover against a floor. (a) Cold fill: from the exec to N jobs running (N queued items, concurrency N,
// job `sleep 3600`, default ttl), then the drain of as many jobs (one SIGTERM: every job stopped and
// reported, then the keeper exits). (b) Short jobs: items finished per second and keeper CPU per item at
// concurrency 100 with `true` as the job (claim, lease, run, report, confirm). Beside each, the floor
// (bench/loops/floor-loop.ts): the same calls and the same spawn with no keeper logic.
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { join } from 'node:path';
import { removeCgroupTree } from '../lib/cgroups.js';
import { createInterface } from 'node:readline';
import { ROOT } from '../lib/build.js';
import { TS_NODE_ARGS, type Bench } from '../lib/context.js';
import { EventFeed, withEmulator, type Emulator } from '../lib/emulator.js';
import { logMs, spawnKeeper, type Keeper } from '../lib/keeper.js';
import { cpuMeter, cpuSeconds, foreignMeter, track } from '../lib/proc.js';
import { round } from '../lib/stats.js';
import { sleep, waitUntil } from '../lib/time.js';

interface Fill {
  items: number;
  containment: string | null;
  fill_s: number | null;
  fill_cpu_ms_per_item: number | null;
  drain_s: number | null;
}

interface Short {
  containment: string | null;
  items_per_s: number | null;
  cpu_ms_per_item: number | null;
  cpu_pct: number | null;
  items: number;
  window_s: number | null;
  foreign_busy_pct: number | null;
}

interface ShortPair {
  concurrency: number;
  job: string;
  keeper: Short;
  floor: Short;
  cpu_per_item_ratio: number | null;
}

export interface TurnoverResult {
  turnover: {
    cold_fill: { keeper: Fill; floor: Fill; ratio_fill_s: number | null }[];
    /** In the keeper's default containment on this machine. */
    short_jobs: ShortPair;
    /** Full mode: the same in each containment the machine allows (start-up cost per job). */
    short_jobs_by_containment?: Record<string, ShortPair>;
    floor_claim_lanes: number;
  };
}

/** The containment a keeper reports in its `starting` line (cgroup, tag or process-group). */
async function containmentOf(k: Keeper): Promise<string | null> {
  const line = await waitUntil(
    () => {
      k.tail.poll();
      return k.tail.lines.find((l) => typeof l.containment === 'string');
    },
    { timeoutMs: 15_000, everyMs: 50, what: 'the keeper to say its containment' },
  ).catch(() => null);
  return typeof line?.containment === 'string' ? line.containment : null;
}

/** The floor's way of containing a job that matches the keeper's (the tag fallback has no floor of its own). */
const floorContainment = (keeper: string | null): string => (keeper === 'cgroup' ? 'cgroup' : 'process-group');

/** Claims the floor keeps in flight while filling (the keeper decides its own). */
const FLOOR_LANES = 16;

function startFloor(emu: Emulator, args: string[]): { child: ChildProcessByStdio<Writable, Readable, null>; pid: number; next: <T>() => Promise<T>; kill(): void } {
  const child = spawn(process.execPath, [...TS_NODE_ARGS, join(ROOT, 'bench/loops/floor-loop.ts'), emu.url, emu.token, emu.environmentId, ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { PATH: process.env.PATH, HOME: process.env.HOME },
  });
  const pid = track(child.pid);
  const lines = createInterface({ input: child.stdout });
  const queue: string[] = [];
  const waiting: { resolve: (l: string) => void; reject: (err: Error) => void }[] = [];
  let gone: Error | null = null;
  lines.on('line', (l) => {
    const w = waiting.shift();
    if (w) w.resolve(l);
    else queue.push(l);
  });
  // A floor that died (a bug, or a failure it does not retry) fails the measurement instead of hanging it.
  child.once('exit', (code, signal) => {
    gone = new Error(`the floor exited (${code ?? signal}) before answering`);
    for (const w of waiting.splice(0)) w.reject(gone);
  });
  const next = <T>(): Promise<T> =>
    new Promise<string>((resolve, reject) => {
      const l = queue.shift();
      if (l !== undefined) resolve(l);
      else if (gone) reject(gone);
      else waiting.push({ resolve, reject });
    }).then((l) => JSON.parse(l) as T);
  const kill = (): void => {
    child.kill('SIGKILL');
    removeCgroupTree(`lk-floor-${pid}`);
  };
  return { child, pid, next, kill };
}

async function keeperFill(b: Bench, emu: Emulator, n: number, env: Record<string, string>): Promise<Fill> {
  await emu.admin.queue(n);
  const k = spawnKeeper(emu, { workerId: `bench-fill-${n}`, concurrency: n, command: ['sleep', '3600'], logFile: join(b.work, `fill-${n}.log`), env });
  try {
    const containment = await containmentOf(k);
    await waitUntil(
      () => {
        k.tail.poll();
        if (!k.alive()) throw new Error(`fill ${n}: keeper exited early; see ${k.logFile}`);
        return k.tail.count('job_started') >= n;
      },
      { timeoutMs: 600_000, everyMs: 100, what: `${n} jobs started` },
    );
    const cpu = cpuSeconds(k.pid);
    const last = Math.max(...k.tail.lines.filter((l) => l.msg === 'job_started').map(logMs));
    const t1 = performance.now();
    const exit = await k.stop({ drainMs: 300_000 });
    const drainS = (performance.now() - t1) / 1000;
    if (exit.code !== 0) b.log(`fill ${n}: the keeper's drain ended with ${JSON.stringify(exit)}`);
    return { items: n, containment, fill_s: round((last - k.spawnedAt) / 1000, 2), fill_cpu_ms_per_item: round((cpu * 1000) / n, 2), drain_s: round(drainS, 2) };
  } finally {
    await k.stop({ timeoutMs: 30_000 });
  }
}

async function floorFill(emu: Emulator, n: number, containment: string): Promise<Fill> {
  await emu.admin.queue(n);
  const f = startFloor(emu, ['fill', String(n), String(FLOOR_LANES), containment, '--', 'sleep', '3600']);
  try {
    const filled = await f.next<{ ms: number }>();
    const cpu = cpuSeconds(f.pid);
    f.child.stdin.write('drain\n');
    const drained = await f.next<{ ms: number }>();
    return { items: n, containment, fill_s: round(filled.ms / 1000, 2), fill_cpu_ms_per_item: round((cpu * 1000) / n, 2), drain_s: round(drained.ms / 1000, 2) };
  } finally {
    f.kill();
  }
}

/**
 * Runs `start()` (a keeper or the floor, taking items at `concurrency`) with the queue topped up, and
 * counts the items stopped (reported) in a window after a warm-up.
 */
async function shortWindow(b: Bench, emu: Emulator, pid: () => number, warmS: number, containment: string | null): Promise<Short> {
  let stopped = 0;
  let inWindow = false;
  let inWindowCount = 0;
  const feed = new EventFeed(emu.admin, (e) => {
    if (e.type === 'stopped') {
      stopped++;
      if (inWindow) inWindowCount++;
    }
  });
  await feed.start(500);
  let queued = 0;
  const topUp = async (): Promise<void> => {
    await feed.pull();
    while (queued - stopped < 3000) {
      await emu.admin.queue(1000);
      queued += 1000;
    }
  };
  await topUp();
  const timer = setInterval(() => void topUp().catch(() => {}), 500);
  try {
    await sleep(warmS * 1000);
    await feed.pull();
    inWindow = true;
    const meter = cpuMeter(pid());
    const foreign = foreignMeter();
    await sleep(b.sizes.shortS * 1000);
    const cpu = meter.read();
    const foreignPct = foreign.read();
    await feed.pull();
    inWindow = false;
    return {
      containment,
      items_per_s: round(inWindowCount / cpu.wallSeconds, 1),
      cpu_ms_per_item: inWindowCount > 0 ? round((cpu.cpuSeconds * 1000) / inWindowCount, 3) : null,
      cpu_pct: round(cpu.pct, 1),
      items: inWindowCount,
      window_s: round(cpu.wallSeconds, 1),
      foreign_busy_pct: round(foreignPct, 1),
    };
  } finally {
    clearInterval(timer);
    await feed.stop();
  }
}

/** Short jobs (`true`) at the short concurrency: the keeper with `env`, then the floor in the matching containment. */
async function shortPair(b: Bench, env: Record<string, string>): Promise<ShortPair> {
  const c = b.sizes.shortConcurrency;
  const warmS = b.quick ? 1 : 3;
  let contained: string | null = null;
  const keeper = await withEmulator(null, async (emu) => {
    const k = spawnKeeper(emu, { workerId: 'bench-short', concurrency: c, command: ['true'], logFile: join(b.work, `short-${env.LEASE_KEEPER_CONTAINMENT ?? 'default'}.log`), env });
    try {
      contained = await containmentOf(k);
      return await shortWindow(b, emu, () => k.pid, warmS, contained);
    } finally {
      await k.stop({ drainMs: 60_000, timeoutMs: 30_000 });
      }
  });
  const floor = await withEmulator(null, async (emu) => {
    const how = floorContainment(contained);
    const f = startFloor(emu, ['short', '0', String(c), how, '--', 'true']);
    try {
      await f.next<{ ready: boolean }>();
      const out = await shortWindow(b, emu, () => f.pid, warmS, how);
      f.child.stdin.write('stop\n');
      await Promise.race([f.next<{ stopped: boolean }>(), sleep(10_000)]);
      return out;
    } finally {
      f.kill();
    }
  });
  b.log(`short jobs (${contained}): keeper ${keeper.items_per_s} items/s at ${keeper.cpu_ms_per_item} ms CPU/item; floor ${floor.items_per_s} items/s at ${floor.cpu_ms_per_item} ms CPU/item`);
  return {
    concurrency: c,
    job: 'true',
    keeper,
    floor,
    cpu_per_item_ratio: keeper.cpu_ms_per_item !== null && floor.cpu_ms_per_item ? round(keeper.cpu_ms_per_item / floor.cpu_ms_per_item, 2) : null,
  };
}

export async function measureTurnover(b: Bench, { env = {} }: { env?: Record<string, string> } = {}): Promise<TurnoverResult> {
  const coldFill: TurnoverResult['turnover']['cold_fill'] = [];
  for (const n of b.sizes.fillSizes) {
    const keeper = await withEmulator(null, (emu) => keeperFill(b, emu, n, env));
    const floor = await withEmulator(null, (emu) => floorFill(emu, n, floorContainment(keeper.containment)));
    coldFill.push({ keeper, floor, ratio_fill_s: keeper.fill_s !== null && floor.fill_s ? round(keeper.fill_s / floor.fill_s, 2) : null });
    b.log(`cold fill ${n} (${keeper.containment}): keeper ${keeper.fill_s} s (${keeper.fill_cpu_ms_per_item} ms CPU/item), drain ${keeper.drain_s} s; floor ${floor.fill_s} s (${floor.fill_cpu_ms_per_item} ms CPU/item), drain ${floor.drain_s} s`);
  }
  const shortJobs = await shortPair(b, env);
  let byContainment: Record<string, ShortPair> | undefined;
  if (!b.quick && shortJobs.keeper.containment !== 'process-group') {
    // The start-up cost of each job in the other containment: the process group only.
    byContainment = { [shortJobs.keeper.containment ?? 'default']: shortJobs, 'process-group': await shortPair(b, { ...env, LEASE_KEEPER_CONTAINMENT: 'process-group' }) };
  }
  return {
    turnover: {
      cold_fill: coldFill,
      short_jobs: shortJobs,
      ...(byContainment ? { short_jobs_by_containment: byContainment } : {}),
      floor_claim_lanes: FLOOR_LANES,
    },
  };
}
