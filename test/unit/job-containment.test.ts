/**
 * Containment with real processes: a cgroup v2 per job (needs root and a writable cgroup2 mount; CI has
 * both and runs with LEASE_KEEPER_TEST_STRICT=1), the environment-tag fallback, and the start-up sweep.
 * Every job here escapes its process group on purpose (setsid, double fork) and must still die with it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  CgroupContainment,
  LAUNCHER_SCRIPT,
  cgroup2Mount,
  freezeAndKill,
  jobCgroupName,
  killCgroup,
  launcherArgs,
  limitFiles,
  ownCgroup,
  planLayout,
  populated,
  readAccounting,
  type CgroupHost,
} from '../../src/job/cgroup.js';
import { RUN_ID_VARIABLE, type ContainedJob, type Containment } from '../../src/job/containment.js';
import { readStat } from '../../src/job/group-members.js';
import { jobOomScore } from '../../src/job/oom-score.js';
import { openContainment, planContainment } from '../../src/job/open.js';
import { formatRunId, parseRunId, runIdIn, scanTags, TagContainment } from '../../src/job/run-tag.js';
import { cgroup2MountPoint, cgroupMissing, prerequisite } from '../support/prerequisites.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, probe: () => T | null | undefined | false, timeoutMs = 5_000): Promise<T> {
  const until = performance.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== null && v !== undefined && v !== false) return v;
    if (performance.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function isLive(pid: number): boolean {
  const st = readStat(pid);
  return st !== null && st.state !== 'Z';
}

let dir: string;
let jobs: ContainedJob[] = [];
let strays: number[] = [];
let cleanups: Array<() => void> = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lk-contain-'));
});

afterEach(async () => {
  for (const job of jobs) {
    job.kill();
    await Promise.race([job.empty, sleep(5_000)]);
  }
  for (const pid of strays) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  for (const c of cleanups.reverse()) c();
  jobs = [];
  strays = [];
  cleanups = [];
  rmSync(dir, { recursive: true, force: true });
});

function run(containment: Containment, script: string, extra: { env?: NodeJS.ProcessEnv; name?: string } = {}): ContainedJob {
  // stdin from /dev/null: bash started with a socket as stdin (Stryker's test workers have one) reads ~/.bashrc.
  const job = containment.start({
    command: ['/bin/bash', '-c', script],
    env: { ...process.env, ...extra.env },
    name: extra.name ?? 'work_test',
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  jobs.push(job);
  return job;
}

/** Waits for a pid file the job writes once set up, and remembers the pid for cleanup. */
async function pidFrom(file: string): Promise<number> {
  const pid = Number(await waitFor(`pid file ${file}`, () => existsSync(file) && readFileSync(file, 'utf8').trim()));
  strays.push(pid);
  return pid;
}

/** A daemon that leaves the job's session and process group and ignores SIGTERM; writes its pid to `file`. */
const daemon = (file: string) => `setsid bash -c 'trap "" TERM; echo $$ > ${file}.tmp; mv ${file}.tmp ${file}; exec sleep 60' &`;

/** Removes a cgroup subtree a test created, killing what is left in it (never the mount's root: that is every process). */
function removeTree(path: string): void {
  if (!existsSync(path)) return;
  if (path === cgroup2MountPoint()) throw new Error(`refusing to kill and remove the cgroup root ${path}`);
  killCgroup(path);
  for (const e of readdirSync(path, { withFileTypes: true })) if (e.isDirectory()) removeTree(join(path, e.name));
  for (let i = 0; i < 100; i++) {
    try {
      rmdirSync(path);
      return;
    } catch {
      spawnSync('sleep', ['0.02']);
    }
  }
}

