// Keeper vs baseline, frame by frame: the difference of two `perf script` outputs (keep them with
// `npm run bench -- --only scale,baseline --perf --keep-logs`), as shares of the keeper's total.
//   node --import tsx bench/tools/perf-diff.ts <dir>/scale.perf.txt <dir>/baseline.perf.txt 0 'frameA|frameB'
import { readFileSync } from 'node:fs';
import { parsePerfScript } from './perf-report.js';
const [a, b] = process.argv.slice(2);
const clean = (sym: string): string => sym.replace(/\+0x[0-9a-f]+$/, '').replace(/file:\/\/\/?[^ ]*?\/dist\//, 'dist/').replace(/\/[^ ]*\/node_modules\//, 'node_modules/').replace(/^JS:[*^~]/, 'JS:');
interface Agg {
  self: Map<string, number>;
  incl: Map<string, number>;
  total: number;
}
function agg(file: string): Agg {
  const self = new Map<string, number>(), incl = new Map<string, number>();
  let total = 0;
  for (const s of parsePerfScript(readFileSync(file, 'utf8'))) {
    total += s.weight;
    if (!s.frames[0]) continue;
    const k = clean(s.frames[0].sym);
    self.set(k, (self.get(k) ?? 0) + s.weight);
    const seen = new Set<string>();
    for (const f of s.frames) { const n = clean(f.sym); if (!seen.has(n)) { seen.add(n); incl.set(n, (incl.get(n) ?? 0) + s.weight); } }
  }
  return { self, incl, total };
}
if (a === undefined || b === undefined) throw new Error('usage: perf-diff.ts <keeper perf.txt> <baseline perf.txt> [_] [frameA|frameB]');
const A = agg(a), B = agg(b);
console.log('totals', A.total, B.total, 'ratio', (A.total / B.total).toFixed(2));
for (const kind of ['self', 'incl'] as const) {
  const keys = new Set([...A[kind].keys(), ...B[kind].keys()]);
  const rows = [...keys].map((k): [string, number, number, number] => [k, (A[kind].get(k) ?? 0) - (B[kind].get(k) ?? 0), A[kind].get(k) ?? 0, B[kind].get(k) ?? 0]).sort((x, y) => y[1] - x[1]);
  console.log(`\n== ${kind}: keeper - baseline, keeper, baseline (% of the keeper's total), top 45`);
  for (const [k, d, x, y] of rows.slice(0, 45)) console.log(((d / A.total) * 100).toFixed(1).padStart(6) + '%', (x / A.total * 100).toFixed(1).padStart(6), (y / A.total * 100).toFixed(1).padStart(6), k.slice(0, 150));
}
const pick = process.argv[5]?.split('|') ?? [];
for (const p of pick) {
  console.log(`\n-- frames matching ${p}`);
  for (const [n, M] of [['keeper', A], ['baseline', B]] as const) {
    const rows = [...M.incl.entries()].filter(([k]) => k.includes(p)).sort((x, y) => y[1] - x[1]).slice(0, 6);
    for (const [k, w] of rows) console.log(n.padEnd(9), (w / M.total * 100).toFixed(1).padStart(5) + '% of own', (w / A.total * 100).toFixed(1).padStart(5) + '% of keeper', k.slice(0, 120));
  }
}
