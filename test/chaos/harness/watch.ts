/**
 * Watches the job runs of a scenario from the outside: reads the jobs' own records as they are appended,
 * and polls /proc for the processes they name (the leader, and any grandchild it recorded), so that
 * every run gets an observed "no process of it left" time even when no keeper lives to log it (a
 * SIGKILLed keeper). The observed time is an upper bound on the real one, by the poll period (10 ms)
 * plus scheduling delay; the checker takes the earliest upper bound it has.
 *
 * The polling runs in one worker thread shared by every scenario of the process, so that a busy main
 * thread (emulators, keeper logs) cannot make the observations late.
 */
import { Worker } from 'node:worker_threads';

export interface WatchedRun {
  workId: string;
  /** The keeper incarnation that spawned it (k0.1, k0.2, s.1, ...). */
  keeper: string;
  pid: number;
  /** The job's first action (Date.now ms). */
  start: number;
  /** pid -> /proc starttime at first sight (null if it was already gone). */
  pids: [number, string | null][];
  ends: { ms: number; how: string }[];
  /** First time the harness saw none of its processes alive; null while one is. */
  deadAt: number | null;
  /** Last time the harness saw one of its processes alive (a daemon that escaped the job included). */
  lastAliveAt: number | null;
}

// Plain JavaScript (CommonJS): an eval'd worker is not transformed by vitest or the soak's loader.
const WORKER = String.raw`
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const PERIOD_MS = 10;
const files = new Map();

function stat(pid) {
  let text;
  try { text = fs.readFileSync('/proc/' + pid + '/stat', 'utf8'); } catch { return null; }
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  if (f[0] === 'Z' || f[0] === 'X') return null;
  return f[19];
}

function latest(w, keeper, workId) {
  for (let i = w.runs.length - 1; i >= 0; i--) {
    const r = w.runs[i];
    if (r.keeper === keeper && r.workId === workId) return r;
  }
  return undefined;
}

function readNew(w, now) {
  let size;
  try { size = fs.statSync(w.file).size; } catch { return; }
  if (size <= w.consumed) return;
  const buf = Buffer.alloc(size - w.consumed);
  const fd = fs.openSync(w.file, 'r');
  try { fs.readSync(fd, buf, 0, buf.length, w.consumed); } finally { fs.closeSync(fd); }
  const text = buf.toString('utf8');
  const complete = text.lastIndexOf('\n') + 1;
  if (complete === 0) return;
  w.consumed += Buffer.byteLength(text.slice(0, complete));
  for (const line of text.slice(0, complete).split('\n')) {
    const [kind, workId, ms, keeper, extra] = line.split(' ');
    if (!workId || !keeper) continue;
    if (kind === 'start') {
      const pid = Number(extra);
      const st = stat(pid);
      w.runs.push({ workId, keeper, pid, start: Number(ms), pids: [[pid, st]], ends: [], deadAt: st === null ? now : null, lastAliveAt: st === null ? null : now });
      w.dirty = true;
    } else if (kind === 'end') {
      const r = latest(w, keeper, workId);
      if (r) { r.ends.push({ ms: Number(ms), how: extra || '' }); w.dirty = true; }
    } else if (kind === 'child') {
      const r = latest(w, keeper, workId);
      if (!r) continue;
      const pid = Number(extra);
      const st = stat(pid);
      r.pids.push([pid, st]);
      // Alive: the run is not over. Already gone: it died at some unknown moment before now, so
      // "now" is the only safe upper bound for the run's end.
      if (st !== null) {
        r.deadAt = null;
        r.lastAliveAt = now;
      } else if (r.deadAt !== null) r.deadAt = now;
      w.dirty = true;
    }
  }
}

function check(w, now) {
  for (const r of w.runs) {
    if (r.deadAt !== null) continue;
    let any = false;
    for (const [pid, st] of r.pids) {
      if (st !== null && stat(pid) === st) { any = true; break; }
    }
    if (!any) { r.deadAt = now; w.dirty = true; }
    else if (r.lastAliveAt !== now) { r.lastAliveAt = now; w.dirty = true; }
  }
}

function tick() {
  const now = Date.now();
  for (const w of files.values()) {
    readNew(w, now);
    check(w, now);
    if (w.dirty) {
      w.dirty = false;
      parentPort.postMessage({ type: 'runs', file: w.file, runs: w.runs });
    }
  }
}

setInterval(tick, PERIOD_MS);
parentPort.on('message', (m) => {
  if (m.type === 'watch') files.set(m.file, { file: m.file, consumed: 0, runs: [], dirty: false });
  if (m.type === 'stop') {
    tick();
    const w = files.get(m.file);
    files.delete(m.file);
    parentPort.postMessage({ type: 'stopped', file: m.file, runs: w ? w.runs : [] });
  }
});
`;

interface Message {
  type: 'runs' | 'stopped';
  file: string;
  runs: WatchedRun[];
}

let shared: { worker: Worker; watchers: Map<string, RunWatcher> } | null = null;

function pool(): { worker: Worker; watchers: Map<string, RunWatcher> } {
  if (shared) return shared;
  const worker = new Worker(WORKER, { eval: true });
  worker.unref();
  const watchers = new Map<string, RunWatcher>();
  worker.on('message', (m: Message) => watchers.get(m.file)?.update(m));
  shared = { worker, watchers };
  return shared;
}

export class RunWatcher {
  /** The latest runs the worker reported (at most one poll period old). */
  runs: WatchedRun[] = [];
  private stopped: ((runs: WatchedRun[]) => void) | null = null;

  constructor(private readonly file: string) {}

  start(): void {
    const p = pool();
    p.watchers.set(this.file, this);
    p.worker.postMessage({ type: 'watch', file: this.file });
  }

  /** A last look, then the final runs. */
  stop(): Promise<WatchedRun[]> {
    const p = pool();
    if (!p.watchers.has(this.file)) return Promise.resolve(this.runs);
    return new Promise((resolve) => {
      this.stopped = resolve;
      p.worker.postMessage({ type: 'stop', file: this.file });
    });
  }

  /** @internal */
  update(m: Message): void {
    this.runs = m.runs;
    if (m.type === 'stopped') {
      shared?.watchers.delete(this.file);
      this.stopped?.(m.runs);
      this.stopped = null;
    }
  }
}
