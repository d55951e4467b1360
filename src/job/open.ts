import { CgroupContainment, type CgroupHost, type JobLimits } from './cgroup.js';
import type { Containment, ContainmentKind, ContainmentMode } from './containment.js';
import type { LaunchDeps } from './launch.js';
import { jobOomScore } from './oom-score.js';
import { ProcessGroupContainment, TagContainment } from './run-tag.js';

/** What the configuration asks for (LEASE_KEEPER_CONTAINMENT, the job limits, the oom score raise). */
export interface ContainmentChoice {
  mode: ContainmentMode;
  workerId: string;
  limits: JobLimits;
  /** LEASE_KEEPER_JOB_OOM_SCORE_ADJ: added to the keeper's own score for every job (0: left alone). */
  oomScoreAdj: number;
  /** Seams for tests. */
  host?: CgroupHost;
  mount?: string;
  launch?: LaunchDeps;
}

export type Opened = { ok: true; containment: Containment } | { ok: false; problems: string[] };

const LIMIT_NAMES: Record<keyof JobLimits, string> = {
  memoryMax: 'LEASE_KEEPER_JOB_MEMORY_MAX (--job-memory-max)',
  pidsMax: 'LEASE_KEEPER_JOB_PIDS_MAX (--job-pids-max)',
  cpuMax: 'LEASE_KEEPER_JOB_CPU_MAX (--job-cpu-max)',
};

function limitNames(limits: JobLimits): string[] {
  return (Object.keys(LIMIT_NAMES) as Array<keyof JobLimits>).filter((k) => limits[k] !== undefined).map((k) => LIMIT_NAMES[k]);
}

/** Which kind `choice` gets on this host and why, without changing anything (for `lease-keeper config`). */
export function planContainment(choice: ContainmentChoice): { kind: ContainmentKind; reason: string } | { kind: null; problems: string[] } {
  return decide(choice, () => CgroupContainment.plan(cgroupOptions(choice)));
}

/**
 * Builds the containment once, at start-up and before READY=1: for cgroups this creates the job parent
 * and moves the keeper into its leaf. Problems are configuration errors (exit 78).
 */
export function openContainment(choice: ContainmentChoice): Opened {
  let opened: CgroupContainment | null = null;
  const decided = decide(choice, () => {
    const r = CgroupContainment.open(cgroupOptions(choice));
    if (r.ok) opened = r.containment;
    return r;
  });
  if (decided.kind === null) return { ok: false, problems: decided.problems };
  const oomScore = jobOomScore(choice.oomScoreAdj);
  switch (decided.kind) {
    case 'cgroup':
      return { ok: true, containment: opened! };
    case 'tag':
      return { ok: true, containment: new TagContainment(choice.workerId, decided.reason, oomScore, choice.launch) };
    case 'process-group':
      return { ok: true, containment: new ProcessGroupContainment(choice.workerId, oomScore, choice.launch) };
  }
}

function cgroupOptions(choice: ContainmentChoice) {
  return {
    workerId: choice.workerId,
    limits: choice.limits,
    oomScore: jobOomScore(choice.oomScoreAdj),
    ...(choice.host ? { host: choice.host } : {}),
    ...(choice.mount ? { mount: choice.mount } : {}),
    ...(choice.launch ? { launch: choice.launch } : {}),
  };
}

function decide(
  choice: ContainmentChoice,
  cgroup: () => { ok: true } | { ok: false; reason: string },
): { kind: ContainmentKind; reason: string } | { kind: null; problems: string[] } {
  const limits = limitNames(choice.limits);
  if (choice.mode === 'process-group') {
    if (limits.length > 0) {
      return { kind: null, problems: limits.map((l) => `${l}: a job limit needs cgroup containment, but LEASE_KEEPER_CONTAINMENT=process-group; use auto or cgroup, or unset the limit`) };
    }
    return { kind: 'process-group', reason: 'LEASE_KEEPER_CONTAINMENT=process-group' };
  }
  const r = cgroup();
  if (r.ok) return { kind: 'cgroup', reason: 'cgroup v2 is writable' };
  if (choice.mode === 'cgroup') {
    return { kind: null, problems: [`LEASE_KEEPER_CONTAINMENT (--containment) = "cgroup": cgroup containment is not possible here: ${r.reason}; or use auto (the environment-tag fallback)`] };
  }
  if (limits.length > 0) {
    return { kind: null, problems: limits.map((l) => `${l}: a job limit needs cgroup containment, which is not possible here: ${r.reason}`) };
  }
  return { kind: 'tag', reason: `no writable cgroup v2 (${r.reason}): process group + LEASE_KEEPER_RUN_ID environment tag` };
}
