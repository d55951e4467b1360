// Idle: one keeper polling an empty queue; CPU over the window, peak and final RSS.
import { join } from 'node:path';
import type { Bench } from '../lib/context.js';
import type { Emulator } from '../lib/emulator.js';
import { spawnKeeper } from '../lib/keeper.js';
import { cpuMeter, memoryMb } from '../lib/proc.js';
import { round } from '../lib/stats.js';
import { sleep, waitUntil } from '../lib/time.js';

export interface IdleResult {
  idle: {
    rss_mb: number | null;
    cpu_pct: number | null;
    rss_end_mb: number | null;
    cpu_seconds: number | null;
    cpu_user_s: number | null;
    cpu_sys_s: number | null;
    cpu_threads_s: Record<string, number>;
    window_s: number | null;
    polls: number;
  };
}

export async function measureIdle(b: Bench, emu: Emulator): Promise<IdleResult> {
  const since = await emu.admin.lastSeq();
  const k = spawnKeeper(emu, { workerId: 'bench-idle', command: ['sleep', '3600'], logFile: join(b.work, 'idle.log') });
  await waitUntil(async () => (await emu.admin.events(since)).some((e) => e.worker_id === 'bench-idle'), {
    timeoutMs: 15_000,
    everyMs: 250,
    what: 'the idle keeper to poll',
  });
  await sleep(1000); // past startup (module loading, JIT warm-up)
  const meter = cpuMeter(k.pid);
  await sleep(b.sizes.idleS * 1000);
  const cpu = meter.read();
  const mem = memoryMb(k.pid);
  const polls = (await emu.admin.events(since)).filter((e) => e.worker_id === 'bench-idle' && e.type === 'poll_empty').length;
  await k.stop();
  b.log(`idle: cpu ${cpu.pct.toFixed(3)} % over ${cpu.wallSeconds.toFixed(1)} s, rss peak ${mem.hwm.toFixed(1)} MB, now ${mem.rss.toFixed(1)} MB`);
  return {
    idle: {
      rss_mb: round(mem.hwm, 1),
      cpu_pct: round(cpu.pct, 3),
      rss_end_mb: round(mem.rss, 1),
      cpu_seconds: round(cpu.cpuSeconds, 2),
      cpu_user_s: round(cpu.userSeconds, 2),
      cpu_sys_s: round(cpu.sysSeconds, 2),
      cpu_threads_s: cpu.threads,
      window_s: round(cpu.wallSeconds, 1),
      polls,
    },
  };
}
