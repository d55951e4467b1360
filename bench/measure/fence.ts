// Fence margin: hang every heartbeat of a held item (fault `hang`, times 0): the keeper self-fences.
// Margin = the server's lease deadline (`lease_expires_at_ms` of the last accepted heartbeat) minus the
// moment the job's whole group was dead, as recorded by the job's death watcher (bench/jobs/trap-job.sh,
// BENCH_DEATH_WATCH). Also reported: the same against the keeper's `job_exited` line. One job in four
// exits on TERM; the others ignore it and need the SIGKILL, which decides the minimum.
import { readFileSync, rmSync } from 'node:fs';
import { cgroup2Mount } from '../../src/job/cgroup.js';
import { join } from 'node:path';
import { SHORT_TTL_S, TRAP_JOB, type Bench } from '../lib/context.js';
import type { Emulator } from '../lib/emulator.js';
import { logMs, readRecord, spawnKeeper } from '../lib/keeper.js';
import { round } from '../lib/stats.js';
import { sleep, waitUntil } from '../lib/time.js';

interface FenceTrial {
  job: 'ignores_term' | 'exits_on_term';
  margin_ms: number | null;
  margin_keeper_saw_ms: number;
  term_before_deadline_ms: number | null;
  configured_margin_ms: number | null;
  steps: unknown[];
  server_expired_after_death: boolean | null;
}

export interface FenceResult {
  fence_margin_ms: { min: number; configured: number | null; max: number; min_keeper_saw: number; trials: FenceTrial[] };
}

const ignoresTerm = (i: number): boolean => i % 4 !== 0;

export async function measureFence(b: Bench, emu: Emulator): Promise<FenceResult> {
  const n = b.sizes.fenceKeepers;
  // The death watcher must outlive the job's cgroup: as root it joins the cgroup2 root.
  const mount = cgroup2Mount(readFileSync('/proc/self/mountinfo', 'utf8'));
  const watchCgroup = mount !== null && process.getuid?.() === 0 ? mount : null;
  const since = await emu.admin.lastSeq();
  const recOf = (i: number): string => join(b.work, `fence-${i}.rec`);
  for (let i = 0; i < n; i++) rmSync(recOf(i), { force: true });
  const keepers = Array.from({ length: n }, (_, i) =>
    spawnKeeper(emu, {
      workerId: `bench-fence-${i}`,
      command: [TRAP_JOB],
      logFile: join(b.work, `fence-${i}.log`),
      env: { BENCH_RECORD: recOf(i), BENCH_DEATH_WATCH: '1', JOB_IGNORE_TERM: ignoresTerm(i) ? '1' : '0', ...(watchCgroup ? { BENCH_WATCH_CGROUP: watchCgroup } : {}) },
    }),
  );
  await emu.admin.queue(n);
  const started = await waitUntil(
    () => {
      const recs = keepers.map((_, i) => readRecord(recOf(i)).find((r) => r.kind === 'start'));
      return recs.every((r) => r !== undefined) ? (recs as NonNullable<(typeof recs)[number]>[]) : null;
    },
    { timeoutMs: 30_000, everyMs: 100, what: 'the fence jobs to start' },
  );
  for (const r of started) await emu.admin.fault({ endpoint: 'heartbeat', kind: 'hang', times: 0, work_id: r.workId });
  await waitUntil(
    () =>
      keepers.every((k, i) => {
        k.tail.poll();
        return k.tail.count('job_exited') >= 1 && readRecord(recOf(i)).some((r) => r.kind === 'dead');
      }),
    { timeoutMs: SHORT_TTL_S * 1000 + 15_000, everyMs: 50, what: 'every fenced job to exit' },
  );
  await sleep(500);
  const events = await emu.admin.events(since);
  const trials: FenceTrial[] = [];
  for (const [i, k] of keepers.entries()) {
    const workId = started[i]!.workId;
    const deadline = events.filter((e) => e.type === 'heartbeat_accepted' && e.work_id === workId).pop()?.lease_expires_at_ms ?? NaN;
    const exited = k.tail.lines.find((l) => l.msg === 'job_exited' && l.work_id === workId);
    const fenced = k.tail.lines.filter((l) => l.msg === 'fenced' && l.work_id === workId);
    const rec = readRecord(recOf(i));
    const term = rec.find((r) => r.kind === 'term');
    const dead = rec.find((r) => r.kind === 'dead');
    const expiredEv = events.find((e) => e.type === 'lease_expired' && e.work_id === workId);
    trials.push({
      job: ignoresTerm(i) ? 'ignores_term' : 'exits_on_term',
      margin_ms: round(deadline - (dead?.ms ?? NaN), 2),
      margin_keeper_saw_ms: exited ? deadline - logMs(exited) : NaN,
      term_before_deadline_ms: term ? round(deadline - term.ms, 1) : null,
      configured_margin_ms: typeof fenced[0]?.margin_ms === 'number' ? fenced[0].margin_ms : null,
      steps: fenced.map((f) => f.step),
      server_expired_after_death: expiredEv && dead ? expiredEv.t_ms > dead.ms : null,
    });
  }
  await emu.admin.clearFaults();
  await Promise.all(keepers.map((k) => k.stop()));
  const margins = trials.map((t) => t.margin_ms ?? -Infinity);
  const configured = trials.find((t) => t.configured_margin_ms !== null)?.configured_margin_ms ?? null;
  b.log(`fence: margins ${margins.join(', ')} ms (configured ${configured}); as the keeper saw it ${trials.map((t) => t.margin_keeper_saw_ms).join(', ')}`);
  return {
    fence_margin_ms: {
      min: Math.min(...margins),
      configured,
      max: Math.max(...margins),
      min_keeper_saw: Math.min(...trials.map((t) => t.margin_keeper_saw_ms)),
      trials,
    },
  };
}
