/**
 * The chaos suite: seeded scenarios, each an emulator plus 2-3 real `bin/lease-keeper run` processes
 * sharing a queue, under faults drawn from the seed (see harness/plan.ts), checked for the invariants
 * of harness/check.ts. Scenarios run concurrently (CHAOS_CONCURRENCY at a time, default 8), with at most
 * CHAOS_BOOTS keeper processes booting at once (default 2). Definitions and figures: docs/reliability.md.
 *
 *   npm run test:chaos                         # CHAOS_SCENARIOS (default 200) seeds from CHAOS_BASE_SEED (default 1)
 *   CHAOS_SEED=123 npm run test:chaos          # replay one seed's plan; prints its timeline and run margins
 *   CHAOS_BASE_SEED=5000 npm run test:chaos    # another 200 seeds
 *   CHAOS_CONTAINMENT=process-group npm run test:chaos   # without containment: the escape check must fail
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { afterAll, describe, it } from 'vitest';
import { writeJob } from './harness/job.js';
import { describeAction, drawPlan } from './harness/plan.js';
import { type ScenarioResult, runScenario } from './harness/scenario.js';
import { addScenario, emptyTotals, formatTotals } from './harness/summary.js';
import { keptReportDir } from '../support/processes.js';

const env = process.env;
const one = env.CHAOS_SEED;
const base = Number(env.CHAOS_BASE_SEED ?? 1);
const count = Number(env.CHAOS_SCENARIOS ?? 200);
const seeds = one !== undefined && one !== '' ? [Number(one)] : Array.from({ length: count }, (_, i) => base + i);
// The job script and its fifo live in the run's temporary directory; the summary is kept outside it.
const workDir = join(tmpdir(), `lk-chaos-run-${process.pid}`);
const reportDir = keptReportDir();
mkdirSync(workDir, { recursive: true });
const job = writeJob(workDir);
const results: ScenarioResult[] = [];
const started = Date.now();
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();

/** CPU seconds of this process and of its reaped children (the keepers, their jobs). */
function cpu(): string {
  const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  const tick = 100; // USER_HZ
  const self = (Number(f[11]) + Number(f[12])) / tick;
  const children = (Number(f[13]) + Number(f[14])) / tick;
  return `harness ${self.toFixed(1)} s, keepers and jobs ${children.toFixed(1)} s`;
}

function failure(r: ScenarioResult): string {
  const plan = drawPlan(r.seed);
  return [
    `chaos seed ${r.seed}: ${r.violations.length} violation(s)`,
    ...r.violations.map((v) => `  - ${v}`),
    `replay: CHAOS_SEED=${r.seed} npm run test:chaos`,
    `plan: ttl ${plan.ttlS}s, keepers ${plan.keepers.map((k) => `${k.tag}(c${k.concurrency},g${k.graceS},${k.onShutdown})`).join(' ')}, ` +
      `items ${plan.items.map((i) => `${i.mode}/${i.durMs}ms/exit${i.exitCode}`).join(' ')}, ${plan.killVariant}`,
    `faults: ${plan.actions.map((a) => `@${a.atMs} ${describeAction(a.action)}`).join('; ')}`,
    'timeline:',
    ...r.timeline.map((l) => `  ${l}`),
    `records, keeper logs and emulator events kept in ${r.keptDir}`,
  ].join('\n');
}

describe('chaos: real keepers against the emulator under seeded faults', () => {
  afterAll(() => {
    const totals = emptyTotals();
    for (const r of results) addScenario(totals, r.seed, r.stats, r.violations.length);
    totals.wallMs = Date.now() - started;
    const text = formatTotals(totals, `Chaos suite: seeds ${seeds[0]}..${seeds[seeds.length - 1]}`);
    mkdirSync(reportDir, { recursive: true });
    rmSync(workDir, { recursive: true, force: true });
    const out = join(reportDir, 'summary.md');
    writeFileSync(out, `${text}\n`);
    writeFileSync(join(reportDir, 'results.json'), JSON.stringify(results.map((r) => ({ seed: r.seed, durationMs: r.durationMs, violations: r.violations, stats: r.stats })), null, 1));
    loopDelay.disable();
    console.log(`\n${text}\n\n(summary: ${out}; CPU: ${cpu()}; harness event-loop delay p99 ${(loopDelay.percentile(99) / 1e6).toFixed(0)} ms, max ${(loopDelay.max / 1e6).toFixed(0)} ms)`);
    if (one !== undefined && one !== '' && results[0]) {
      console.log(['timeline:', ...results[0].timeline].join('\n'));
      const margins = results[0].verdicts.map((v) => `${v.workId} ${v.keeper} ${v.how} margin=${v.marginMs}ms end=${v.endSource}${v.fenced ? ' fenced' : ''}`);
      console.log(['runs:', ...margins].join('\n'));
    }
  });

  for (const seed of seeds) {
    it.concurrent(`seed ${seed}`, async () => {
      const r = await runScenario(drawPlan(seed), { job, keepDir: one !== undefined && one !== '' });
      results.push(r);
      if (r.violations.length > 0) throw new Error(failure(r));
    });
  }
});
