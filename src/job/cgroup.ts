/**
 * cgroup v2 containment: each job runs in its own cgroup, which it enters before its first instruction;
 * stop = the stop signal to every process in it, then cgroup.kill; gone = `populated 0` in cgroup.events.
 * Limits and accounting come from the same cgroup. Nomad and systemd do the same for their tasks.
 *
 * Layout (where the keeper may write):
 * - Its own cgroup is the root (`0::/`, root outside systemd, as on hosts without a service manager):
 *   jobs go to `<mount>/lease-keeper-<worker id>/`.
 * - Its own cgroup is writable (systemd `Delegate=yes`, or a cgroup chowned to its user): the keeper moves
 *   itself into the leaf `<own>/keeper` (the no-internal-processes rule) and jobs go beside it.
 * Job cgroups are named `job-<work id>-k<keeper pid>-<keeper start time>-<n>`, so that `systemd-cgls`
 * shows the work id and the start-up sweep can tell a live keeper's jobs from a dead one's.
 */
import { accessSync, constants, existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, watch, writeFileSync, type FSWatcher } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { JobExit } from '../lease/outcome.js';
import {
  RUN_ID_VARIABLE,
  keeperAlive,
  ownIdentity,
  type ContainedJob,
  type Containment,
  type JobAccounting,
  type KeeperIdentity,
  type SentSignal,
  type StopOptions,
  type SweptJob,
} from './containment.js';
import { SpawnError } from './errors.js';
import { readStat } from './group-members.js';
import { startLeader, type JobSpec, type LaunchDeps } from './launch.js';
import { formatRunId, waitUntil } from './run-tag.js';
import { KillDeadline } from './kill-deadline.js';

/** Per-job limits, already parsed (config): bytes, a count, a fraction of one CPU (2 = 200%). */
export interface JobLimits {
  memoryMax?: number;
  pidsMax?: number;
  cpuMax?: number;
}

/** The controller each limit needs in the parent's cgroup.controllers. */
const CONTROLLER: Record<keyof JobLimits, string> = { memoryMax: 'memory', pidsMax: 'pids', cpuMax: 'cpu' };
const CPU_PERIOD_US = 100_000;

/** What the host says about cgroups; a seam so tests can point everything at a temporary directory. */
export interface CgroupHost {
  /** /proc/self/mountinfo */
  mountinfo(): string;
  /** /proc/self/cgroup */
  selfCgroup(): string;
  /** Whether the keeper runs as root (uid 0). */
  isRoot(): boolean;
}

export const procHost: CgroupHost = {
  mountinfo: () => readFileSync('/proc/self/mountinfo', 'utf8'),
  selfCgroup: () => readFileSync('/proc/self/cgroup', 'utf8'),
  isRoot: () => process.getuid?.() === 0,
};

/** The first cgroup2 mount point in a mountinfo text, or null. */
export function cgroup2Mount(mountinfo: string): string | null {
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    if (line.slice(sep + 3).split(' ')[0] !== 'cgroup2') continue;
    const mountPoint = line.slice(0, sep).split(' ')[4];
    // mountinfo escapes space, tab, newline and backslash as octal.
    if (mountPoint !== undefined) return mountPoint.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  }
  return null;
}

/** The unified hierarchy's path from a /proc/self/cgroup text (`0::/path`), or null. */
export function ownCgroup(selfCgroup: string): string | null {
  for (const line of selfCgroup.split('\n')) {
    if (line.startsWith('0::')) return line.slice(3).trim() || '/';
  }
  return null;
}

/** Where job cgroups go, and where the keeper must move first (null: it stays where it is). */
export interface CgroupLayout {
  mount: string;
  /** The directory job cgroups are created in. */
  parent: string;
  /** The leaf the keeper moves itself into before READY=1, or null. */
  keeperLeaf: string | null;
  /** The cgroup whose cgroup.subtree_control must enable a controller first (root layout), or null. */
  above: string | null;
}

export type LayoutResult = { ok: true; layout: CgroupLayout } | { ok: false; reason: string };

