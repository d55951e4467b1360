import { readdirSync, readFileSync } from 'node:fs';

/**
 * Every look at the OS's process table lives here: who is still in a process group, and signalling it.
 * Linux /proc is the source of truth for who is live; kill(-pgid, 0) answers "does anything, zombies
 * included, still have this pgid" for the price of one syscall, and is all there is without /proc.
 */

/** The fields of /proc/<pid>/stat the supervisor needs. */
export interface ProcStat {
  pid: number;
  /** One letter: R running, S sleeping, D disk wait, T stopped, Z zombie, ... */
  state: string;
  ppid: number;
  pgrp: number;
  /** Field 22, starttime: clock ticks after boot. With the pid it names one process for good (pid reuse). */
  startTime: number;
}

/** Parses one /proc/<pid>/stat line; null when it is not in the expected shape. */
export function parseStat(text: string): ProcStat | null {
  // The command name is in parentheses and may itself contain spaces and ')': split after the LAST ')'.
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return null;
  const pid = Number(text.slice(0, open).trim());
  const rest = text.slice(close + 1).trim().split(' ');
  const [state, ppid, pgrp, startTime] = [rest[0], Number(rest[1]), Number(rest[2]), Number(rest[19])];
  if (!Number.isInteger(pid) || state === undefined || !Number.isInteger(ppid) || !Number.isInteger(pgrp)) return null;
  return { pid, state, ppid, pgrp, startTime: Number.isInteger(startTime) ? startTime : -1 };
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
function isLive(st: ProcStat): boolean {
  return st.state !== 'Z' || st.ppid === process.pid;
}

let procMounted: boolean | undefined;

/** True when /proc/self/stat can be read (Linux with /proc mounted). */
export function hasProc(): boolean {
  procMounted ??= readStat(process.pid) !== null;
  return procMounted;
}

/** Every pid in /proc (the numeric directories), or null when /proc cannot be read. */
export function processIds(): number[] | null {
  if (!hasProc()) return null;
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return null;
  }
  const pids: number[] = [];
  for (const name of names) {
    const c = name.charCodeAt(0);
    if (c >= 48 && c <= 57) pids.push(Number(name));
  }
  return pids;
}

/** Live members of every process group, from one pass over /proc: pgid -> pids. */
export type GroupScan = ReadonlyMap<number, readonly number[]>;

/**
 * One pass over /proc: `readdir` and one stat read per process, on the event loop (~12 ms with ~800
 * processes). The expensive look, so callers avoid it (see liveMembers) and share one between groups
 * (see SurvivorPoll). Null when /proc cannot be read.
 */
export function scanGroups(): GroupScan | null {
  const pids = processIds();
  if (pids === null) return null;
  const groups = new Map<number, number[]>();
  for (const pid of pids) {
    const st = readStat(pid);
    if (st === null || !isLive(st)) continue;
    const pids = groups.get(st.pgrp);
    if (pids === undefined) groups.set(st.pgrp, [st.pid]);
    else pids.push(st.pid);
  }
  return groups;
}

/**
 * Live members of process group `pgid`, cheapest proof first:
 * 1. kill(-pgid, 0) gives ESRCH: no process at all has this pgid (zombies included), so none is live.
 * 2. Members found last time (`known`) still live: the group is not empty.
 * 3. Otherwise a /proc scan (`scan`, default a fresh one; a caller may pass one shared between groups),
 *    which is what tells a live member from a zombie that only keeps the group in existence.
 * Proving "gone" and "not empty" is cheap; only "exists but maybe only zombies" needs a scan.
 */
export function liveMembers(pgid: number, known: readonly number[] = [], scan: () => GroupScan | null = scanGroups): number[] {
  if (groupGone(pgid)) return [];
  const stillThere = known.filter((pid) => {
    const st = readStat(pid);
    return st !== null && st.pgrp === pgid && isLive(st);
  });
  if (stillThere.length > 0) return stillThere;
  const groups = scan();
  if (groups === null) return groupExists(pgid) ? [pgid] : []; // no /proc: zombies count too
  return [...(groups.get(pgid) ?? [])];
}

/**
 * True only when kill(-pgid, 0) gives ESRCH: no process, zombies included, has this pgid. A group cannot
 * come back from that (setpgid only joins existing groups; a new one with this id would be an unrelated
 * process reusing the number). Any other outcome (success; EPERM: a member changed user) means "maybe
 * live", and so does pgid 0 or 1, which are never probed (kill(-0) is our own group, kill(-1) everyone).
 */
export function groupGone(pgid: number): boolean {
  if (!Number.isInteger(pgid) || pgid <= 1) return false;
  try {
    process.kill(-pgid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
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
