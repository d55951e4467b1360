/**
 * Containment: what "the job" is, and how the keeper makes sure nothing of it outlives its lease
 * (spec §5a). Three kinds, one interface; the worker drives a ContainedJob and never asks which one.
 * - `cgroup`: a cgroup v2 per job, entered before the job's first instruction (cgroup.ts). Nothing the job
 *   starts can leave it without write access to another cgroup.
 * - `tag`: the process group, plus every process of the keeper's user whose environment carries the job
 *   run's LEASE_KEEPER_RUN_ID (run-tag.ts). A process that clears its environment escapes it.
 * - `process-group`: the process group only (the behaviour before containment existed). setsid escapes it.
 */
import type { StdioOptions } from 'node:child_process';
import type { Readable } from 'node:stream';
import type { JobExit } from '../lease/outcome.js';
import { readStat } from './group-members.js';
import type { JobSpec } from './launch.js';

export type ContainmentKind = 'cgroup' | 'tag' | 'process-group';
/** LEASE_KEEPER_CONTAINMENT: `auto` picks cgroup where cgroup v2 is writable, else the tag. */
export type ContainmentMode = 'auto' | 'cgroup' | 'process-group';

/** The variable carrying the job run's tag in every process of the job. */
export const RUN_ID_VARIABLE = 'LEASE_KEEPER_RUN_ID';

export type { JobSpec, StdioOptions };

/** How to stop the job: `signal` first, SIGKILL `graceMs` later unless the job is gone by then. */
export interface StopOptions {
  signal: NodeJS.Signals;
  graceMs: number;
}

/** A signal the containment delivered, stamped with performance.now(), for metrics. */
export interface SentSignal {
  signal: NodeJS.Signals;
  atMs: number;
}

/** What a finished job used, read from its cgroup before it was removed (cgroup containment only). */
export interface JobAccounting {
  /** cpu.stat usage_usec / 1e6. */
  cpuSeconds: number | null;
  /** memory.peak, where the kernel (5.19+) and the memory controller give it. */
  memoryPeakBytes: number | null;
  /** memory.events oom_kill > 0: the kernel killed a process of the job at its memory limit. */
  oomKilled: boolean;
}

/** One running job, as the worker drives it. */
export interface ContainedJob {
  /** The leader's pid. */
  readonly pid: number;
  /** True when the kernel will SIGKILL the leader if the keeper dies (setpriv was found). */
  readonly parentDeathSignal: boolean;
  /** Resolves when the leader exited: its code, or the name of the signal that ended it. */
  readonly exited: Promise<JobExit>;
  /** Resolves once nothing of the job runs any more (and its cgroup is removed). Never rejects. */
  readonly empty: Promise<void>;
  /** Where the job runs, for log lines: pgid, cgroup, run_id. */
  readonly where: Readonly<Record<string, string | number>>;
  /** The last signal delivered, or null. */
  readonly lastSignal: SentSignal | null;
  /** True while anything of the job is alive. */
  isAlive(): boolean;
  /** Sends `signal` to every process of the job. False when none was left; throws on EPERM. */
  interrupt(signal: NodeJS.Signals): boolean;
  /** SIGKILL to every process of the job. False when none was left. */
  kill(): boolean;
  /**
   * `signal` now, SIGKILL after `graceMs` unless the job is gone; resolves with the leader's exit once
   * `empty`. A second call returns the same promise; a shorter grace brings the SIGKILL forward.
   */
  stop(options: StopOptions): Promise<JobExit>;
  /** SIGKILL at `atMs` (performance.now() time) unless gone by then; never later than already set. */
  killAt(atMs: number): void;
  /** SIGKILL now. */
  escalate(): void;
  /** After `empty`: what the job used, or null where the containment cannot tell. */
  accounting(): JobAccounting | null;
  /** The read ends of the job's stdout and stderr when started with 'pipe' there (JobSpec.stdio), else null. */
  readonly stdout?: Readable | null;
  readonly stderr?: Readable | null;
}

/** What the start-up sweep ended: one job of an earlier keeper that is no longer running. */
export interface SweptJob {
  /** The work id the job ran for, when the containment recorded it. */
  workId: string | null;
  /** The dead keeper that started it. */
  keeperPid: number;
  /** Where it ran (cgroup path, run id). */
  where: string;
  /** Processes found and killed. */
  processes: number;
}

export interface Containment {
  readonly kind: ContainmentKind;
  /** Why this kind (for `auto`), and where job cgroups go: for the `starting` line and `config`. */
  readonly detail: Readonly<Record<string, string>>;
  /** Starts a job (throws SpawnError as ProcessGroup.start does). */
  start(spec: JobSpec): ContainedJob;
  /** Ends what is left of the jobs of an earlier keeper with the same worker id that no longer runs. */
  sweep(): Promise<SweptJob[]>;
  /** On the keeper's exit: removes what it set up if nothing is left in it (best effort). */
  close(): void;
}

/** The keeper that owns the jobs: worker id, pid, and the pid's start time (pid reuse cannot fake both). */
export interface KeeperIdentity {
  workerId: string;
  pid: number;
  startTime: number;
}

export function ownIdentity(workerId: string): KeeperIdentity {
  return { workerId, pid: process.pid, startTime: readStat(process.pid)?.startTime ?? -1 };
}

/** True while the keeper `pid` started at `startTime` still runs (a reused pid has another start time). */
export function keeperAlive(pid: number, startTime: number): boolean {
  if (pid === process.pid) return true;
  const st = readStat(pid);
  return st !== null && st.startTime === startTime && st.state !== 'Z';
}
