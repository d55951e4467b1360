/**
 * The suite's view of processes, straight from /proc: which processes carry a marker variable in their
 * environment (it survives reparenting to PID 1, unlike a parent link), and SIGKILL for them. The global
 * teardown (test/support/global-setup.ts) and the integration tests' keepers use it; so does the chaos
 * harness (test/chaos/harness/scenario.ts).
 */
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { resolve } from 'node:path';

export interface ProcInfo {
  pid: number;
  state: string;
  ppid: number;
  pgrp: number;
  /** Clock ticks after boot: tells a pid apart from a later process that reused it. */
  starttime: string;
}

export function procInfo(pid: number): ProcInfo | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  const close = text.lastIndexOf(')');
  const f = text.slice(close + 2).split(' ');
  // f[0] is field 3 (state); starttime is field 22.
  return { pid, state: f[0] ?? '?', ppid: Number(f[1]), pgrp: Number(f[2]), starttime: f[19] ?? '' };
}

/**
 * A worker id for an integration keeper, `it-r<run pid>-<name>`: the run (vitest's main process, whose pid
 * LK_TEST_RUN starts with) is in the job cgroups' parent name, so another run's teardown leaves them alone.
 */
export function integrationWorkerId(name: string): string {
  const runPid = (process.env.LK_TEST_RUN ?? '').split('-')[0] || String(process.pid);
  return `it-r${runPid}-${name}`;
}

/** A process with this pid runs (a zombie has ended: only its exit status is left to reap). */
export function pidAlive(pid: number): boolean {
  const p = procInfo(pid);
  return p !== null && p.state !== 'Z';
}

function pids(): number[] {
  try {
    return readdirSync('/proc')
      .filter((n) => n.charCodeAt(0) >= 48 && n.charCodeAt(0) <= 57)
      .map(Number);
  } catch {
    return [];
  }
}

/** Live (non-zombie) processes whose environment holds every `name=value` of `vars`, except `exclude`. */
export function procsWithEnv(vars: Record<string, string>, exclude: number[] = [process.pid]): ProcInfo[] {
  const needles = Object.entries(vars).map(([k, v]) => Buffer.from(`\0${k}=${v}\0`));
  const found: ProcInfo[] = [];
  for (const pid of pids()) {
    if (exclude.includes(pid)) continue;
    let env: Buffer;
    try {
      env = readFileSync(`/proc/${pid}/environ`);
    } catch {
      continue;
    }
    if (env.length === 0) continue;
    // Pad with NULs so that the first and the last variable match like the others.
    const padded = Buffer.concat([Buffer.from([0]), env, Buffer.from([0])]);
    if (!needles.every((needle) => padded.indexOf(needle) >= 0)) continue;
    const info = procInfo(pid);
    if (info && info.state !== 'Z' && info.state !== 'X') found.push(info);
  }
  return found;
}

/** Live (non-zombie) descendants of `root`, at any depth (those still linked to it). */
export function descendants(root: number): ProcInfo[] {
  const all = pids()
    .map(procInfo)
    .filter((p): p is ProcInfo => p !== null);
  const children = new Map<number, ProcInfo[]>();
  for (const p of all) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p]);
  const found: ProcInfo[] = [];
  const todo = [root];
  while (todo.length > 0) {
    for (const c of children.get(todo.pop()!) ?? []) {
      todo.push(c.pid);
      if (c.state !== 'Z' && c.state !== 'X') found.push(c);
    }
  }
  return found;
}

/** The command line of a process, for a report; '' when it is gone. */
export function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
  } catch {
    return '';
  }
}

/** Live (non-zombie) processes whose command line contains `text`, except this one. */
export function procsWithCommandLine(text: string): ProcInfo[] {
  const found: ProcInfo[] = [];
  for (const pid of pids()) {
    if (pid === process.pid || !commandLine(pid).includes(text)) continue;
    const info = procInfo(pid);
    if (info && info.state !== 'Z' && info.state !== 'X') found.push(info);
  }
  return found;
}

/** SIGKILL every live process carrying all of `vars`; returns how many were signalled. */
export function killWithEnv(vars: Record<string, string>): number {
  let n = 0;
  for (const p of procsWithEnv(vars)) {
    try {
      process.kill(p.pid, 'SIGKILL');
      n++;
    } catch {
      /* gone already */
    }
  }
  return n;
}

/** SIGKILLs every process carrying `vars` until none is left (forks racing the kill), at most `timeoutMs`. */
export async function endAllWithEnv(vars: Record<string, string>, timeoutMs = 3000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (killWithEnv(vars) > 0 || procsWithEnv(vars).length > 0) {
    if (Date.now() > until) throw new Error(`processes with ${JSON.stringify(vars)} still alive after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * What every process a test starts from a hand-built environment must carry: the run's marker and its
 * temporary directory (both set by test/support/global-setup.ts; empty outside a vitest run).
 */
export function suiteEnv(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of ['LK_TEST_RUN', 'TMPDIR'] as const) {
    const v = process.env[name];
    if (v !== undefined) out[name] = v;
  }
  return out;
}

/**
 * Where a run puts what it leaves on purpose for the reader (the chaos suite's summary, a failed
 * scenario's logs): `reports/chaos` in the checkout (git-ignored), not the temporary directory, so that
 * runs do not pile up there. The summary is overwritten by the next run.
 */
export function keptReportDir(): string {
  const dir = resolve('reports', 'chaos');
  mkdirSync(dir, { recursive: true });
  return dir;
}
