/**
 * The harness's own view of processes, straight from /proc: which processes carry a marker variable in
 * their environment (orphans), and SIGKILL for them (what systemd's KillMode=mixed does to a unit's
 * cgroup once its main process is gone). The pid liveness polling lives in watch.ts (a worker thread).
 */
import { readFileSync, readdirSync } from 'node:fs';

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

/** Live (non-zombie) processes whose environment holds every `name=value` of `vars`, except `exclude`. */
export function procsWithEnv(vars: Record<string, string>, exclude: number[] = [process.pid]): ProcInfo[] {
  const needles = Object.entries(vars).map(([k, v]) => Buffer.from(`\0${k}=${v}\0`));
  const found: ProcInfo[] = [];
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return found;
  }
  for (const n of names) {
    const c = n.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const pid = Number(n);
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
