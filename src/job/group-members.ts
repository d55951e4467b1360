import { readdirSync, readFileSync } from 'node:fs';

/**
 * Every look at the OS's process table lives here: who is still in a process group, and signalling it.
 * Linux /proc is the source of truth; without it we fall back to kill(-pgid, 0), which also counts zombies.
 */

/** The fields of /proc/<pid>/stat the supervisor needs. */
export interface ProcStat {
  pid: number;
  /** One letter: R running, S sleeping, D disk wait, T stopped, Z zombie, ... */
  state: string;
  ppid: number;
  pgrp: number;
}

/** Parses one /proc/<pid>/stat line; null when it is not in the expected shape. */
export function parseStat(text: string): ProcStat | null {
  // The command name is in parentheses and may itself contain spaces and ')': split after the LAST ')'.
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return null;
  const pid = Number(text.slice(0, open).trim());
  const rest = text.slice(close + 1).trim().split(' ');
  const [state, ppid, pgrp] = [rest[0], Number(rest[1]), Number(rest[2])];
  if (!Number.isInteger(pid) || state === undefined || !Number.isInteger(ppid) || !Number.isInteger(pgrp)) return null;
  return { pid, state, ppid, pgrp };
}

/** Reads /proc/<pid>/stat; null when the process is gone (or /proc is not there). */
export function readStat(pid: number): ProcStat | null {
  try {
    return parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return null;
  }
}

/**
 * A member counts while it can still run or be signalled: any state but zombie. A zombie is dead; its
 * parent (or init, slow to reap in some containers) just has not collected it yet. The one zombie that
 * still counts is our own unreaped child, the leader, whose exit Node has not reported yet.
 */
function isLiveMember(st: ProcStat, pgid: number): boolean {
  return st.pgrp === pgid && (st.state !== 'Z' || st.ppid === process.pid);
}

let procMounted: boolean | undefined;

/** True when /proc/self/stat can be read (Linux with /proc mounted). */
export function hasProc(): boolean {
  procMounted ??= readStat(process.pid) !== null;
  return procMounted;
}

/**
 * Live members of process group `pgid`. Members found last time (`known`) are checked first, and if any
 * is still live the full /proc scan is skipped: proving "not empty" is cheap, only "empty" needs a scan.
 */
export function liveMembers(pgid: number, known: readonly number[] = []): number[] {
  if (!hasProc()) return groupExists(pgid) ? [pgid] : [];
  const stillThere = known.filter((pid) => {
    const st = readStat(pid);
    return st !== null && isLiveMember(st, pgid);
  });
  if (stillThere.length > 0) return stillThere;

  const members: number[] = [];
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return groupExists(pgid) ? [pgid] : [];
  }
  for (const name of names) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue; // not a pid directory
    const st = readStat(Number(name));
    if (st !== null && isLiveMember(st, pgid)) members.push(st.pid);
  }
  return members;
}

/**
 * Sends `signal` to every process in group `pgid`. Returns false when the group no longer exists (ESRCH);
 * other errors (EPERM: a member changed user) are thrown. Refuses pgid 0 and 1: kill(-0) is our own group
 * and kill(-1) is every process we may signal.
 */
export function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  if (!Number.isInteger(pgid) || pgid <= 1) throw new RangeError(`refusing to signal process group ${pgid}`);
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

/** kill(-pgid, 0): true while any process, zombies included, has this pgid (EPERM means one exists). */
function groupExists(pgid: number): boolean {
  try {
    return signalGroup(pgid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EPERM') return true;
    throw err;
  }
}
