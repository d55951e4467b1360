/** Adds scenario figures up and prints them as the tables docs/reliability.md quotes. */
import { HARNESS_FAULTS, JOB_KINDS, SERVER_FAULTS } from './plan.js';
import type { ScenarioStats } from './check.js';

/** Every scenario's figures added up (the checker's ScenarioStats), plus the run's own. */
export interface Totals extends ScenarioStats {
  scenarios: number;
  failed: number;
  wallMs: number;
  failedSeeds: number[];
}

export function emptyTotals(): Totals {
  return {
    scenarios: 0,
    failed: 0,
    wallMs: 0,
    keepersStarted: 0,
    items: 0,
    runs: 0,
    leasesHeld: 0,
    leaseExpiries: 0,
    startingTimeouts: 0,
    fencedRuns: 0,
    fenceKills: 0,
    overlaps: 0,
    pastLease: 0,
    noLease: 0,
    orphans: 0,
    escapes: 0,
    stuck: 0,
    minMarginMs: null,
    minFencedMarginMs: null,
    minFenceLeftMs: null,
    injected: {},
    faultHits: {},
    outcomes: {},
    failedSeeds: [],
  };
}

const min = (a: number | null, b: number | null): number | null => (a === null ? b : b === null ? a : Math.min(a, b));
const addAll = (into: Record<string, number>, from: Record<string, number>): void => {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
};

/** The scenario figures that add up, that take the minimum, and that are counts by name. */
const SUMS = [
  'keepersStarted',
  'items',
  'runs',
  'leasesHeld',
  'leaseExpiries',
  'startingTimeouts',
  'fencedRuns',
  'fenceKills',
  'overlaps',
  'pastLease',
  'noLease',
  'orphans',
  'escapes',
  'stuck',
] as const satisfies readonly (keyof ScenarioStats)[];
const MINIMA = ['minMarginMs', 'minFencedMarginMs', 'minFenceLeftMs'] as const satisfies readonly (keyof ScenarioStats)[];
const TALLIES = ['injected', 'faultHits', 'outcomes'] as const satisfies readonly (keyof ScenarioStats)[];

export function addScenario(t: Totals, seed: number, s: ScenarioStats, violations: number): void {
  t.scenarios++;
  if (violations > 0) {
    t.failed++;
    t.failedSeeds.push(seed);
  }
  for (const k of SUMS) t[k] += s[k];
  for (const k of MINIMA) t[k] = min(t[k], s[k]);
  for (const k of TALLIES) addAll(t[k], s[k]);
}

const ms = (v: number | null): string => (v === null ? 'n/a' : `${Math.round(v)} ms`);

function table(rows: [string, string][], head: [string, string]): string[] {
  const w = Math.max(head[0].length, ...rows.map(([a]) => a.length));
  const v = Math.max(head[1].length, ...rows.map(([, b]) => b.length));
  return [`| ${head[0].padEnd(w)} | ${head[1].padStart(v)} |`, `|${'-'.repeat(w + 2)}|${'-'.repeat(v + 1)}:|`, ...rows.map(([a, b]) => `| ${a.padEnd(w)} | ${b.padStart(v)} |`)];
}

function table3(rows: string[][], head: [string, string, string]): string[] {
  const w = [0, 1, 2].map((i) => Math.max(head[i]!.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => `| ${(r[0] ?? '').padEnd(w[0]!)} | ${(r[1] ?? '').padStart(w[1]!)} | ${(r[2] ?? '').padStart(w[2]!)} |`;
  return [line(head), `|${'-'.repeat(w[0]! + 2)}|${'-'.repeat(w[1]! + 1)}:|${'-'.repeat(w[2]! + 1)}:|`, ...rows.map(line)];
}

/** The summary as Markdown tables (the same text goes to the console and into docs/reliability.md). */
export function formatTotals(t: Totals, title: string): string {
  const main: [string, string][] = [
    ['scenarios', String(t.scenarios)],
    ['scenarios with a violation', String(t.failed)],
    ['wall time', `${(t.wallMs / 1000).toFixed(1)} s`],
    ['keeper processes started', String(t.keepersStarted)],
    ['work items', String(t.items)],
    ['job runs', String(t.runs)],
    ['leases held (first heartbeats accepted)', String(t.leasesHeld)],
    ['lease expiries at the server (ttl)', String(t.leaseExpiries)],
    ['acked items timed out in `starting`', String(t.startingTimeouts)],
    ['runs self-fenced by the keeper', String(t.fencedRuns)],
    ['overlapping runs of one item (must be 0)', String(t.overlaps)],
    ['runs past their lease (must be 0)', String(t.pastLease)],
    ['runs started without a lease (must be 0)', String(t.noLease)],
    ['orphan processes (must be 0)', String(t.orphans)],
    ['job processes seen alive after their lease or after their keeper logged them gone (must be 0)', String(t.escapes)],
    ['items stuck (must be 0)', String(t.stuck)],
    ['min fence margin, all runs (server deadline - job dead)', ms(t.minMarginMs)],
    ['min fence margin, self-fenced runs', ms(t.minFencedMarginMs)],
    ['min lease left at a fence SIGKILL (keeper clock)', ms(t.minFenceLeftMs)],
  ];
  // Emulator fault kinds behind each server fault; outages are `reset`/`hang` faults on every endpoint,
  // so their hits are counted under those kinds.
  const KIND: Record<string, string> = { latency_spike: 'latency', http_5xx: 'status', http_429: 'rate_limit', reset: 'reset', hang: 'hang', drop_reply: 'drop_reply', not_extended: 'not_extended', malformed: 'malformed' };
  const faultRows: string[][] = [];
  for (const k of [...SERVER_FAULTS, ...HARNESS_FAULTS, 'pdeathsig_startup_race', ...JOB_KINDS]) {
    const n = t.injected[k] ?? 0;
    if (k === 'pdeathsig_startup_race' && n === 0) continue;
    const kind = KIND[k];
    const hit = kind === undefined ? '' : String(t.faultHits[kind] ?? 0);
    faultRows.push([k, String(n), k === 'spurious_412_409' ? '(under http_5xx)' : hit]);
  }
  const outcomeRows: [string, string][] = Object.entries(t.outcomes)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => [k, String(v)]);
  return [
    `### ${title}`,
    '',
    ...table(main, ['figure', 'value']),
    '',
    ...table3(faultRows, ['fault', 'injected', 'requests hit (emulator)']),
    '',
    ...table(outcomeRows, ['item outcome (keeper `item_finished`)', 'count']),
    ...(t.failedSeeds.length > 0 ? ['', `FAILED SEEDS: ${t.failedSeeds.join(' ')}`] : []),
  ].join('\n');
}
