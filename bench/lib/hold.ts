// One keeper claiming N queued items and holding their leases (job `sleep`): the core of the scale,
// lateness, scaling and ratio measurements. The emulator's events are read as they come (EventFeed), so
// that 10,000 leases fit, except during the hold: the measured window leaves the emulator alone (its CPU
// per beat is the ratio's control), and its events are read once it has ended.
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Bench } from './context.js';
import { EventFeed, type Emulator } from './emulator.js';
import { logMs, spawnKeeper, type Keeper, type LogLine } from './keeper.js';
import { perfRecord, printPerf } from './perf.js';
import { cpuMeter, cpuSeconds, foreignMeter, memoryMb, wakeups, type CpuReading } from './proc.js';
import { sleep, waitUntil } from './time.js';

export interface HoldOptions {
  items: number;
  holdS: number;
  label: string;
  logLevel?: 'info' | 'debug';
  /** Extra keeper variables. */
  env?: Record<string, string>;
  nodeArgs?: string[];
  /** `perf record` the keeper over the hold. */
  perf?: boolean;
  /** Items taken over (412) at the end, spread at 20 per second: the reaction sample. */
  takeovers?: number;
  /** Time allowed for every job to start. */
  fillTimeoutMs?: number;
}

/** An accepted heartbeat, as much as lateness needs. */
interface Beat {
  workId: string;
  expected: string | undefined;
  t: number;
}

export interface Hold {
  keeper: Keeper;
  holdStart: number;
  holdEnd: number;
  cpu: CpuReading;
  emulatorCpuSeconds: number;
  /** Wake-ups of the emulator's main thread over the hold (voluntary context switches). */
  emulatorWakeups: number;
  /** Beats of the hold that reached the emulator in the same millisecond as the one before. */
  bunchedInHold: number;
  foreignPct: number;
  mem: { hwm: number; rss: number };
  /** Open file descriptors of the keeper at the end of the hold, and its soft limit. */
  fds: number;
  nofileSoft: number | null;
  cpuTotalSeconds: number;
  /** Leases taken (first accepted heartbeat per item) and when the last was taken. */
  leases: number;
  lastLeaseAt: number;
  firstPollAt: number | null;
  jobsStartedAllAt: number;
  beatsInHold: number;
  expired: number;
  rejected: number;
  /** Per item, when the keeper logged its job_signaled line after the 412 (ms after the reply). */
  reactionMs: number[];
  /** Debug runs: lateness of each beat (arrival - planned), with its planned time. */
  lateness: { planned: number; ms: number }[] | null;
  profileDir: string | null;
}