describe('the cgroup launcher', () => {
  it('aborts with 126 before the job runs when it cannot enter the cgroup', () => {
    const marker = join(dir, 'ran');
    const [file, args] = launcherArgs(join(dir, 'no-such-cgroup'), null, '/bin/touch', [marker]);
    const r = spawnSync(file, args, { encoding: 'utf8' });
    expect(r.status).toBe(126);
    expect(r.stderr).toContain('could not enter its cgroup');
    expect(existsSync(marker)).toBe(false);
  });

  it('passes every argument through untouched (no quoting to get wrong)', () => {
    const fake = join(dir, 'fake-cgroup');
    mkdirSync(fake);
    const odd = ['a b', '$(touch /tmp/lk-pwned)', '"q"', "'s'", '-', '', '*'];
    const [file, args] = launcherArgs(fake, null, '/usr/bin/printf', ['%s|', ...odd]);
    const r = spawnSync(file, args, { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`${odd.join('|')}|`);
    // The launcher wrote its own pid into the (fake) cgroup.procs before exec: the job is that pid.
    expect(readFileSync(join(fake, 'cgroup.procs'), 'utf8')).toBe('0');
    expect(LAUNCHER_SCRIPT).not.toContain('eval');
  });
});

describe('cgroup paths, layout, limits and accounting (against a temporary directory)', () => {
  const host = (self: string, root = true): CgroupHost => ({
    mountinfo: () => `41 31 0:38 / ${dir} rw,relatime - cgroup2 cgroup2 rw\n`,
    selfCgroup: () => self,
    isRoot: () => root,
  });

  beforeEach(() => writeFileSync(join(dir, 'cgroup.procs'), ''));

  it('reads the cgroup2 mount and the own cgroup like the kernel writes them', () => {
    const info = '24 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n30 24 0:5 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n';
    expect(cgroup2Mount(info)).toBe('/sys/fs/cgroup');
    expect(cgroup2Mount('41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw')).toBe('/sys/fs/cgroup/unified');
    expect(cgroup2Mount('1 0 0:1 / /with\\040space rw - cgroup2 none rw')).toBe('/with space');
    expect(cgroup2Mount('30 24 0:5 / /x rw - cgroup cgroup rw,memory')).toBeNull();
    expect(ownCgroup('4:memory:/a\n0::/system.slice/lk.service\n')).toBe('/system.slice/lk.service');
    expect(ownCgroup('0::/\n')).toBe('/');
    expect(ownCgroup('4:memory:/a\n')).toBeNull();
  });

  it('root in the root cgroup: jobs under lease-keeper-<worker id>, the keeper stays', () => {
    const r = planLayout(host('0::/\n'), 'w1');
    expect(r).toEqual({ ok: true, layout: { mount: dir, parent: join(dir, 'lease-keeper-w1'), keeperLeaf: null, above: dir } });
    const notRoot = planLayout(host('0::/\n', false), 'w1');
    expect(notRoot.ok).toBe(false);
    expect(!notRoot.ok && notRoot.reason).toContain('Delegate=yes');
  });

  it('a delegated cgroup: the keeper moves into <own>/keeper, jobs go beside it', () => {
    mkdirSync(join(dir, 'svc'));
    for (const f of ['cgroup.procs', 'cgroup.subtree_control']) writeFileSync(join(dir, 'svc', f), '');
    expect(planLayout(host('0::/svc\n'), 'w1')).toEqual({
      ok: true,
      layout: { mount: dir, parent: join(dir, 'svc'), keeperLeaf: join(dir, 'svc', 'keeper'), above: null },
    });
    // Already in the leaf (a restart inside a prepared cgroup): stay, jobs still go beside it.
    mkdirSync(join(dir, 'svc', 'keeper'));
    expect(planLayout(host('0::/svc/keeper\n'), 'w1')).toMatchObject({ ok: true, layout: { parent: join(dir, 'svc'), keeperLeaf: null } });
    expect(planLayout({ ...host(''), selfCgroup: () => '1:name=systemd:/\n' }, 'w1').ok).toBe(false);
  });

  it('a limit needs its controller in the parent: missing ones are a configuration problem naming them', () => {
    writeFileSync(join(dir, 'cgroup.controllers'), 'cpu io\n');
    const choice = { workerId: 'w1', limits: { memoryMax: 512 * 2 ** 20, cpuMax: 2 }, oomScoreAdj: 500, host: host('0::/\n') };
    const missing = planContainment({ ...choice, mode: 'auto' });
    expect(missing.kind).toBeNull();
    expect(missing.kind === null && missing.problems.join()).toMatch(/LEASE_KEEPER_JOB_MEMORY_MAX.*memory controller is not available.*has: cpu io/);
    writeFileSync(join(dir, 'cgroup.controllers'), 'cpu io memory pids\n');
    expect(planContainment({ ...choice, mode: 'cgroup' })).toMatchObject({ kind: 'cgroup' });
    // process-group containment cannot hold a limit at all
    const pg = planContainment({ ...choice, mode: 'process-group' });
    expect(pg.kind === null && pg.problems).toHaveLength(2);
  });

  it('opening with limits enables the controllers and each job cgroup gets its limit files', () => {
    writeFileSync(join(dir, 'cgroup.controllers'), 'cpu memory pids\n');
    writeFileSync(join(dir, 'cgroup.subtree_control'), '');
    const opened = CgroupContainment.open({ workerId: 'w1', limits: { memoryMax: 2 ** 30, pidsMax: 100, cpuMax: 2 }, host: host('0::/\n') });
    expect(opened.ok).toBe(true);
    expect(readFileSync(join(dir, 'cgroup.subtree_control'), 'utf8')).toBe('+memory +pids +cpu');
    expect(readFileSync(join(dir, 'lease-keeper-w1', 'cgroup.subtree_control'), 'utf8')).toBe('+memory +pids +cpu');
    expect(limitFiles({ memoryMax: 2 ** 30, pidsMax: 100, cpuMax: 2 })).toEqual([
      ['memory.max', '1073741824'],
      ['pids.max', '100'],
      ['cpu.max', '200000 100000'],
    ]);
    expect(limitFiles({ cpuMax: 0.005 })).toEqual([['cpu.max', '1000 100000']]);
  });

  it('reads cpu time, peak memory and OOM kills from the cgroup files', () => {
    writeFileSync(join(dir, 'cpu.stat'), 'usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n');
    writeFileSync(join(dir, 'memory.peak'), '123456789\n');
    writeFileSync(join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n');
    expect(readAccounting(dir)).toEqual({ cpuSeconds: 2.5, memoryPeakBytes: 123456789, oomKilled: true });
    writeFileSync(join(dir, 'memory.events'), 'oom 0\noom_kill 0\n');
    rmSync(join(dir, 'memory.peak'));
    expect(readAccounting(dir)).toEqual({ cpuSeconds: 2.5, memoryPeakBytes: null, oomKilled: false });
  });

  it('names job cgroups after the work id and the keeper, within NAME_MAX', () => {
    const keeper = { workerId: 'w', pid: 4242, startTime: 987654 };
    expect(jobCgroupName('work_abc-1', keeper, 3)).toBe('job-work_abc-1-k4242-987654-3');
    expect(jobCgroupName('x'.repeat(300), keeper, 1).length).toBeLessThan(256);
  });
});

describe('the job\'s oom_score_adj', () => {
  it('is the keeper\'s own plus the raise, at most 1000; 0 leaves it alone', () => {
    expect(jobOomScore(500, 0)).toBe(500);
    expect(jobOomScore(500, -900)).toBe(-400); // a unit's OOMScoreAdjust=-900: the job still gets raised from there
    expect(jobOomScore(500, 800)).toBe(1000);
    expect(jobOomScore(0, 300)).toBeNull();
  });
});

describe('the environment tag', () => {
  it('formats and parses run ids, and finds the tag anywhere in an environ block', () => {
    const id = formatRunId({ workerId: 'host-1.a:b@c', pid: 12, startTime: 34 }, 5);
    expect(id).toBe('host-1.a:b@c/12/34/5');
    expect(parseRunId(id)).toEqual({ workerId: 'host-1.a:b@c', keeperPid: 12, keeperStartTime: 34, n: 5 });
    expect(parseRunId('a/b/c/d')).toBeNull();
    expect(runIdIn(Buffer.from(`A=1\0${RUN_ID_VARIABLE}=x/1/2/3\0B=2\0`))).toBe('x/1/2/3');
    expect(runIdIn(Buffer.from(`${RUN_ID_VARIABLE}=first/1/2/3\0`))).toBe('first/1/2/3');
    expect(runIdIn(Buffer.from(`NOT_${RUN_ID_VARIABLE}=x/1/2/3\0`))).toBeNull();
  });
});

describe('tag containment (the fallback without writable cgroups)', () => {
  let tag: TagContainment;
  beforeEach(() => {
    tag = new TagContainment(`ut-${process.pid}-${Math.random().toString(36).slice(2, 6)}`, 'test');
  });

  it('every job run carries its own tag', async () => {
    const out = join(dir, 'env');
    await run(tag, `echo "$${RUN_ID_VARIABLE}" > ${out}`).empty;
    const first = readFileSync(out, 'utf8').trim();
    await run(tag, `echo "$${RUN_ID_VARIABLE}" > ${out}`).empty;
    const second = readFileSync(out, 'utf8').trim();
    expect(parseRunId(first)).not.toBeNull();
    expect(second).not.toBe(first);
  });

  it('stops a setsid daemon that ignores SIGTERM: SIGKILL at the grace, and empty only after it died', async () => {
    const pidFile = join(dir, 'daemon');
    const job = run(tag, `${daemon(pidFile)} sleep 60`);
    const pid = await pidFrom(pidFile);
    expect(readStat(pid)!.pgrp).not.toBe(job.pid); // it left the process group
    const t0 = performance.now();
    await job.stop({ signal: 'SIGTERM', graceMs: 300 });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
    expect(isLive(pid)).toBe(false);
  });

  it('raises the job\'s oom_score_adj over the keeper\'s own (never above 1000)', async () => {
    const out = join(dir, 'oom');
    const own = Number(readFileSync('/proc/self/oom_score_adj', 'utf8'));
    const raised = new TagContainment(`ut-oom-${process.pid}`, 'test', Math.min(1000, own + 300));
    // The keeper writes the score right after the spawn; the job looks a moment later.
    await run(raised, `sleep 0.2; cat /proc/self/oom_score_adj > ${out}`).empty;
    expect(Number(readFileSync(out, 'utf8'))).toBe(Math.min(1000, own + 300));
  });

  it('each process gets the stop signal once: the tagged members of the signalled group are not signalled again', async () => {
    const terms = join(dir, 'terms');
    const pidFile = join(dir, 'daemon');
    // The leader's trap takes a while: a second SIGTERM arriving meanwhile would run it again.
    const job = run(tag, `trap 'echo term >> ${terms}; sleep 0.3; exit 0' TERM; ${daemon(pidFile)} sleep 60 & wait`);
    const pid = await pidFrom(pidFile);
    await job.stop({ signal: 'SIGTERM', graceMs: 600 });
    expect(readFileSync(terms, 'utf8')).toBe('term\n');
    expect(job.lastSignal?.signal).toBe('SIGKILL'); // the daemon (out of the group, ignoring TERM) needed it
    expect(isLive(pid)).toBe(false);
  });

  it('a leader that exits 0 leaving a daemon: the job is not empty until the daemon is stopped', async () => {
    const pidFile = join(dir, 'daemon');
    const job = run(tag, `${daemon(pidFile)} while [ ! -s ${pidFile} ]; do sleep 0.01; done; exit 0`);
    const pid = await pidFrom(pidFile);
    expect(await job.exited).toEqual({ code: 0, signal: null });
    const early = await Promise.race([job.empty.then(() => 'empty'), sleep(300).then(() => 'waiting')]);
    expect(early).toBe('waiting');
    expect(job.isAlive()).toBe(true);
    await job.stop({ signal: 'SIGTERM', graceMs: 100 });
    expect(isLive(pid)).toBe(false);
  });

  it('documents its hole: a process that clears its environment escapes the tag', async () => {
    const pidFile = join(dir, 'cleared');
    const job = run(tag, `env -i setsid /bin/bash -c 'echo $$ > ${pidFile}.tmp; mv ${pidFile}.tmp ${pidFile}; exec sleep 60' & sleep 60`);
    const pid = await pidFrom(pidFile);
    await job.stop({ signal: 'SIGTERM', graceMs: 100 });
    expect(isLive(pid)).toBe(true); // docs/reliability.md names this limit; cgroup containment has no such hole
  });

  it('the sweep kills tagged processes of a dead keeper with our worker id, and nothing else', async () => {
    const workerId = `ut-sweep-${process.pid}`;
    const dead = spawnSync('/bin/sh', ['-c', 'cat /proc/$$/stat'], { encoding: 'utf8' });
    const deadPid = Number(dead.stdout.split(' ')[0]);
    const deadStart = Number(dead.stdout.slice(dead.stdout.lastIndexOf(')') + 2).split(' ')[19]);
    const liveKeeper = spawn('sleep', ['60']);
    strays.push(liveKeeper.pid!);
    await waitFor('live keeper stat', () => readStat(liveKeeper.pid!));
    const liveStart = readStat(liveKeeper.pid!)!.startTime;
    const tagged = (runId: string): ChildProcess => {
      const child = spawn('setsid', ['sleep', '60'], { env: { ...process.env, [RUN_ID_VARIABLE]: runId, LEASE_KEEPER_WORK_ID: 'work_swept' }, stdio: 'ignore' });
      strays.push(child.pid!);
      return child;
    };
    const orphan = tagged(`${workerId}/${deadPid}/${deadStart}/1`);
    const ofLive = tagged(`${workerId}/${liveKeeper.pid}/${liveStart}/1`);
    const reused = tagged(`${workerId}/${liveKeeper.pid}/${liveStart + 1}/2`); // same pid, other start: a dead keeper
    const otherWorker = tagged(`other-${workerId}/${deadPid}/${deadStart}/1`);
    await waitFor('tagged processes', () => scanTags(`${workerId}/`)?.size === 3 || null);
    const swept = await new TagContainment(workerId, 'test').sweep();
    expect(swept.map((s) => s.keeperPid).sort()).toEqual([deadPid, liveKeeper.pid].sort());
    expect(swept.every((s) => s.workId === 'work_swept')).toBe(true);
    await waitFor('swept processes to die', () => !isLive(orphan.pid!) && !isLive(reused.pid!));
    expect(isLive(ofLive.pid!)).toBe(true);
    expect(isLive(otherWorker.pid!)).toBe(true);
  });
});

describe.runIf(prerequisite('a writable cgroup v2 with cgroup.kill (root)', cgroupMissing()))('cgroup containment (real cgroups)', () => {
  let cg: CgroupContainment;
  let workerId: string;

  beforeEach(() => {
    workerId = `ut-${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
    // These tests need the root layout (the test runs in the root cgroup, as on CI). Checked before open(),
    // which would move this process into a leaf, and the cleanup path is named here, not taken from the code
    // under test: a slip there (a parent at the cgroup root) must fail the test, not kill every process.
    const mount = cgroup2MountPoint()!;
    const parent = join(mount, `lease-keeper-${workerId}`);
    expect(CgroupContainment.plan({ workerId })).toEqual({ ok: true, layout: { mount, parent, keeperLeaf: null, above: mount } });
    cleanups.push(() => removeTree(parent));
    const opened = CgroupContainment.open({ workerId, oomScore: 700 });
    if (!opened.ok) throw new Error(opened.reason);
    cg = opened.containment;
  });

  const cgroupOf = (pid: number): string => readFileSync(`/proc/${pid}/cgroup`, 'utf8').match(/^0::(.*)$/m)![1]!;

  it('the job is in its own cgroup from its first instruction, named after the work id, tagged, with a raised OOM score', async () => {
    const out = join(dir, 'out');
    const job = run(cg, `grep ^0:: /proc/self/cgroup > ${out}; echo "$${RUN_ID_VARIABLE}" >> ${out}; cat /proc/self/oom_score_adj >> ${out}`, { name: 'work_named' });
    expect(job.where.cgroup).toMatch(/\/job-work_named-k\d+-\d+-1$/);
    await job.empty;
    const [cgroupLine, runId, oom] = readFileSync(out, 'utf8').trim().split('\n');
    expect(cgroupLine).toBe(`0::${String(job.where.cgroup).slice(cgroup2MountPoint()!.length)}`);
    expect(parseRunId(runId!)?.workerId).toBe(workerId);
    expect(oom).toBe('700');
    expect(existsSync(String(job.where.cgroup))).toBe(false); // removed once empty
  });

  it('stops a setsid daemon that ignores SIGTERM and a double-forked grandchild: SIGKILL by cgroup.kill at the grace', async () => {
    const pidFile = join(dir, 'daemon');
    const twice = join(dir, 'twice');
    const job = run(cg, `${daemon(pidFile)} ( ( trap '' TERM; sleep 60 & echo $! > ${twice}.tmp; mv ${twice}.tmp ${twice} ) & ); sleep 60`);
    const pid = await pidFrom(pidFile);
    const orphan = await pidFrom(twice);
    expect(readStat(pid)!.pgrp).not.toBe(job.pid);
    expect(readStat(orphan)!.ppid).not.toBe(job.pid);
    expect(cgroupOf(pid)).toBe(cgroupOf(job.pid));
    const t0 = performance.now();
    await job.stop({ signal: 'SIGTERM', graceMs: 300 });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
    expect(isLive(pid)).toBe(false);
    expect(existsSync(String(job.where.cgroup))).toBe(false);
  });

  it('the stop signal reaches each process once: the leader and its group by the group signal, a setsid daemon by its pid', async () => {
    const out = join(dir, 'got');
    const daemonPid = join(dir, 'daemon');
    const ready = join(dir, 'ready');
    // Each process records every SIGTERM it handles, then lingers so that a second one would be recorded too.
    // Each says it is ready once its trap is set (a fixed sleep was too short under load: a process
    // that got the signal before its trap died without recording it).
    const rec = (who: string) => `trap 'echo ${who} >> ${out}; sleep 0.3; exit 0' TERM; touch ${ready}.${who}`;
    const job = run(
      cg,
      `setsid bash -c 'echo $$ > ${daemonPid}; ${rec('daemon').replace(/'/g, '"')}; while :; do sleep 0.05; done' & ` +
        `bash -c "${rec('child')}; while :; do sleep 0.05; done" & ${rec('leader')}; while :; do sleep 0.05; done`,
    );
    await waitFor('the job set its traps up', () => ['daemon', 'child', 'leader'].every((who) => existsSync(`${ready}.${who}`)));
    const daemon = await pidFrom(daemonPid);
    // Whether a doubled signal is handled twice is a race; which signals are sent is not.
    const groupSignals: number[] = [];
    const onePid: { pid: number; pgrp: number | undefined }[] = [];
    const kill = process.kill.bind(process);
    const spy = vi.spyOn(process, 'kill').mockImplementation((pid, sig) => {
      if (sig === 'SIGTERM' && pid < 0) groupSignals.push(-pid);
      if (sig === 'SIGTERM' && pid > 0) onePid.push({ pid, pgrp: readStat(pid)?.pgrp });
      return kill(pid, sig);
    });
    try {
      await job.stop({ signal: 'SIGTERM', graceMs: 3000 });
    } finally {
      spy.mockRestore();
    }
    expect(groupSignals).toEqual([job.pid]);
    expect(onePid.map((s) => s.pid)).toContain(daemon);
    expect(onePid.filter((s) => s.pgrp === job.pid)).toEqual([]);
    expect(readFileSync(out, 'utf8').trim().split('\n').sort()).toEqual(['child', 'daemon', 'leader']);
  });

  it('a leader that exits 0 leaving a daemon: not empty until the daemon is gone', async () => {
    const pidFile = join(dir, 'daemon');
    const job = run(cg, `${daemon(pidFile)} while [ ! -s ${pidFile} ]; do sleep 0.01; done; exit 0`);
    const pid = await pidFrom(pidFile);
    expect(await job.exited).toEqual({ code: 0, signal: null });
    const early = await Promise.race([job.empty.then(() => 'empty'), sleep(300).then(() => 'waiting')]);
    expect(early).toBe('waiting');
    expect(job.isAlive()).toBe(true);
    expect(populated(String(job.where.cgroup))).toBe(true);
    await job.stop({ signal: 'SIGTERM', graceMs: 100 });
    expect(isLive(pid)).toBe(false);
    expect(job.isAlive()).toBe(false);
  });

  it('a fork bomb (bounded: 3000 sleepers) still forking is stopped by cgroup.kill', async () => {
    const started = join(dir, 'started');
    const job = run(cg, `touch ${started}; i=0; while [ $i -lt 3000 ]; do setsid sleep 60 & i=$((i+1)); done; wait`);
    await waitFor('the bomb to start', () => existsSync(started));
    await sleep(150);
    const t0 = performance.now();
    job.kill();
    await job.empty;
    const tookMs = performance.now() - t0;
    expect(tookMs).toBeLessThan(5_000);
    expect(job.isAlive()).toBe(false);
    // Nothing tagged with this keeper's runs is left anywhere on the machine.
    const runId = `${workerId}/`;
    expect(scanTags(runId)?.size ?? 0).toBe(0);
  });

  it('without cgroup.kill (Linux < 5.14): freeze, SIGKILL each, thaw also ends a job that keeps forking', async () => {
    const started = join(dir, 'started');
    const job = run(cg, `touch ${started}; i=0; while [ $i -lt 5000 ]; do setsid sleep 60 & i=$((i+1)); done; wait`);
    await waitFor('the forker to start', () => existsSync(started));
    await sleep(100);
    // The freeze takes effect asynchronously: a fork can slip through one round, so the job's watch repeats
    // a due SIGKILL on every poll. The test repeats it the same way.
    const cgroup = String(job.where.cgroup);
    freezeAndKill(cgroup);
    for (const until = performance.now() + 5_000; job.isAlive() && performance.now() < until; ) {
      await sleep(50);
      if (job.isAlive()) freezeAndKill(cgroup);
    }
    expect(job.isAlive()).toBe(false);
  });

  it('accounts the CPU time the job used', async () => {
    // A fixed amount of work (~0.4 s of CPU here), not of wall time: under load the job just takes longer.
    const job = run(cg, 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done');
    await job.empty;
    const usage = job.accounting();
    expect(usage?.cpuSeconds).toBeGreaterThan(0.1);
    expect(usage?.oomKilled).toBe(false);
  });

  it('passes the stdio option to the job (output to a file)', async () => {
    const out = join(dir, 'stdout');
    const { openSync, closeSync } = await import('node:fs');
    const fd = openSync(out, 'w');
    const job = cg.start({ command: ['/bin/echo', 'hello from the job'], env: process.env, stdio: ['ignore', fd, 'inherit'] });
    jobs.push(job);
    closeSync(fd);
    await job.empty;
    expect(readFileSync(out, 'utf8')).toBe('hello from the job\n');
  });

  it('the sweep kills and removes the job cgroups of a dead keeper, never a live keeper\'s', async () => {
    const parent = cg.layout.parent;
    const dead = spawnSync('/bin/sh', ['-c', 'cat /proc/$$/stat'], { encoding: 'utf8' });
    const deadPid = Number(dead.stdout.split(' ')[0]);
    const deadStart = Number(dead.stdout.slice(dead.stdout.lastIndexOf(')') + 2).split(' ')[19]);
    const liveKeeper = spawn('sleep', ['60']);
    strays.push(liveKeeper.pid!);
    const liveStart = await waitFor('live keeper', () => readStat(liveKeeper.pid!)?.startTime);
    const inCgroup = async (name: string): Promise<number> => {
      const path = join(parent, name);
      mkdirSync(path);
      const [file, args] = launcherArgs(path, null, '/usr/bin/setsid', ['sleep', '60']);
      const child = spawn(file, args, { stdio: 'ignore' });
      strays.push(child.pid!);
      await waitFor(`${name} populated`, () => populated(path));
      return child.pid!;
    };
    const orphan = await inCgroup(`job-work_left-k${deadPid}-${deadStart}-1`);
    const ofLive = await inCgroup(`job-work_live-k${liveKeeper.pid}-${liveStart}-1`);
    const swept = await cg.sweep();
    expect(swept).toEqual([{ workId: 'work_left', keeperPid: deadPid, where: join(parent, `job-work_left-k${deadPid}-${deadStart}-1`), processes: 1 }]);
    await waitFor('the orphan to die', () => !isLive(orphan));
    expect(existsSync(join(parent, `job-work_left-k${deadPid}-${deadStart}-1`))).toBe(false);
    expect(isLive(ofLive)).toBe(true);
    expect(populated(join(parent, `job-work_live-k${liveKeeper.pid}-${liveStart}-1`))).toBe(true);
  });

  it('auto picks cgroup here; cgroup mode is refused with the reason where cgroups are not writable', () => {
    const auto = openContainment({ mode: 'auto', workerId, limits: {}, oomScoreAdj: 500 });
    expect(auto.ok && auto.containment.kind).toBe('cgroup');
    const nowhere: CgroupHost = { mountinfo: () => '', selfCgroup: () => '0::/\n', isRoot: () => true };
    const refused = openContainment({ mode: 'cgroup', workerId, limits: {}, oomScoreAdj: 500, host: nowhere });
    expect(!refused.ok && refused.problems[0]).toMatch(/^LEASE_KEEPER_CONTAINMENT \(--containment\) = "cgroup": .*no cgroup v2/);
    const fallback = openContainment({ mode: 'auto', workerId, limits: {}, oomScoreAdj: 500, host: nowhere });
    expect(fallback.ok && fallback.containment.kind).toBe('tag');
  });
});
