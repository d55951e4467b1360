/**
 * The soak (not in CI): N keepers x M items for a set time, faults on all along, then the invariants of
 * the chaos suite over the whole run (test/chaos/harness/check.ts) and its figures.
 *
 *   npm run soak                                      # 10 minutes, 4 keepers, 8 items in flight
 *   SOAK_MINUTES=30 SOAK_KEEPERS=6 SOAK_ITEMS=12 npm run soak
 *   npm run soak -- --minutes 1 --keepers 3 --items 6 --seed 42
 *
 * Other knobs: SOAK_SEED (faults, keepers and items drawn from it), SOAK_TTL (granted ttl, s, default 2),
 * SOAK_FAULT_EVERY_MS (mean gap between faults, default 1500), SOAK_KILL=killmode|pdeathsig (what follows
 * a keeper SIGKILL, see test/chaos/harness/plan.ts; default killmode). A keeper that was stopped or killed
 * is started again 0.5-1.5 s later, as systemd's Restart= would; the queue is topped up to M items.
 * Exit 0 when no invariant was violated, 1 otherwise.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeJob } from '../../test/chaos/harness/job.js';
import { type ItemSpec, type KeeperSpec, type Plan, drawAction, drawItem } from '../../test/chaos/harness/plan.js';
import { Rng } from '../../test/chaos/harness/prng.js';
import { Scenario } from '../../test/chaos/harness/scenario.js';
import { addScenario, emptyTotals, formatTotals } from '../../test/chaos/harness/summary.js';

function option(flag: string, envName: string, fallback: number): number {
  const i = process.argv.indexOf(flag);
  const raw = i >= 0 ? process.argv[i + 1] : process.env[envName];
  const n = raw === undefined || raw === '' ? fallback : Number(raw);
  if (!Number.isFinite(n) || n <= 0) {
    process.stderr.write(`soak: ${flag} / ${envName} must be a positive number, got ${JSON.stringify(raw)}\n`);
    process.exit(2);
  }
  return n;
}

const minutes = option('--minutes', 'SOAK_MINUTES', 10);
const nKeepers = Math.round(option('--keepers', 'SOAK_KEEPERS', 4));
const nItems = Math.round(option('--items', 'SOAK_ITEMS', 8));
const seed = Math.round(option('--seed', 'SOAK_SEED', (Date.now() % 1_000_000) + 1));
const ttlS = Math.round(option('--ttl', 'SOAK_TTL', 2));
const faultEveryMs = option('--fault-every-ms', 'SOAK_FAULT_EVERY_MS', 1500);
const killVariant: Plan['killVariant'] = process.env.SOAK_KILL === 'pdeathsig' ? 'pdeathsig' : 'killmode';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const log = (text: string): void => void process.stdout.write(`[soak +${((Date.now() - startedAt) / 1000).toFixed(0).padStart(4)}s] ${text}\n`);

const startedAt = Date.now();
const r = new Rng(seed);
const keepers: KeeperSpec[] = Array.from({ length: nKeepers }, (_, i) => ({
  tag: `k${i}`,
  workerId: `soak-${seed}-k${i}`,
  concurrency: r.pick([1, 2, 3]),
  graceS: r.pick([0.2, 0.5, 1, 2]),
  onShutdown: r.chance(0.25) ? 'release' : 'stop',
}));
// Enough items for the whole run, drawn up front so that the seed decides them.
const supply: ItemSpec[] = Array.from({ length: Math.ceil(minutes * 60 * nItems * 1.5) + 100 }, () => drawItem(r, killVariant));
const plan: Plan = {
  seed,
  ttlS,
  keepers,
  items: supply.slice(0, nItems),
  reserve: supply.slice(nItems),
  inFlight: nItems,
  killVariant,
  chaosMs: minutes * 60_000,
  actions: [],
};

const workDir = join(tmpdir(), `lk-soak-${seed}-${process.pid}`);
mkdirSync(workDir, { recursive: true });
const job = writeJob(workDir);

log(`seed ${seed}: ${nKeepers} keepers (${keepers.map((k) => `c${k.concurrency}/g${k.graceS}/${k.onShutdown}`).join(' ')}), ${nItems} items in flight, ttl ${ttlS}s, ${minutes} min, a fault every ~${faultEveryMs} ms, ${killVariant}`);
const s = new Scenario(plan, { job, settleTimeoutMs: 60_000 });
await s.start();
const endAt = s.t0 + minutes * 60_000;

const topUp = setInterval(() => s.topUp(), 200);
// systemd's Restart=: once every process of a plan keeper has exited (never two with one Worker-ID at
// once), it is started again 0.5-1.5 s later.
const restarting = new Set<string>();
const restarter = setInterval(() => {
  for (const spec of keepers) {
    if (restarting.has(spec.tag) || s.keepers.some((k) => k.spec.tag === spec.tag && k.exit === null)) continue;
    restarting.add(spec.tag);
    setTimeout(() => {
      void s.startKeeper(spec).then((k) => {
        restarting.delete(spec.tag);
        if (k) s.count('keeper_restart');
      });
    }, r.int(500, 1500));
  }
}, 250);
const progress = setInterval(() => {
  const items = s.emu.items();
  const stopped = items.filter((i) => i.state === 'stopped').length;
  const live = s.keepers.filter((k) => k.exit === null).length;
  const injected = Object.values(s.injected).reduce((a, b) => a + b, 0);
  log(`${stopped}/${items.length} items stopped, ${live} keepers up (${s.keepers.length} started), ${injected} injections, ${s.violations.length} violations seen live`);
}, 60_000);

const faults = new Rng(seed).fork('soak-faults');
const pending: Promise<void>[] = [];
while (Date.now() < endAt) {
  await sleep(Math.min(endAt - Date.now(), faults.int(Math.round(faultEveryMs / 2), Math.round(faultEveryMs * 1.5))));
  if (Date.now() >= endAt) break;
  const action = drawAction(faults, ttlS, nKeepers);
  if (action.kind === 'keeper_sigkill') action.restartAfterMs = null; // the restarter above does it
  pending.push(s.apply(action).catch((err: unknown) => s.note(`action failed: ${String(err)}`)));
}
clearInterval(topUp);
clearInterval(restarter);
clearInterval(progress);
await Promise.all(pending);
log('faults off: settling (every item must reach stopped), then SIGTERM to every keeper');
await s.settle(60_000);
await s.shutdown();
await s.expireLeases();
const result = await s.finish();

const totals = emptyTotals();
addScenario(totals, seed, result.stats, result.violations.length);
totals.wallMs = Date.now() - startedAt;
totals.scenarios = 1;
const items = result.stats.items;
const outcomes = result.stats.outcomes;
const text = [
  formatTotals(totals, `Soak: ${nKeepers} keepers x ${nItems} items, ${minutes} min, seed ${seed}, ttl ${ttlS} s, ${killVariant}`),
  '',
  `work items through the queue: ${items} (${(items / minutes).toFixed(1)} per minute, every one stopped by the end); job runs: ${result.stats.runs}; keeper outcomes: ${Object.entries(outcomes).map(([k, v]) => `${k} ${v}`).join(', ')}`,
  `reproduce: SOAK_MINUTES=${minutes} SOAK_KEEPERS=${nKeepers} SOAK_ITEMS=${nItems} SOAK_SEED=${seed} SOAK_TTL=${ttlS} SOAK_FAULT_EVERY_MS=${faultEveryMs}${killVariant === 'pdeathsig' ? ' SOAK_KILL=pdeathsig' : ''} npm run soak`,
].join('\n');
writeFileSync(join(workDir, 'soak-summary.md'), `${text}\n`);
writeFileSync(join(workDir, 'soak-results.json'), JSON.stringify({ seed, minutes, keepers: nKeepers, items: nItems, ttlS, faultEveryMs, killVariant, totals, violations: result.violations }, null, 1));
process.stdout.write(`\n${text}\n\n(summary: ${join(workDir, 'soak-summary.md')})\n`);
if (result.violations.length > 0) {
  process.stdout.write(`\n${result.violations.length} VIOLATION(S):\n${result.violations.slice(0, 50).map((v) => `  - ${v}`).join('\n')}\nrecords, keeper logs and events kept in ${result.keptDir}\n`);
  process.exit(1);
}
process.exit(0);
