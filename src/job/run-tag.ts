/**
 * The fallback where cgroups cannot be written: every job run gets a tag (LEASE_KEEPER_RUN_ID) in its
 * environment, which every process it starts inherits, setsid or not. On every stop and at the job's end
 * the keeper reads /proc/<pid>/environ of its own user's processes, and the tagged ones count as members
 * of the job (GitHub's runner does the same with RUNNER_TRACKING_ID). A process that clears or rewrites
 * its environment, or changes its user, escapes it.
 */
import { readFileSync, statSync } from 'node:fs';
import {
  RUN_ID_VARIABLE,
  keeperAlive,
  ownIdentity,
  type ContainedJob,
  type Containment,
  type KeeperIdentity,
  type SweptJob,
} from './containment.js';
import { processIds, readStat } from './group-members.js';
import type { JobSpec } from './launch.js';
import { ProcessGroup, type OutsideMembers, type ProcessGroupDeps } from './process-group.js';
import { raiseOomScore } from './oom-score.js';

/** How often a tagged job whose leader exited is looked at again (ProcessGroup's default is 20 ms). */
const TAG_POLL_MS = 100;

const NEEDLE = Buffer.from(`\0${RUN_ID_VARIABLE}=`);

/** `<worker id>/<keeper pid>/<keeper start time>/<n>`: the worker id has no `/` (config allows none). */
export function formatRunId(keeper: KeeperIdentity, n: number): string {
  return `${keeper.workerId}/${keeper.pid}/${keeper.startTime}/${n}`;
}

export interface RunId {
  workerId: string;
  keeperPid: number;
  keeperStartTime: number;
  n: number;
}

export function parseRunId(text: string): RunId | null {
  const m = /^([^/]+)\/(\d+)\/(\d+)\/(\d+)$/.exec(text);
  if (m === null) return null;
  return { workerId: m[1]!, keeperPid: Number(m[2]), keeperStartTime: Number(m[3]), n: Number(m[4]) };
}

/** The value of LEASE_KEEPER_RUN_ID in an environ block (NUL-separated), or null. */
export function runIdIn(environ: Buffer): string | null {
  let at: number;
  let from: number;
  if (environ.subarray(0, NEEDLE.length - 1).equals(NEEDLE.subarray(1))) {
    at = 0;
    from = NEEDLE.length - 1;
  } else {
    at = environ.indexOf(NEEDLE);
    if (at < 0) return null;
    from = at + NEEDLE.length;
  }
  const end = environ.indexOf(0, from);
  return environ.toString('utf8', from, end < 0 ? environ.length : end);
}

/** run id -> live pids carrying it, for every process of `uid` whose tag starts with `prefix`. */
export type TagScan = ReadonlyMap<string, readonly number[]>;

/**
 * One pass over /proc: for each process owned by `uid` (one stat), its environ (one read). Zombies have
 * an empty environ and so never count. Null without /proc.
 */
export function scanTags(prefix: string, uid: number = process.getuid?.() ?? 0): TagScan | null {
  const all = processIds();
  if (all === null) return null;
  const found = new Map<string, number[]>();
  for (const pid of all) {
    if (pid === process.pid) continue;
    let environ: Buffer;
    try {
      if (statSync(`/proc/${pid}`).uid !== uid) continue;
      environ = readFileSync(`/proc/${pid}/environ`);
    } catch {
      continue; // gone meanwhile, or not ours to read
    }
    const tag = runIdIn(environ);
    if (tag === null || !tag.startsWith(prefix)) continue;
    const pids = found.get(tag);
    if (pids === undefined) found.set(tag, [pid]);
    else pids.push(pid);
  }
  return found;
}

/**
 * The scan every tagged job of this keeper shares within one event-loop turn: a mass stop of hundreds of
 * jobs reads /proc once, not once per job.
 */
export class SharedTagScan {
  #scan: TagScan | null | undefined;
  readonly #prefix: string;
  readonly #read: (prefix: string) => TagScan | null;

  constructor(prefix: string, read: (prefix: string) => TagScan | null = scanTags) {
    this.#prefix = prefix;
    this.#read = read;
  }

