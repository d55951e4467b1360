// Reaction: from the arrival of a 412 / 409 / `stopping` reply to the job's TERM trap. Several keepers,
// each holding items whose job is bench/jobs/trap-job.sh; each item gets one of: a graceful stop (next
// heartbeat answers `stopping`), a takeover (412) or a forced stop (409). "Arrival" is the emulator's event
// time of that heartbeat (the reply leaves right after it): reaction = trap time - event time, same clock.
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PERF_NODE_ARGS, TRAP_JOB, type Bench } from '../lib/context.js';
import type { Emulator } from '../lib/emulator.js';
import { readRecord, spawnKeeper } from '../lib/keeper.js';
import { perfRecord, printPerf } from '../lib/perf.js';
import { pick, summary, type Summary } from '../lib/stats.js';
import { sleep, waitUntil } from '../lib/time.js';

type Kind = 'stopping' | '412' | '409';

export interface ReactionResult {
  p50: number | null;
  p99: number | null;
  max: number | null;
  trials: number;
  missing: number;
  triggers_per_s: number | null;
  by_reply: Record<Kind, Pick<Summary, 'n' | 'p50' | 'p99' | 'max'>>;
  keepers: number;
  items_per_keeper: number;
  /** How the keepers contained the jobs (their `starting` line). */
  containment: string | null;
  mass_stop?: ReactionResult;
  mass_stop_by_containment?: Record<string, ReactionResult>;
}

/**
 * `triggersPerS`: the stops/takeovers are spread at this rate (steady churn); null = all at once (a mass
 * stop: every job exits within one heartbeat interval, and each exit costs its keeper work meanwhile).
 * `env`: extra keeper variables (e.g. a containment mode).
 */
export async function measureReaction(
  b: Bench,
  emu: Emulator,
  { label, triggersPerS, env = {} }: { label: string; triggersPerS: number | null; env?: Record<string, string> },
): Promise<ReactionResult> {
  const { reactionKeepers, reactionPerKeeper } = b.sizes;
  const n = reactionKeepers * reactionPerKeeper;
  const record = join(b.work, `reaction-${label}.rec`);
  rmSync(record, { force: true });
  await emu.admin.queue(n);
  const keepers = Array.from({ length: reactionKeepers }, (_, i) =>
    spawnKeeper(emu, {
      workerId: `bench-reaction-${label}-${i}`,
      concurrency: reactionPerKeeper,
      command: [TRAP_JOB],
      logFile: join(b.work, `reaction-${label}-${i}.log`),
      env: { BENCH_RECORD: record, LEASE_KEEPER_STOP_GRACE_SECONDS: '5', ...env },
      ...(b.perf ? { nodeArgs: PERF_NODE_ARGS } : {}),
    }),
  );
  await waitUntil(() => readRecord(record).filter((r) => r.kind === 'start').length >= n, { timeoutMs: 60_000, everyMs: 100, what: `${n} reaction jobs` });
  await sleep(500);
  const items = [...new Set(readRecord(record).filter((r) => r.kind === 'start').map((r) => r.workId))];
  const triggerSeq = await emu.admin.lastSeq();
  const kinds: Kind[] = ['stopping', '412', '409'];
  const kindOf = new Map<string, Kind>();
  const t0 = performance.now();
  const perf = b.perf ? perfRecord(keepers[0]!.pid, (triggersPerS === null ? 0 : n / triggersPerS) + 4, `reaction-${label}`, b.work) : null;
  for (const [i, id] of items.entries()) {
    if (triggersPerS !== null) {
      const due = t0 + (i * 1000) / triggersPerS - performance.now();
      if (due > 0) await sleep(due);
    }
    const kind = kinds[i % 3]!;
    kindOf.set(id, kind);
    if (kind === 'stopping') await emu.admin.stop(id, false);
    else if (kind === '412') await emu.admin.takeover(id);
    else await emu.admin.stop(id, true);
  }
  await waitUntil(() => readRecord(record).filter((r) => r.kind === 'term').length >= items.length, {
    timeoutMs: 30_000,
    everyMs: 100,
    what: 'every job to get its TERM',
  }).catch((err: unknown) => b.log(`reaction: ${(err as Error).message}`));
  if (perf) printPerf(`reaction keeper 0 (${label}), while its jobs are stopped`, await perf, keepers[0]!.pid);
  const events = await emu.admin.events(triggerSeq);
  if (b.keepLogs) writeFileSync(join(b.work, `reaction-${label}-events.json`), JSON.stringify(events));
  const terms = new Map(readRecord(record).filter((r) => r.kind === 'term').map((r) => [r.workId, r.ms]));
  const samples: number[] = [];
  const byKind: Record<Kind, number[]> = { stopping: [], 412: [], 409: [] };
  let missing = 0;
  for (const id of items) {
    const kind = kindOf.get(id)!;
    const ev = events.find(
      (e) =>
        e.work_id === id &&
        (kind === 'stopping' ? e.type === 'heartbeat_accepted' && e.state === 'stopping' : e.type === 'heartbeat_rejected' && e.status === Number(kind)),
    );
    const term = terms.get(id);
    if (!ev || term === undefined) {
      missing++;
      continue;
    }
    samples.push(term - ev.t_ms);
    byKind[kind].push(term - ev.t_ms);
  }
  keepers[0]!.tail.poll();
  const said = keepers[0]!.tail.lines.find((l) => typeof l.containment === 'string')?.containment;
  await Promise.all(keepers.map((k) => k.stop({ drainMs: 2000 })));
  const s = summary(samples, 2);
  b.log(`reaction (${label}): ${samples.length} trials, p50 ${s.p50} ms, p99 ${s.p99} ms, max ${s.max} ms, missing ${missing}`);
  const byReply = (k: Kind): Pick<Summary, 'n' | 'p50' | 'p99' | 'max'> => pick(summary(byKind[k], 2), ['n', 'p50', 'p99', 'max']);
  return {
    p50: s.p50,
    p99: s.p99,
    max: s.max,
    trials: samples.length,
    missing,
    triggers_per_s: triggersPerS,
    by_reply: { stopping: byReply('stopping'), 412: byReply('412'), 409: byReply('409') },
    keepers: reactionKeepers,
    items_per_keeper: reactionPerKeeper,
    containment: typeof said === 'string' ? said : null,
  };
}
