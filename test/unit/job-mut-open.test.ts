/**
 * Which containment the configuration gets (LEASE_KEEPER_CONTAINMENT, the job limits), and the exact
 * configuration problems an operator reads when it cannot be had (exit 78). The cgroup host is stood in for
 * by a temporary directory (cgroup2 "mounted" there) or by a host without cgroup v2, so nothing real is
 * touched.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CgroupHost } from '../../src/job/cgroup.js';
import type { ContainedJob } from '../../src/job/containment.js';
import { jobOomScore } from '../../src/job/oom-score.js';
import { openContainment, planContainment, type ContainmentChoice } from '../../src/job/open.js';

let dir: string;
const jobs: ContainedJob[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lk-open-'));
  writeFileSync(join(dir, 'cgroup.procs'), '');
  writeFileSync(join(dir, 'cgroup.controllers'), 'cpu memory pids\n');
  writeFileSync(join(dir, 'cgroup.subtree_control'), '');
});

afterEach(async () => {
  for (const job of jobs.splice(0)) {
    job.kill();
    await Promise.race([job.empty, new Promise((r) => setTimeout(r, 5_000))]);
  }
  rmSync(dir, { recursive: true, force: true });
});

/** cgroup v2 "mounted" at the temp dir, the keeper root in the root cgroup. */
const writable = (): CgroupHost => ({
  mountinfo: () => `41 31 0:38 / ${dir} rw,relatime - cgroup2 cgroup2 rw\n`,
  selfCgroup: () => '0::/\n',
  isRoot: () => true,
});
const nowhere: CgroupHost = { mountinfo: () => '', selfCgroup: () => '0::/\n', isRoot: () => true };
const NO_CGROUP_REASON = 'no cgroup v2 (cgroup2) file system is mounted';

const LIMITS = { memoryMax: 2 ** 30, pidsMax: 100, cpuMax: 2 };
const choice = (c: Partial<ContainmentChoice>): ContainmentChoice => ({ mode: 'auto', workerId: 'w1', limits: {}, oomScoreAdj: 0, ...c });

describe('planContainment: which kind, and why', () => {
  it('process-group when asked for, without looking at cgroups', () => {
    expect(planContainment(choice({ mode: 'process-group', host: writable() }))).toEqual({
      kind: 'process-group',
      reason: 'LEASE_KEEPER_CONTAINMENT=process-group',
    });
  });

  it('process-group with limits: one problem per limit, naming its variable and flag and what to do', () => {
    expect(planContainment(choice({ mode: 'process-group', limits: LIMITS, host: writable() }))).toEqual({
      kind: null,
      problems: [
        'LEASE_KEEPER_JOB_MEMORY_MAX (--job-memory-max): a job limit needs cgroup containment, but LEASE_KEEPER_CONTAINMENT=process-group; use auto or cgroup, or unset the limit',
        'LEASE_KEEPER_JOB_PIDS_MAX (--job-pids-max): a job limit needs cgroup containment, but LEASE_KEEPER_CONTAINMENT=process-group; use auto or cgroup, or unset the limit',
        'LEASE_KEEPER_JOB_CPU_MAX (--job-cpu-max): a job limit needs cgroup containment, but LEASE_KEEPER_CONTAINMENT=process-group; use auto or cgroup, or unset the limit',
      ],
    });
    expect(planContainment(choice({ mode: 'process-group', limits: { pidsMax: 5 } }))).toEqual({
      kind: null,
      problems: ['LEASE_KEEPER_JOB_PIDS_MAX (--job-pids-max): a job limit needs cgroup containment, but LEASE_KEEPER_CONTAINMENT=process-group; use auto or cgroup, or unset the limit'],
    });
  });

  it('cgroup where cgroup v2 is writable, in auto and cgroup mode, limits or not', () => {
    for (const mode of ['auto', 'cgroup'] as const) {
      expect(planContainment(choice({ mode, host: writable() }))).toEqual({ kind: 'cgroup', reason: 'cgroup v2 is writable' });
      expect(planContainment(choice({ mode, limits: LIMITS, host: writable() }))).toEqual({ kind: 'cgroup', reason: 'cgroup v2 is writable' });
    }
  });

  it('cgroup mode where cgroups are not possible: the reason, and the way out', () => {
    expect(planContainment(choice({ mode: 'cgroup', host: nowhere }))).toEqual({
      kind: null,
      problems: [`LEASE_KEEPER_CONTAINMENT (--containment) = "cgroup": cgroup containment is not possible here: ${NO_CGROUP_REASON}; or use auto (the environment-tag fallback)`],
    });
  });

  it('auto where cgroups are not possible: the tag fallback, or one problem per limit', () => {
    expect(planContainment(choice({ host: nowhere }))).toEqual({
      kind: 'tag',
      reason: `no writable cgroup v2 (${NO_CGROUP_REASON}): process group + LEASE_KEEPER_RUN_ID environment tag`,
    });
    expect(planContainment(choice({ limits: { memoryMax: 1, cpuMax: 1 }, host: nowhere }))).toEqual({
      kind: null,
      problems: [
        `LEASE_KEEPER_JOB_MEMORY_MAX (--job-memory-max): a job limit needs cgroup containment, which is not possible here: ${NO_CGROUP_REASON}`,
        `LEASE_KEEPER_JOB_CPU_MAX (--job-cpu-max): a job limit needs cgroup containment, which is not possible here: ${NO_CGROUP_REASON}`,
      ],
    });
  });

  it('plans without creating anything', () => {
    planContainment(choice({ host: writable() }));
    expect(() => rmSync(join(dir, 'lease-keeper-w1'))).toThrow(/ENOENT/);
  });
});