  pids(runId: string): readonly number[] {
    if (this.#scan === undefined) {
      this.#scan = this.#read(this.#prefix);
      setImmediate(() => (this.#scan = undefined));
    }
    return this.#scan?.get(runId) ?? [];
  }
}

/** The tagged processes of one job run, as OutsideMembers of its process group. */
export function taggedMembers(runId: string, scan: SharedTagScan): OutsideMembers {
  return {
    signal(signal, signalled) {
      let delivered = false;
      for (const pid of scan.pids(runId)) {
        // A member of the group that was just signalled got it already: a second SIGTERM could run a trap twice.
        if (signalled !== null && readStat(pid)?.pgrp === signalled) continue;
        try {
          process.kill(pid, signal);
          delivered = true;
        } catch {
          // gone meanwhile (ESRCH), or it changed its user (EPERM): nothing more we can do for it
        }
      }
      return delivered;
    },
    live: () => scan.pids(runId),
  };
}

/** Common to the tag and process-group containments: jobs are process groups with a run id. */
abstract class GroupContainment implements Containment {
  abstract readonly kind: 'tag' | 'process-group';
  abstract readonly detail: Readonly<Record<string, string>>;
  protected readonly keeper: KeeperIdentity;
  protected readonly deps: ProcessGroupDeps;
  readonly #oomScoreAdj: number | null;
  #runs = 0;

  constructor(keeper: KeeperIdentity, oomScoreAdj: number | null, deps: ProcessGroupDeps) {
    this.keeper = keeper;
    this.#oomScoreAdj = oomScoreAdj;
    this.deps = deps;
  }

  start(spec: JobSpec): ContainedJob {
    this.#runs += 1;
    const runId = formatRunId(this.keeper, this.#runs);
    const group = ProcessGroup.start({ ...spec, env: { ...spec.env, [RUN_ID_VARIABLE]: runId } }, this.depsFor(runId));
    // setpriv is still starting the job: what it starts inherits the raised score.
    if (this.#oomScoreAdj !== null) raiseOomScore(group.pid, this.#oomScoreAdj);
    return group;
  }

  protected abstract depsFor(runId: string): ProcessGroupDeps;
  close(): void {}
  abstract sweep(): Promise<SweptJob[]>;
}

/** The process group only. */
export class ProcessGroupContainment extends GroupContainment {
  readonly kind = 'process-group';
  readonly detail = { reason: 'LEASE_KEEPER_CONTAINMENT=process-group: the job is its process group; a process that calls setsid escapes' };

  constructor(workerId: string, oomScoreAdj: number | null = null, deps: ProcessGroupDeps = {}) {
    super(ownIdentity(workerId), oomScoreAdj, deps);
  }

  protected depsFor(): ProcessGroupDeps {
    return this.deps;
  }

  /** A process group leaves nothing to find once its keeper is gone. */
  async sweep(): Promise<SweptJob[]> {
    return [];
  }
}

/** The process group plus the processes carrying the run's tag. */
export class TagContainment extends GroupContainment {
  readonly kind = 'tag';
  readonly detail: Readonly<Record<string, string>>;
  readonly #shared: SharedTagScan;
  readonly #scan: (prefix: string) => TagScan | null;

  constructor(workerId: string, reason: string, oomScoreAdj: number | null = null, deps: ProcessGroupDeps & { scanTags?: (prefix: string) => TagScan | null } = {}) {
    super(ownIdentity(workerId), oomScoreAdj, deps);
    this.detail = { reason };
    this.#scan = deps.scanTags ?? scanTags;
    this.#shared = new SharedTagScan(`${this.keeper.workerId}/${this.keeper.pid}/${this.keeper.startTime}/`, this.#scan);
  }

  protected depsFor(runId: string): ProcessGroupDeps {
    // Each look reads every environ of our user (~10 ms per 150 processes): look every 100 ms, not 20.
    return { pollMs: TAG_POLL_MS, ...this.deps, outside: taggedMembers(runId, this.#shared) };
  }

  /** SIGKILLs the tagged processes of every dead keeper with our worker id. */
  async sweep(): Promise<SweptJob[]> {
    const found = this.#scan(`${this.keeper.workerId}/`) ?? new Map<string, readonly number[]>();
    const swept: SweptJob[] = [];
    const killed: number[] = [];
    for (const [tag, pids] of found) {
      const run = parseRunId(tag);
      if (run === null || run.workerId !== this.keeper.workerId) continue;
      if (keeperAlive(run.keeperPid, run.keeperStartTime)) continue;
      const workId = workIdOf(pids); // before the kill: a dead process's environ reads empty
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      killed.push(...pids);
      swept.push({ workId, keeperPid: run.keeperPid, where: `${RUN_ID_VARIABLE}=${tag}`, processes: pids.length });
    }
    // Only what it killed: a live keeper's tagged processes (same worker id) run on, and waiting for them
    // held the start-up for the whole 5 s.
    await waitUntil(() => killed.every((pid) => !isRunning(pid)), 5_000);
    return swept;
  }
}

/** The work id from the first tagged process's environment (LEASE_KEEPER_WORK_ID), if readable. */
function workIdOf(pids: readonly number[]): string | null {
  for (const pid of pids) {
    try {
      const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      const line = env.find((l) => l.startsWith('LEASE_KEEPER_WORK_ID='));
      if (line !== undefined) return line.slice('LEASE_KEEPER_WORK_ID='.length);
    } catch {
      // gone
    }
  }
  return null;
}

function isRunning(pid: number): boolean {
  const st = readStat(pid);
  return st !== null && st.state !== 'Z';
}

export async function waitUntil(done: () => boolean, timeoutMs: number, everyMs = 20): Promise<boolean> {
  const until = performance.now() + timeoutMs;
  while (!done()) {
    if (performance.now() > until) return false;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return true;
}