function writable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Decides the layout from what the host says; no side effects. */
export function planLayout(host: CgroupHost, workerId: string, mountOverride?: string): LayoutResult {
  let mountinfo: string;
  let self: string;
  try {
    mountinfo = host.mountinfo();
    self = host.selfCgroup();
  } catch (err) {
    return { ok: false, reason: `cannot read /proc (${(err as Error).message})` };
  }
  const mount = mountOverride ?? cgroup2Mount(mountinfo);
  if (mount === null) return { ok: false, reason: 'no cgroup v2 (cgroup2) file system is mounted' };
  const own = ownCgroup(self);
  if (own === null) return { ok: false, reason: 'the keeper is in no cgroup v2 (no 0:: line in /proc/self/cgroup)' };
  if (!existsSync(join(mount, 'cgroup.procs'))) return { ok: false, reason: `${mount} is not a cgroup v2 mount` };
  if (own === '/') {
    if (!host.isRoot() || !writable(mount)) {
      return { ok: false, reason: `the keeper's cgroup is the root of ${mount} and it is not root: run it as root, or under systemd with Delegate=yes` };
    }
    return { ok: true, layout: { mount, parent: join(mount, `lease-keeper-${workerIdName(workerId)}`), keeperLeaf: null, above: mount } };
  }
  const dir = join(mount, own);
  // Already in its leaf (a keeper started inside <own>/keeper by someone who prepared it).
  const unit = basename(dir) === 'keeper' ? dirname(dir) : dir;
  if (!writable(unit) || !writable(join(unit, 'cgroup.procs')) || !writable(join(unit, 'cgroup.subtree_control'))) {
    return { ok: false, reason: `the keeper's cgroup ${unit} is not writable by it (under systemd: Delegate=yes in the unit)` };
  }
  return { ok: true, layout: { mount, parent: unit, keeperLeaf: unit === dir ? join(unit, 'keeper') : null, above: null } };
}

/** The worker id as a directory name (it has only [A-Za-z0-9._:@-]; `.`, `..` are made safe by the prefix). */
function workerIdName(workerId: string): string {
  return workerId.replace(/[^A-Za-z0-9._:@-]/g, '_');
}

const JOB_NAME = /^job-(.+)-k(\d+)-(\d+)-(\d+)$/;

/** `job-<work id>-k<pid>-<start time>-<n>`; the work id is cut so that the name stays within NAME_MAX. */
export function jobCgroupName(name: string | undefined, keeper: KeeperIdentity, n: number): string {
  const label = (name ?? 'run').replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 160);
  return `job-${label}-k${keeper.pid}-${keeper.startTime}-${n}`;
}

export function parseJobCgroupName(name: string): { workId: string; keeperPid: number; keeperStartTime: number } | null {
  const m = JOB_NAME.exec(name);
  if (m === null) return null;
  return { workId: m[1]!, keeperPid: Number(m[2]), keeperStartTime: Number(m[3]) };
}

/**
 * The launcher: runs inside setpriv (parent-death signal already armed), moves itself into the job's
 * cgroup, raises its oom_score_adj, then execs the job. A failed move aborts before the job runs (126).
 * Everything is passed as positional arguments, never pasted into the script: no quoting to get wrong.
 */
export const LAUNCHER_SCRIPT =
  'printf 0 > "$1/cgroup.procs" || { echo "lease-keeper: the job could not enter its cgroup $1; it was not started" >&2; exit 126; }; ' +
  '[ "$2" = - ] || printf %s "$2" > /proc/self/oom_score_adj 2>/dev/null; ' +
  'shift 2; exec "$@"';
export const LAUNCHER_SHELL = '/bin/sh';

export function launcherArgs(cgroupDir: string, oomScore: number | null, path: string, args: readonly string[]): [string, string[]] {
  return [LAUNCHER_SHELL, ['-c', LAUNCHER_SCRIPT, 'lease-keeper-launch', cgroupDir, oomScore === null ? '-' : String(oomScore), path, ...args]];
}

/**
 * Every pid in the cgroup and its descendants. Only whole lines of digits count: an empty line read as
 * pid 0 would signal the keeper's own process group.
 */