describe('openContainment: the containment, built once', () => {
  it('cgroup: the job parent is created under the mount', () => {
    const opened = openContainment(choice({ host: writable() }));
    expect(opened.ok && opened.containment.kind).toBe('cgroup');
    expect(opened.ok && opened.containment.detail).toEqual({ cgroup_parent: join(dir, 'lease-keeper-w1') });
  });

  it('a cgroup2 mount given explicitly is used instead of the one in mountinfo', () => {
    const opened = openContainment(choice({ host: nowhere, mount: dir }));
    expect(opened.ok && opened.containment.detail).toEqual({ cgroup_parent: join(dir, 'lease-keeper-w1') });
  });

  it("cgroup: its jobs get the launch settings, and the launcher the raised OOM score", () => {
    const spawned: string[][] = [];
    const opened = openContainment(choice({ host: writable(), oomScoreAdj: 300, launch: { setpriv: null, spawn: (file, args) => {
      spawned.push([file, ...args]);
      throw new Error('nothing is spawned in this test');
    } } }));
    if (!opened.ok) throw new Error(opened.problems.join());
    expect(() => opened.containment.start({ command: ['/bin/true'], env: { PATH: '/usr/bin:/bin' }, name: 'work_c' })).toThrow('nothing is spawned');
    expect(spawned).toHaveLength(1);
    expect(spawned[0]).not.toContain('/usr/bin/setpriv');
    expect(spawned[0]).toContain(String(jobOomScore(300)));
    expect(spawned[0]!.at(-1)).toBe('/bin/true');
  });

  it('the problems of a choice that cannot be had', () => {
    expect(openContainment(choice({ mode: 'cgroup', host: nowhere }))).toEqual({
      ok: false,
      problems: [`LEASE_KEEPER_CONTAINMENT (--containment) = "cgroup": cgroup containment is not possible here: ${NO_CGROUP_REASON}; or use auto (the environment-tag fallback)`],
    });
  });

  it('tag: says why, and its jobs get the launch settings and the raised OOM score', async () => {
    const opened = openContainment(choice({ host: nowhere, oomScoreAdj: 300, launch: { setpriv: null } }));
    if (!opened.ok) throw new Error(opened.problems.join());
    expect(opened.containment.kind).toBe('tag');
    expect(opened.containment.detail).toEqual({ reason: `no writable cgroup v2 (${NO_CGROUP_REASON}): process group + LEASE_KEEPER_RUN_ID environment tag` });
    const job = opened.containment.start({ command: ['/bin/sleep', '30'], env: { PATH: '/usr/bin:/bin' } });
    jobs.push(job);
    expect(job.parentDeathSignal).toBe(false);
    expect(readOom(job.pid)).toBe(jobOomScore(300));
  });

  it('process-group: its jobs get the launch settings and the raised OOM score', async () => {
    const opened = openContainment(choice({ mode: 'process-group', oomScoreAdj: 200, launch: { setpriv: null } }));
    if (!opened.ok) throw new Error(opened.problems.join());
    expect(opened.containment.kind).toBe('process-group');
    const job = opened.containment.start({ command: ['/bin/sleep', '30'], env: { PATH: '/usr/bin:/bin' } });
    jobs.push(job);
    expect(job.parentDeathSignal).toBe(false);
    expect(readOom(job.pid)).toBe(jobOomScore(200));
  });
});

function readOom(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/oom_score_adj`, 'utf8').trim());
}
