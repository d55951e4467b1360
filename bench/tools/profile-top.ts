// Top self-time frames of a V8 .cpuprofile (from `node --cpu-prof`), optionally restricted to a window
// of the run (ms after the profile started), grouped by where the code lives.
//
//   node --import tsx bench/tools/profile-top.ts <file.cpuprofile> [fromMs] [toMs] [top]
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Where a frame's code lives: ours (dist/), a dependency, Node itself, or V8 pseudo-frames. */
export function origin(url: string, name: string): string {
  if (url.includes('/dist/')) return 'ours';
  if (url.includes('/node_modules/')) return `dep:${(url.split('/node_modules/').pop() ?? '').split('/')[0]}`;
  if (name.startsWith('(') && url === '') return name; // (garbage collector), (program), (idle)
  if (url.startsWith('node:') || url === '') return 'node'; // Node's JS, and V8/C++ builtins
  return 'other';
}

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface TopFrames {
  sampledMs: number;
  byOrigin: { origin: string; ms: number; pct: number }[];
  top: { frame: string; origin: string; ms: number; pct: number }[];
  oursInclusiveOfCallees: { frame: string; ms: number; pct: number }[];
}

export function topFrames(path: string, { fromMs = 0, toMs = Infinity, top = 25 } = {}): TopFrames {
  const p = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<number, number>(); // node id -> µs
  let t = 0;
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    t += dt;
    const ms = t / 1000;
    if (ms < fromMs || ms > toMs) continue;
    const id = p.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + dt);
    total += dt;
  }
  const frames = new Map<string, { us: number; origin: string }>(); // "name url:line" -> {us, origin}
  const origins = new Map<string, number>();
  const ourCallers = new Map<string, number>(); // for dependency/node frames: the nearest frame of ours up the stack
  for (const [id, us] of self) {
    const cf = byId.get(id)!.callFrame;
    const name = cf.functionName || '(anonymous)';
    const key = `${name} ${cf.url.replace(/^file:\/\/.*?\/(dist|node_modules)\//, '$1/')}:${cf.lineNumber + 1}`;
    const o = origin(cf.url, name);
    const f = frames.get(key) ?? { us: 0, origin: o };
    f.us += us;
    frames.set(key, f);
    origins.set(o, (origins.get(o) ?? 0) + us);
    if (o !== 'ours' && !o.startsWith('(')) {
      let up = parent.get(id);
      while (up !== undefined && origin(byId.get(up)!.callFrame.url, byId.get(up)!.callFrame.functionName) !== 'ours') up = parent.get(up);
      if (up !== undefined) {
        const ucf = byId.get(up)!.callFrame;
        const ukey = `${ucf.functionName || '(anonymous)'} ${ucf.url.replace(/^file:\/\/.*?\/dist\//, 'dist/')}:${ucf.lineNumber + 1}`;
        ourCallers.set(ukey, (ourCallers.get(ukey) ?? 0) + us);
      }
    }
  }
  const pct = (us: number): number => Number(((100 * us) / Math.max(1, total)).toFixed(1));
  const sorted = <V>(m: Map<string, V>, f: (v: V) => number): [string, V][] => [...m.entries()].sort((a, b) => f(b[1]) - f(a[1]));
  return {
    sampledMs: Math.round(total / 1000),
    byOrigin: sorted(origins, (v) => v).map(([o, us]) => ({ origin: o, ms: Math.round(us / 1000), pct: pct(us) })),
    top: sorted(frames, (v) => v.us)
      .slice(0, top)
      .map(([frame, v]) => ({ frame, origin: v.origin, ms: Math.round(v.us / 1000), pct: pct(v.us) })),
    // Self time spent in dependencies and Node, charged to the nearest frame of ours that called it.
    oursInclusiveOfCallees: sorted(ourCallers, (v) => v)
      .slice(0, top)
      .map(([frame, us]) => ({ frame, ms: Math.round(us / 1000), pct: pct(us) })),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [file, from, to, top] = process.argv.slice(2);
  if (file === undefined) throw new Error('usage: profile-top.ts <file.cpuprofile> [fromMs] [toMs] [top]');
  const r = topFrames(file, { fromMs: Number(from ?? 0), toMs: to ? Number(to) : Infinity, top: Number(top ?? 25) });
  console.log(`sampled ${r.sampledMs} ms`);
  console.log('\nby origin:');
  for (const o of r.byOrigin) console.log(`  ${String(o.pct).padStart(5)}%  ${String(o.ms).padStart(7)} ms  ${o.origin}`);
  console.log('\ntop self time:');
  for (const f of r.top) console.log(`  ${String(f.pct).padStart(5)}%  ${String(f.ms).padStart(7)} ms  [${f.origin}] ${f.frame}`);
  console.log('\nnon-ours self time charged to the nearest caller of ours:');
  for (const f of r.oursInclusiveOfCallees) console.log(`  ${String(f.pct).padStart(5)}%  ${String(f.ms).padStart(7)} ms  ${f.frame}`);
}
