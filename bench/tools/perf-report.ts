// Summarises `perf script` output of a keeper recorded with `perf record -g` while node ran with
// --perf-basic-prof (JS frames named `JS:*fn file:line`). Unlike the V8 sampler (--cpu-prof), perf sees
// every CPU cycle of the process: native code, GC threads and the kernel too.
//
//   node --import tsx bench/tools/perf-report.ts perf.txt [top] [pid]
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Where a frame's code lives. */
function originOf(sym: string, dso: string): string {
  if (sym.includes('/dist/')) return 'ours';
  const dep = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(sym);
  if (dep) return `dep:${dep[1]}`;
  if (sym.startsWith('JS:') && sym.includes('node:')) return 'node:js';
  if (dso.includes('kernel')) return 'kernel';
  if (/libc|libm|ld-linux|vdso/.test(dso)) return 'libc';
  if (/Scaveng|MarkCompact|Marking|Sweeper|Heap::|GCTracer|ConcurrentMark|MinorM/.test(sym)) return 'v8:gc';
  if (sym.startsWith('Builtins_') || sym.startsWith('JS:')) return 'v8:builtins/jit';
  if (/^uv_|^uv__/.test(sym)) return 'libuv';
  if (sym.startsWith('node::')) return 'node:c++';
  if (sym.startsWith('v8::')) return 'v8:runtime';
  return 'other';
}

const clean = (sym: string): string =>
  sym
    .replace(/\+0x[0-9a-f]+$/, '')
    .replace(/file:\/\/\/?[^ ]*?\/dist\//, 'dist/')
    .replace(/\/[^ ]*\/node_modules\//, 'node_modules/');

export interface PerfFrame {
  sym: string;
  dso: string;
}

export interface PerfSample {
  comm: string;
  tid: number;
  weight: number;
  frames: PerfFrame[];
}

export function parsePerfScript(text: string): PerfSample[] {
  const samples: PerfSample[] = [];
  for (const block of text.split(/\n\s*\n/)) {
    const lines = block.split('\n').filter((l) => l.trim() !== '');
    if (lines.length === 0) continue;
    const head = /^(\S.*?)\s+(\d+)\s+[\d.]+:\s+(\d+)\s/.exec(lines[0] ?? '');
    if (!head) continue;
    const frames: PerfFrame[] = [];
    for (const l of lines.slice(1)) {
      const m = /^\s*[0-9a-f]+\s+(.*)\s+\((.*)\)\s*$/.exec(l);
      if (m) frames.push({ sym: m[1] ?? '', dso: m[2] ?? '' });
    }
    samples.push({ comm: head[1] ?? '', tid: Number(head[2]), weight: Number(head[3]), frames });
  }
  return samples;
}

export interface PerfRow {
  what: string;
  pct: number;
  ms: number;
}

export interface PerfSummary {
  totalMs: number;
  byThread: PerfRow[];
  byOrigin: PerfRow[];
  byTopic: PerfRow[];
  topSelf: PerfRow[];
  oursInclusive: PerfRow[];
  nearestOurs: PerfRow[];
}

export function perfSummary(samples: PerfSample[], { pid = null as number | null, top = 25 } = {}): PerfSummary {
  const total = samples.reduce((a, s) => a + s.weight, 0);
  const add = (m: Map<string, number>, k: string, w: number): Map<string, number> => m.set(k, (m.get(k) ?? 0) + w);
  const byThread = new Map<string, number>();
  const byOrigin = new Map<string, number>();
  const selfSym = new Map<string, number>();
  const oursInclusive = new Map<string, number>();
  const nearestOurs = new Map<string, number>();
  const topic = new Map<string, number>();
  for (const s of samples) {
    add(byThread, pid !== null && s.tid === pid ? 'main' : s.comm, s.weight);
    const leaf = s.frames[0];
    if (!leaf) continue;
    const o = originOf(leaf.sym, leaf.dso);
    add(byOrigin, o, s.weight);
    add(selfSym, `[${o}] ${clean(leaf.sym)}`, s.weight);
    const seen = new Set<string>();
    let nearest: string | null = null;
    for (const f of s.frames) {
      if (f.sym.includes('/dist/')) {
        const k = clean(f.sym);
        if (nearest === null) nearest = k;
        if (!seen.has(k)) {
          seen.add(k);
          add(oursInclusive, k, s.weight);
        }
      }
    }
    if (pid === null || s.tid === pid) add(nearestOurs, nearest ?? '(no frame of ours on the stack)', s.weight);
    // Coarse topics by any frame on the stack (first match wins, most specific first).
    const stack = s.frames.map((f) => f.sym).join('\n');
    const t = /pino|sonic-boom|@pinojs|observe\/logger/.test(stack)
      ? 'logging (pino)'
      : /group-members/.test(stack)
        ? 'job group scans (/proc) and signals'
        : /ChildProcess|child_process|process-group|spawn/.test(stack)
        ? 'spawn / process groups'
        : /undici|api\/client|api\/parse|api\/classify/.test(stack)
          ? 'HTTP client (undici + api/)'
          : /lease\/machine|worker\/item-lease|worker\/loop/.test(stack)
            ? 'lease machine + driver'
            : /prom-client|observe\//.test(stack)
              ? 'observe (metrics, stall, systemd)'
              : /timers|Timeout/.test(stack)
                ? 'timers'
                : /Scaveng|MarkCompact|Marking|Sweeper|Heap::/.test(stack)
                  ? 'GC'
                  : o === 'kernel'
                    ? 'kernel (other)'
                    : 'other';
    add(topic, t, s.weight);
  }
  const pct = (w: number): number => Number(((100 * w) / Math.max(1, total)).toFixed(1));
  const list = (m: Map<string, number>, n = top): PerfRow[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, w]) => ({ what: k, pct: pct(w), ms: Math.round(w / 1e6) }));
  return {
    totalMs: Math.round(total / 1e6),
    byThread: list(byThread, 10),
    byOrigin: list(byOrigin, 15),
    byTopic: list(topic, 15),
    topSelf: list(selfSym),
    oursInclusive: list(oursInclusive),
    nearestOurs: list(nearestOurs),
  };
}

export function printPerfSummary(r: PerfSummary, out: (line: string) => void = console.log): void {
  out(`perf: ${r.totalMs} ms of CPU sampled (all threads, user + kernel)`);
  for (const [title, rows] of <[string, PerfRow[]][]>[
    ['by thread', r.byThread],
    ['by origin of the running code', r.byOrigin],
    ['by topic (any frame on the stack)', r.byTopic],
    ['top self', r.topSelf],
    ['inclusive, functions of ours', r.oursInclusive],
    ['main thread, charged to the innermost frame of ours', r.nearestOurs],
  ]) {
    out(`\n  ${title}:`);
    for (const x of rows) out(`  ${String(x.pct).padStart(5)}%  ${String(x.ms).padStart(6)} ms  ${x.what}`);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [file, top, pid] = process.argv.slice(2);
  if (file === undefined) throw new Error('usage: perf-report.ts <perf script output> [top] [pid]');
  printPerfSummary(perfSummary(parsePerfScript(readFileSync(file, 'utf8')), { top: Number(top ?? 25), pid: pid ? Number(pid) : null }));
}