export function cgroupPids(dir: string): number[] {
  const pids: number[] = [];
  const visit = (d: string): void => {
    try {
      for (const pid of readFileSync(join(d, 'cgroup.procs'), 'utf8').match(/^\d+$/gm) ?? []) pids.push(Number(pid));
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) visit(join(d, e.name));
    } catch {
      // removed meanwhile
    }
  };
  visit(dir);
  return pids;
}

/** `populated 1` in cgroup.events; false once the cgroup is empty or gone. */
export function populated(dir: string): boolean {
  try {
    return /^populated 1$/m.test(readFileSync(join(dir, 'cgroup.events'), 'utf8'));
  } catch {
    return false;
  }
}

/**
 * SIGKILL to everything in the cgroup: `cgroup.kill` (Linux 5.14+, recursive, no race with forks);
 * where it is missing, freeze, SIGKILL each pid, thaw (the frozen cannot fork meanwhile).
 */
export function killCgroup(dir: string): void {
  try {
    writeFileSync(join(dir, 'cgroup.kill'), '1');
    return;
  } catch {
    if (!existsSync(dir)) return; // gone: nothing to kill
  }
  freezeAndKill(dir);
}

/** The fallback of killCgroup for kernels without cgroup.kill (before 5.14), as Nomad does on cgroup v1. */
export function freezeAndKill(dir: string): void {
  const freeze = join(dir, 'cgroup.freeze');
  try {
    writeFileSync(freeze, '1');
  } catch {
    // no freezer either: SIGKILL each, and the caller's watch repeats it for a late fork
  }
  for (const pid of cgroupPids(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  try {
    writeFileSync(freeze, '0');
  } catch {
    // see above
  }
}

/** Reads what the job used; every file is optional (cpu.stat is always there, memory.* with the controller). */
export function readAccounting(dir: string): JobAccounting {
  const read = (file: string): string | null => {
    const path = join(dir, file);
    // Without the memory controller memory.* are absent after every job: no ENOENT Error (and stack) each time.
    if (!existsSync(path)) return null;
    try {
      return readFileSync(path, 'utf8');
    } catch {
      return null;
    }
  };
  const usage = /^usage_usec (\d+)$/m.exec(read('cpu.stat') ?? '');
  const peak = (read('memory.peak') ?? '').trim();
  const oom = /^oom_kill (\d+)$/m.exec(read('memory.events') ?? '');
  return {
    cpuSeconds: usage ? Number(usage[1]) / 1e6 : null,
    memoryPeakBytes: /^\d+$/.test(peak) ? Number(peak) : null,
    oomKilled: oom !== null && Number(oom[1]) > 0,
  };
}

/** The files and values that set `limits` in a job's cgroup. */
export function limitFiles(limits: JobLimits): Array<[string, string]> {
  const files: Array<[string, string]> = [];
  if (limits.memoryMax !== undefined) files.push(['memory.max', String(limits.memoryMax)]);
  if (limits.pidsMax !== undefined) files.push(['pids.max', String(limits.pidsMax)]);
  if (limits.cpuMax !== undefined) files.push(['cpu.max', `${Math.max(1000, Math.round(limits.cpuMax * CPU_PERIOD_US))} ${CPU_PERIOD_US}`]);
  return files;
}

/** The controllers `limits` need, e.g. ['memory', 'cpu']. */
export function neededControllers(limits: JobLimits): string[] {
  return (Object.keys(CONTROLLER) as Array<keyof JobLimits>).filter((k) => limits[k] !== undefined).map((k) => CONTROLLER[k]);
}

export interface CgroupOptions {
  workerId: string;
  limits?: JobLimits;
  /** The job's oom_score_adj, or null to leave it. */
  oomScore?: number | null;
  host?: CgroupHost;
  /** The cgroup2 mount to use instead of the one in mountinfo (tests). */
  mount?: string;
  launch?: LaunchDeps;
  /** Fallback poll of cgroup.events while a job's end is awaited, in ms (inotify does the real work). */
  pollMs?: number;
}

export type OpenResult = { ok: true; containment: CgroupContainment } | { ok: false; reason: string };

export class CgroupContainment implements Containment {
  readonly kind = 'cgroup';
  readonly detail: Readonly<Record<string, string>>;
  readonly layout: CgroupLayout;
  readonly #keeper: KeeperIdentity;
  readonly #limits: JobLimits;
  readonly #oomScore: number | null;
  readonly #launch: LaunchDeps;
  readonly #pollMs: number;
  #runs = 0;

  private constructor(layout: CgroupLayout, options: CgroupOptions) {
    this.layout = layout;
    this.#keeper = ownIdentity(options.workerId);
    this.#limits = options.limits ?? {};
    this.#oomScore = options.oomScore ?? null;
    this.#launch = options.launch ?? {};
    this.#pollMs = options.pollMs ?? 250;
    this.detail = { cgroup_parent: layout.parent };
  }

  /** Decides the layout without touching anything (for `config` and `auto`). */
  static plan(options: CgroupOptions): LayoutResult {
    const planned = planLayout(options.host ?? procHost, options.workerId, options.mount);
    if (!planned.ok) return planned;
    const missing = missingControllers(planned.layout, options.limits ?? {});
    if (missing !== null) return { ok: false, reason: missing };
    return planned;
  }

  /**
   * Sets the layout up (creates the parent, moves the keeper into its leaf, enables the limits'
   * controllers) and returns the containment, or why cgroups cannot be used.
   */
  static open(options: CgroupOptions): OpenResult {
    const planned = CgroupContainment.plan(options);
    if (!planned.ok) return planned;
    const layout = planned.layout;
    try {
      mkdirSync(layout.parent, { recursive: true });
      if (layout.keeperLeaf !== null) {
        mkdirSync(layout.keeperLeaf, { recursive: true });
        writeFileSync(join(layout.keeperLeaf, 'cgroup.procs'), String(process.pid));
      }
      enableControllers(layout, options.limits ?? {});
    } catch (err) {
      return { ok: false, reason: `cannot set up job cgroups under ${layout.parent}: ${(err as Error).message}` };
    }
    return { ok: true, containment: new CgroupContainment(layout, options) };
  }

  start(spec: JobSpec): ContainedJob {
    this.#runs += 1;
    const dir = join(this.layout.parent, jobCgroupName(spec.name, this.#keeper, this.#runs));
    try {
      this.#createJobCgroup(dir);
      for (const [file, value] of limitFiles(this.#limits)) writeFileSync(join(dir, file), value);
    } catch (err) {
      removeCgroup(dir);
      throw new SpawnError(126, `cannot create the job's cgroup ${dir}: ${(err as Error).message}`);
    }
    const env = { ...spec.env, [RUN_ID_VARIABLE]: formatRunId(this.#keeper, this.#runs) };
    try {
      const leader = startLeader({ ...spec, env }, this.#launch, (path, args) => launcherArgs(dir, this.#oomScore, path, args));
      return new CgroupJob(leader.child, leader.pid, leader.parentDeathSignal, dir, this.#pollMs);
    } catch (err) {
      removeCgroup(dir);
      throw err;
    }
  }

  /**
   * In the root layout the parent is only ours while a job is in it: another keeper with the same worker id
   * (the default is one per host) removes it on exit when it is empty, and so may a clean-up. Create it
   * again rather than fail the item; under systemd the parent is the unit's cgroup, never ours to create.
   */
  #createJobCgroup(dir: string): void {
    try {
      mkdirSync(dir);
    } catch (err) {
      if (this.layout.above === null || (err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      mkdirSync(this.layout.parent, { recursive: true });
      enableControllers(this.layout, this.#limits);
      mkdirSync(dir);
    }
  }

  /** Removes the parent this keeper created (root layout) once no job cgroup is left in it. */
  close(): void {
    if (this.layout.above === null) return;
    try {
      rmdirSync(this.layout.parent);
    } catch {
      // another keeper's jobs, or a job still ending (shutdown_now): the next keeper's sweep sees it
    }
  }

  /** Kills and removes the job cgroups of dead keepers in our parent (which is ours by worker id or unit). */
  async sweep(): Promise<SweptJob[]> {
    let names: string[];
    try {
      names = readdirSync(this.layout.parent);
    } catch {
      return [];
    }
    const swept: SweptJob[] = [];
    for (const name of names) {
      const job = parseJobCgroupName(name);
      if (job === null || keeperAlive(job.keeperPid, job.keeperStartTime)) continue;
      const dir = join(this.layout.parent, name);
      const processes = cgroupPids(dir).length;
      if (populated(dir)) {
        killCgroup(dir);
        await waitUntil(() => !populated(dir), 5_000);
      }
      removeCgroup(dir);
      swept.push({ workId: job.workId, keeperPid: job.keeperPid, where: dir, processes });
    }
    return swept;
  }
}

/** Lets job cgroups below the parent take the limits' controllers (the root layout enables them above it first). */
function enableControllers(layout: CgroupLayout, limits: JobLimits): void {
  const controllers = neededControllers(limits);
  if (controllers.length === 0) return;
  const enable = controllers.map((c) => `+${c}`).join(' ');
  if (layout.above !== null) writeFileSync(join(layout.above, 'cgroup.subtree_control'), enable);
  writeFileSync(join(layout.parent, 'cgroup.subtree_control'), enable);
}

function missingControllers(layout: CgroupLayout, limits: JobLimits): string | null {
  const needed = neededControllers(limits);
  if (needed.length === 0) return null;
  // The parent may not exist yet (root layout): what it can get is what the cgroup above it has.
  const source = layout.above ?? layout.parent;
  let have: string[];
  try {
    have = readFileSync(join(source, 'cgroup.controllers'), 'utf8').trim().split(/\s+/);
  } catch {
    have = [];
  }
  const missing = needed.filter((c) => !have.includes(c));
  if (missing.length === 0) return null;
  return `the ${missing.join(', ')} controller${missing.length > 1 ? 's are' : ' is'} not available in ${source}/cgroup.controllers (has: ${have.join(' ') || 'none'})`;
}

/** rmdir, retried briefly: the kernel may still be tearing the last task down. Best effort. */
function removeCgroup(dir: string): void {
  for (let i = 0; i < 50; i++) {
    try {
      rmdirSync(dir);
      return;
    } catch (err) {
      // ENOENT: gone already; anything but EBUSY will not change by retrying
      if ((err as NodeJS.ErrnoException).code !== 'EBUSY') return;
      // a child cgroup the job created (delegated subtree): remove it first
      try {
        for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeCgroup(join(dir, e.name));
      } catch {
        // ignore
      }
    }
  }
}

/** One job in its own cgroup. */
export class CgroupJob implements ContainedJob {
  readonly pid: number;
  readonly parentDeathSignal: boolean;
  readonly exited: Promise<JobExit>;
  readonly empty: Promise<void>;
  readonly where: Readonly<Record<string, string | number>>;
  /** The read ends of the job's stdout and stderr when spawned with 'pipe' there, else null. */
  readonly stdout: import('node:stream').Readable | null;
  readonly stderr: import('node:stream').Readable | null;
  readonly #dir: string;
  readonly #pollMs: number;
  #exit: JobExit | null = null;
  #isEmpty = false;
  #lastSignal: SentSignal | null = null;
  readonly #killDeadline = new KillDeadline(() => this.kill());
  #stopping: Promise<JobExit> | null = null;
  #accounting: JobAccounting | null = null;
  #resolveEmpty!: () => void;

  constructor(child: import('node:child_process').ChildProcess, pid: number, parentDeathSignal: boolean, dir: string, pollMs: number) {
    this.pid = pid;
    this.parentDeathSignal = parentDeathSignal;
    this.#dir = dir;
    this.#pollMs = pollMs;
    this.where = { pgid: pid, cgroup: dir };
    this.stdout = child.stdout;
    this.stderr = child.stderr;
    let resolveExited!: (e: JobExit) => void;
    this.exited = new Promise((r) => (resolveExited = r));
    this.empty = new Promise((r) => (this.#resolveEmpty = r));
    child.once('exit', (code, signal) => {
      this.#exit = { code, signal };
      resolveExited(this.#exit);
      this.#watchUntilEmpty();
    });
  }

  get lastSignal(): SentSignal | null {
    return this.#lastSignal;
  }

  accounting(): JobAccounting | null {
    return this.#accounting;
  }

  isAlive(): boolean {
    if (this.#isEmpty) return false;
    return this.#exit === null || populated(this.#dir);
  }

  interrupt(signal: NodeJS.Signals): boolean {
    if (this.#isEmpty) return false;
    let delivered = false;
    let groupSignalled = false;
    // While the leader is unreaped its pid (= the pgid) cannot be reused: the group signal is safe, and
    // it reaches a fork that happened after the cgroup.procs read below.
    if (this.#exit === null) {
      try {
        process.kill(-this.pid, signal);
        delivered = true;
        groupSignalled = true;
      } catch {
        // ESRCH: the leader is exiting
      }
    }
    for (const pid of cgroupPids(this.#dir)) {
      // Members of the leader's group already got it: a second stop signal would read as "abort now" to a
      // job that drains on the first (found under systemd: the job's trap ran twice).
      if (groupSignalled && readStat(pid)?.pgrp === this.pid) continue;
      try {
        process.kill(pid, signal);
        delivered = true;
      } catch {
        // gone meanwhile
      }
    }
    if (delivered) this.#lastSignal = { signal, atMs: performance.now() };
    return delivered;
  }

  kill(): boolean {
    if (this.#isEmpty) return false;
    const any = this.#exit === null || populated(this.#dir);
    // Right after the spawn the leader may not be in its cgroup yet (the launcher moves itself first
    // thing, before it forks): cgroup.kill misses it. While it is unreaped its group is safe to signal.
    if (this.#exit === null) {
      try {
        process.kill(-this.pid, 'SIGKILL');
      } catch {
        // ESRCH: the leader is exiting
      }
    }
    killCgroup(this.#dir);
    if (any) this.#lastSignal = { signal: 'SIGKILL', atMs: performance.now() };
    return any;
  }

  stop(options: StopOptions): Promise<JobExit> {
    const killAtMs = performance.now() + Math.max(0, options.graceMs);
    if (this.#stopping === null) {
      this.#stopping = this.empty.then(() => this.exited);
      this.interrupt(options.signal);
    }
    this.killAt(killAtMs);
    return this.#stopping;
  }

  killAt(atMs: number): void {
    if (!this.#isEmpty) this.#killDeadline.bringForward(atMs);
  }

  escalate(): void {
    this.killAt(performance.now());
  }

  /**
   * After the leader's exit: wait for `populated 0`, by inotify on cgroup.events (the kernel raises
   * IN_MODIFY when it changes) with a slow poll behind it (a missed event, or no inotify). A SIGKILL
   * that is due is repeated on each poll for the freeze fallback's sake.
   */
  #watchUntilEmpty(): void {
    if (!populated(this.#dir)) {
      this.#becomeEmpty();
      return;
    }
    let watcher: FSWatcher | null = null;
    let timer: NodeJS.Timeout | null = null;
    const check = (): void => {
      if (this.#isEmpty) return;
      if (populated(this.#dir)) {
        if (performance.now() >= this.#killDeadline.atMs) killCgroup(this.#dir);
        return;
      }
      watcher?.close();
      if (timer !== null) clearInterval(timer);
      this.#becomeEmpty();
    };
    try {
      watcher = watch(join(this.#dir, 'cgroup.events'), { persistent: false }, check);
      watcher.on('error', () => {});
    } catch {
      watcher = null; // no inotify (or out of watches): the poll does it
    }
    timer = setInterval(check, watcher === null ? Math.min(this.#pollMs, 20) : this.#pollMs);
    check(); // it may have emptied between the first look and the watch
  }

  #becomeEmpty(): void {
    if (this.#isEmpty) return;
    this.#isEmpty = true;
    this.#killDeadline.cancel();
    this.#accounting = readAccounting(this.#dir);
    removeCgroup(this.#dir);
    this.#resolveEmpty();
  }
}
