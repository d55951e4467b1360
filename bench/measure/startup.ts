// Start-up: from the exec of `bin/lease-keeper run` to its first poll arriving at the emulator.
import { join } from 'node:path';
import type { Bench } from '../lib/context.js';
import type { Emulator } from '../lib/emulator.js';
import { spawnKeeper } from '../lib/keeper.js';
import { percentile, round } from '../lib/stats.js';
import { sleep, waitUntil } from '../lib/time.js';

export interface StartupResult {
  startup_ms: number | null;
  startup: { trials_ms: number[]; p50: number | null; max: number };
}

export async function measureStartup(b: Bench, emu: Emulator): Promise<StartupResult> {
  const trials: number[] = [];
  for (let i = 0; i < b.sizes.startupTrials; i++) {
    const since = await emu.admin.lastSeq();
    const workerId = `bench-startup-${i}`;
    const k = spawnKeeper(emu, { workerId, command: ['sleep', '3600'], logFile: join(b.work, `startup-${i}.log`) });
    // The empty long poll is logged when it ends (after block_ms); its arrival is t_ms - waited_ms.
    // Looking only after ~1 s keeps the driver from competing with the starting keeper for a core.
    await sleep(1200);
    const ev = await waitUntil(
      async () => (await emu.admin.events(since)).find((e) => (e.type === 'poll_empty' || e.type === 'poll_delivered') && e.worker_id === workerId),
      { timeoutMs: 15_000, everyMs: 200, what: 'the first poll' },
    );
    const arrival = ev.type === 'poll_empty' ? ev.t_ms - (ev.waited_ms ?? 0) : ev.t_ms;
    trials.push(arrival - k.spawnedAt);
    await k.stop();
  }
  b.log(`startup: ${trials.join(', ')} ms`);
  const p50 = round(percentile(trials, 50), 0);
  return { startup_ms: p50, startup: { trials_ms: trials, p50, max: Math.max(...trials) } };
}