export async function holdLeases(b: Bench, emu: Emulator, o: HoldOptions): Promise<Hold> {
  const debug = o.logLevel === 'debug';
  const firstLease = new Map<string, number>();
  const beats: Beat[] = [];
  let firstPollAt: number | null = null;
  let holdStart = Infinity;
  let holdEnd = Infinity;
  let beatsInHold = 0;
  let bunchedInHold = 0;
  let lastHoldBeat = -1;
  let expired = 0;
  let rejected = 0;
  const rejectedAt = new Map<string, number>();
  const workerId = `bench-${o.label}`;
  const feed = new EventFeed(emu.admin, (e) => {
    if (e.type === 'heartbeat_accepted' && e.work_id !== undefined) {
      if (e.new_lease) {
        if (!firstLease.has(e.work_id)) firstLease.set(e.work_id, e.t_ms);
      } else if (e.t_ms >= holdStart && e.t_ms < holdEnd) {
        beatsInHold++;
        if (e.t_ms === lastHoldBeat) bunchedInHold++;
        lastHoldBeat = e.t_ms;
      }
      if (debug) beats.push({ workId: e.work_id, expected: e.expected, t: e.t_ms });
    } else if (e.type === 'lease_expired' && e.t_ms <= holdEnd) expired++;
    else if (e.type === 'heartbeat_rejected' && e.work_id !== undefined) {
      if (e.t_ms <= holdEnd) rejected++;
      else if (e.status === 412) rejectedAt.set(e.work_id, e.t_ms);
    } else if (firstPollAt === null && (e.type === 'poll_delivered' || e.type === 'poll_empty') && e.worker_id === workerId) firstPollAt = e.t_ms;
  });
  await feed.start(o.items >= 1000 ? 1000 : 2000);
  await emu.admin.queue(o.items);
  const profileDir = o.nodeArgs?.some((a) => a.startsWith('--cpu-prof')) ? (o.nodeArgs.find((a) => a.startsWith('--cpu-prof-dir='))?.slice(15) ?? null) : null;
  if (profileDir) rmSync(profileDir, { recursive: true, force: true });
  const k = spawnKeeper(emu, {
    workerId,
    concurrency: o.items,
    command: ['sleep', '3600'],
    logFile: join(b.work, `${o.label}.log`),
    env: { LEASE_KEEPER_LOG_LEVEL: o.logLevel ?? 'info', ...o.env },
    ...(o.nodeArgs ? { nodeArgs: o.nodeArgs } : {}),
  });
  try {
    await waitUntil(
      () => {
        k.tail.poll();
        if (!k.alive()) throw new Error(`${o.label}: keeper exited early; see ${k.logFile}`);
        return k.tail.count('job_started') >= o.items;
      },
      { timeoutMs: o.fillTimeoutMs ?? 120_000, everyMs: 100, what: `${o.items} jobs started` },
    );
    await feed.pause(); // no reads of the emulator's log during the hold
    holdStart = Date.now();
    b.log(`${o.label}: ${o.items} leases held and jobs started ${((holdStart - k.spawnedAt) / 1000).toFixed(2)} s after spawn; holding ${o.holdS} s (log level ${o.logLevel ?? 'info'})`);
    const meter = cpuMeter(k.pid);
    const emuMeter = cpuMeter(emu.pid);
    const emuWakeups0 = wakeups(emu.pid);
    const foreign = foreignMeter();
    const perf = o.perf ? perfRecord(k.pid, o.holdS, o.label, b.work) : null;
    await sleep(o.holdS * 1000);
    const cpu = meter.read();
    const emuCpu = emuMeter.read();
    const emulatorWakeups = wakeups(emu.pid) - emuWakeups0;
    const foreignPct = foreign.read();
    if (perf) printPerf(`${o.label} keeper, hold window`, await perf, k.pid);
    const mem = memoryMb(k.pid);
    const fds = readdirSync(`/proc/${k.pid}/fd`).length;
    const nofileSoft = softNofile(k.pid);
    holdEnd = Date.now();
    const cpuTotalSeconds = cpuSeconds(k.pid);
    await sleep(500); // let beats planned just before holdEnd arrive
    feed.resume(o.items >= 1000 ? 1000 : 2000);
    await feed.pull();

    // The reaction sample: takeovers (412 at the next heartbeat), after the measured window.
    const sample = [...firstLease.keys()].slice(0, o.takeovers ?? 0);
    for (const [i, id] of sample.entries()) {
      await sleep(Math.max(0, holdEnd + 500 + i * 50 - Date.now()));
      await emu.admin.takeover(id);
    }
    const reactionMs: number[] = [];
    if (sample.length > 0) {
      const want = new Set(sample);
      const signaled = new Map<string, number>();
      await waitUntil(
        async () => {
          await feed.pull();
          for (const l of k.tail.poll()) if (l.msg === 'job_signaled' && l.work_id !== undefined && want.has(l.work_id)) signaled.set(l.work_id, logMs(l));
          return signaled.size >= sample.length;
        },
        { timeoutMs: 90_000, everyMs: 250, what: `${o.label}: the keeper to signal ${sample.length} taken-over jobs` },
      ).catch((err: unknown) => b.log(`${o.label}: ${(err as Error).message}`));
      for (const [id, at] of signaled) {
        const r = rejectedAt.get(id);
        if (r !== undefined) reactionMs.push(at - r);
      }
    }
    await feed.stop();
    k.tail.poll();
    const jobStarted = k.tail.lines.filter((l) => l.msg === 'job_started').map(logMs);
    return {
      keeper: k,
      holdStart,
      holdEnd,
      cpu,
      emulatorCpuSeconds: emuCpu.cpuSeconds,
      emulatorWakeups,
      bunchedInHold,
      foreignPct,
      mem,
      fds,
      nofileSoft,
      cpuTotalSeconds,
      leases: firstLease.size,
      lastLeaseAt: Math.max(...firstLease.values()),
      firstPollAt,
      jobsStartedAllAt: Math.max(...jobStarted),
      beatsInHold,
      expired,
      rejected,
      reactionMs,
      lateness: debug ? computeLateness(k.tail.lines, beats, holdEnd) : null,
      profileDir: profileDir && readdirSync(profileDir).length > 0 ? profileDir : null,
    };
  } finally {
    await feed.stop().catch(() => {});
    // A drain (one SIGTERM: every job stopped and reported) leaves nothing behind; a second SIGTERM
    // would leave the job cgroups to the next keeper's start-up sweep.
    await k.stop({ drainMs: 180_000, timeoutMs: 30_000 });
  }
}

/**
 * Lateness of each heartbeat = its arrival at the emulator (the `heartbeat_accepted` t_ms) minus the
 * time the keeper planned to send it. At debug the keeper logs every accepted reply (`lease_acquired` /
 * `heartbeat`, pino `time`) with `next_in_ms` = planned next send - now and the `last_heartbeat` it
 * will carry; the next beat is the emulator event whose `expected` is that `last_heartbeat`.
 */
function computeLateness(lines: LogLine[], beats: Beat[], holdEnd: number): { planned: number; ms: number }[] {
  const planned = new Map<string, number>();
  for (const l of lines) {
    if ((l.msg === 'heartbeat' || l.msg === 'lease_acquired') && typeof l.next_in_ms === 'number') {
      planned.set(`${l.work_id} ${String(l.last_heartbeat)}`, logMs(l) + l.next_in_ms);
    }
  }
  const out: { planned: number; ms: number }[] = [];
  for (const e of beats) {
    if (e.expected === 'NO_HEARTBEAT' || e.expected === undefined) continue;
    const p = planned.get(`${e.workId} ${e.expected}`);
    if (p === undefined || p > holdEnd) continue;
    out.push({ planned: p, ms: e.t - p });
  }
  return out;
}

/** Soft "Max open files" of a process (Node raises it to the hard limit at start-up). */
function softNofile(pid: number): number | null {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
    return m?.[1] === undefined ? null : m[1] === 'unlimited' ? Infinity : Number(m[1]);
  } catch {
    return null;
  }
}
