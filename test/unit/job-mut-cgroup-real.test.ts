/**
 * A job in a real cgroup v2 (root and a writable cgroup2 mount; CI has both, LEASE_KEEPER_TEST_STRICT=1):
 * the stop signal reaches every member, nested cgroups included, SIGKILL is cgroup.kill, the job is over
 * only at `populated 0` and its cgroup (and what it created below) is removed; the freeze fallback for
 * kernels without cgroup.kill. Every process a test starts is killed in teardown, every cgroup removed.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CgroupContainment, cgroupPids, freezeAndKill, killCgroup, launcherArgs, populated } from '../../src/job/cgroup.js';
import type { ContainedJob } from '../../src/job/containment.js';
import { readStat } from '../../src/job/group-members.js';
import { ownOomScoreAdj } from '../../src/job/oom-score.js';
import { waitUntil } from '../../src/job/run-tag.js';
import { cgroup2MountPoint, cgroupMissing, prerequisite } from '../support/prerequisites.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

let dir: string;
let jobs: ContainedJob[] = [];
let children: ChildProcess[] = [];
let pids: number[] = [];
let cgroups: string[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lk-mutreal-'));
});

afterEach(async () => {
  for (const job of jobs) {
    job.kill();
    await Promise.race([job.empty, sleep(5_000)]);
  }
  for (const pid of [...pids, ...children.map((c) => c.pid!)]) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  for (const cg of cgroups.reverse()) removeTree(cg);
  jobs = [];
  children = [];
  pids = [];
  cgroups = [];
  rmSync(dir, { recursive: true, force: true });
});

/** Kills what is left in a cgroup subtree a test created and removes it; never the mount's root. */
function removeTree(path: string): void {
  if (!existsSync(path)) return;
  if (path === cgroup2MountPoint()) throw new Error(`refusing to kill and remove the cgroup root ${path}`);
  try {
    writeFileSync(join(path, 'cgroup.kill'), '1');
  } catch {
    // not a cgroup with cgroup.kill
  }
  for (const e of readdirSync(path, { withFileTypes: true })) if (e.isDirectory()) removeTree(join(path, e.name));
  for (let i = 0; i < 250; i++) {
    try {
      rmdirSync(path);
      return;
    } catch {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
}

function isLive(pid: number): boolean {
  const st = readStat(pid);
  return st !== null && st.state !== 'Z';
}

async function waitFor(what: string, probe: () => boolean, timeoutMs = 5_000): Promise<void> {
  if (!(await waitUntil(probe, timeoutMs, 10))) throw new Error(`timed out waiting for ${what}`);
}

async function pidFrom(file: string): Promise<number> {
  await waitFor(`pid file ${file}`, () => existsSync(file) && readFileSync(file, 'utf8').endsWith('\n'));
  const pid = Number(readFileSync(file, 'utf8').trim());
  pids.push(pid);
  return pid;
}

describe('the launcher\'s own complaint', () => {
  it('names the launcher and the cgroup, and says the job was not started', () => {
    const gone = join(dir, 'no-such-cgroup');
    const [file, args] = launcherArgs(gone, null, '/bin/true', []);
    const r = spawnSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(r.status).toBe(126);
    // The shell's own line first (why the write failed), under the launcher's name, then ours.
    const lines = r.stderr.trim().split('\n');
    expect(lines[0]).toMatch(/^lease-keeper-launch: /);
    expect(lines[0]).toContain(`${gone}/cgroup.procs`);
    expect(lines.at(-1)).toBe(`lease-keeper: the job could not enter its cgroup ${gone}; it was not started`);
  });
});

describe('killCgroup without cgroup.kill (a fake cgroup: files only)', () => {
  it('falls back to freeze, SIGKILL each listed process, thaw', async () => {
    const a = spawn('sleep', ['60'], { stdio: 'ignore' });
    const b = spawn('sleep', ['60'], { stdio: 'ignore' });
    children.push(a, b);
    writeFileSync(join(dir, 'cgroup.procs'), `${a.pid}\n`);
    mkdirSync(join(dir, 'child'));
    writeFileSync(join(dir, 'child', 'cgroup.procs'), `${b.pid}\n`);
    // Writing cgroup.kill fails with ENOENT although the cgroup is there, as on Linux < 5.14.
    symlinkSync(join(dir, 'no', 'such', 'file'), join(dir, 'cgroup.kill'));
    killCgroup(dir);
    await waitFor('both to die', () => a.signalCode !== null && b.signalCode !== null);
    expect([a.signalCode, b.signalCode]).toEqual(['SIGKILL', 'SIGKILL']);
    expect(readFileSync(join(dir, 'cgroup.freeze'), 'utf8')).toBe('0');
  });

  it('with cgroup.kill there, that is all: no process is signalled one by one', async () => {
    const a = spawn('sleep', ['60'], { stdio: 'ignore' });
    children.push(a);
    await waitFor('it to run', () => readStat(a.pid!) !== null);
    writeFileSync(join(dir, 'cgroup.procs'), `${a.pid}\n`);
    killCgroup(dir); // a fake cgroup: the write lands in a plain file and kills nothing
    expect(readFileSync(join(dir, 'cgroup.kill'), 'utf8')).toBe('1');
    await sleep(100);
    expect(isLive(a.pid!)).toBe(true);
    expect(existsSync(join(dir, 'cgroup.freeze'))).toBe(false);
  });

  it('without a freezer either, it still SIGKILLs each; a cgroup that is gone is nothing to do', async () => {
    const a = spawn('sleep', ['60'], { stdio: 'ignore' });
    children.push(a);
    writeFileSync(join(dir, 'cgroup.procs'), `${a.pid}\n`);
    mkdirSync(join(dir, 'cgroup.freeze')); // cannot be written
    freezeAndKill(dir);
    await waitFor('it to die', () => a.signalCode !== null);
    expect(a.signalCode).toBe('SIGKILL');
    expect(() => killCgroup(join(dir, 'gone'))).not.toThrow();
    expect(existsSync(join(dir, 'gone'))).toBe(false);
  });
});

describe.runIf(prerequisite('a writable cgroup v2 with cgroup.kill (root)', cgroupMissing()))('a job in a real cgroup', () => {
  let cg: CgroupContainment;
  let parent: string;
  let workerId: string;

  beforeEach(() => {
    workerId = `ut-mut-${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
    const mount = cgroup2MountPoint()!;
    parent = join(mount, `lease-keeper-${workerId}`);
    // The root layout, checked before open() (which would move this process otherwise); the cleanup path
    // is named here, never taken from the code under test.
    expect(CgroupContainment.plan({ workerId })).toEqual({ ok: true, layout: { mount, parent, keeperLeaf: null, above: mount } });
    cgroups.push(parent);
    const opened = CgroupContainment.open({ workerId });
    if (!opened.ok) throw new Error(opened.reason);
    cg = opened.containment;
  });

  const run = (script: string, name = 'work_real'): ContainedJob => {
    // stdin from /dev/null: bash started with a socket as stdin (Stryker's test workers have one) reads ~/.bashrc.
    const job = cg.start({ command: ['/bin/bash', '-c', script], env: process.env, name, stdio: ['ignore', 'inherit', 'inherit'] });
    jobs.push(job);
    return job;
  };

  it('the stop signal reaches a member the job moved into a cgroup of its own below the job\'s; all of it is removed at the end', async () => {
    const got = join(dir, 'got');
    const ready = join(dir, 'ready');
    const sub = join(dir, 'sub-cgroup');
    const job = run(
      `cg=${cgroup2MountPoint()}$(sed -n 's/^0:://p' /proc/self/cgroup); mkdir $cg/inner; echo $cg/inner > ${sub}; ` +
        `setsid bash -c 'echo $$ > '$cg'/inner/cgroup.procs; trap "echo inner >> ${got}; exit 0" TERM; echo $$ > ${ready}; while :; do sleep 0.05; done' & ` +
        'while :; do sleep 0.05; done',
    );
    const inner = await pidFrom(ready);
    const subPath = readFileSync(sub, 'utf8').trim();
    expect(subPath).toBe(`${String(job.where.cgroup)}/inner`);
    expect(cgroupPids(subPath)).toContain(inner);
    expect(job.interrupt('SIGTERM')).toBe(true);
    await waitFor('the inner member to handle SIGTERM', () => existsSync(got));
    expect(readFileSync(got, 'utf8')).toBe('inner\n');
    job.kill();
    await job.empty;
    expect(existsSync(subPath)).toBe(false);
    expect(existsSync(String(job.where.cgroup))).toBe(false);
    expect(readdirSync(parent).filter((n) => n.startsWith('job-'))).toEqual([]);
  });

  it('after the leader exited: the members of its group get the signal by pid, once; nothing left means false', async () => {
    const got = join(dir, 'got');
    const ready = join(dir, 'ready');
    const job = run(`bash -c 'trap "echo child >> ${got}; exit 0" TERM; echo $$ > ${ready}; while :; do sleep 0.05; done' & while [ ! -s ${ready} ]; do sleep 0.01; done; exit 3`);
    const member = await pidFrom(ready);
    expect(await job.exited).toEqual({ code: 3, signal: null });
    expect(readStat(member)!.pgrp).toBe(job.pid); // still in the leader's group, which no group signal reaches now
    expect(job.isAlive()).toBe(true);
    expect(job.interrupt('SIGTERM')).toBe(true);
    expect(job.lastSignal?.signal).toBe('SIGTERM');
    await job.empty;
    expect(readFileSync(got, 'utf8')).toBe('child\n');
    expect(job.isAlive()).toBe(false);
    expect(job.interrupt('SIGTERM')).toBe(false);
    expect(job.kill()).toBe(false);
    expect(job.lastSignal?.signal).toBe('SIGTERM');
  });

  it('kill: SIGKILL to the whole job at once, stamped; the job is over only when its cgroup is empty', async () => {
    const pidFile = join(dir, 'daemon');
    const job = run(`setsid bash -c 'trap "" TERM; echo $$ > ${pidFile}; exec sleep 60' & sleep 60`);
    const daemon = await pidFrom(pidFile);
    const before = performance.now();
    expect(job.kill()).toBe(true);
    expect(job.lastSignal?.signal).toBe('SIGKILL');
    expect(job.lastSignal!.atMs).toBeGreaterThanOrEqual(before);
    expect(await job.exited).toEqual({ code: null, signal: 'SIGKILL' });
    await job.empty;
    expect(isLive(daemon)).toBe(false);
    expect(populated(String(job.where.cgroup))).toBe(false);
    const usage = job.accounting();
    expect(usage).not.toBeNull();
    expect(typeof usage!.cpuSeconds).toBe('number');
    expect(usage!.oomKilled).toBe(false);
  });

  it('kill right after the start ends the job, also before the launcher has entered the cgroup', async () => {
    // A slow exec in front of the launcher holds the leader outside its cgroup for 0.3 s, as load does.
    const slow = CgroupContainment.open({
      workerId,
      launch: { spawn: (file, args, options) => spawn('/bin/sh', ['-c', 'sleep 0.3; exec "$0" "$@"', file, ...args], options) },
    });
    if (!slow.ok) throw new Error(slow.reason);
    const job = slow.containment.start({ command: ['/bin/sleep', '30'], env: process.env, name: 'work_early' });
    jobs.push(job);
    expect(populated(String(job.where.cgroup))).toBe(false); // not in there yet
    expect(job.isAlive()).toBe(true);
    expect(job.kill()).toBe(true);
    expect(await Promise.race([job.exited, sleep(5_000).then(() => 'still running')])).toEqual({ code: null, signal: 'SIGKILL' });
    await job.empty;
    expect(existsSync(String(job.where.cgroup))).toBe(false);
  });

  it('interrupt of a job that is one process: delivered by the group signal, stamped', async () => {
    const ready = join(dir, 'ready');
    const job = run(`trap 'exit 0' TERM; touch ${ready}; while :; do sleep 0.05; done`);
    await waitFor('the trap', () => existsSync(ready));
    const before = performance.now();
    expect(job.interrupt('SIGTERM')).toBe(true);
    expect(job.lastSignal?.signal).toBe('SIGTERM');
    expect(job.lastSignal!.atMs).toBeGreaterThanOrEqual(before);
    expect(await job.exited).toEqual({ code: 0, signal: null });
  });

  it('leaves no timer behind once the job is over (the poll, the kill deadline)', async () => {
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const pidFile = join(dir, 'daemon');
    const before = timers();
    // The leader exits at once, a member stays: the end is awaited by watch and poll.
    const job = run(`setsid bash -c 'trap "exit 0" TERM; echo $$ > ${pidFile}; while :; do sleep 0.05; done' & while [ ! -s ${pidFile} ]; do sleep 0.01; done`);
    await pidFrom(pidFile);
    await job.exited;
    await job.stop({ signal: 'SIGTERM', graceMs: 60_000 });
    expect(timers()).toBeLessThanOrEqual(before);
    // A kill time for a job that is over (a fence after its end) arms nothing.
    job.killAt(performance.now() + 60_000);
    job.escalate();
    expect(timers()).toBeLessThanOrEqual(before);
  });

  it('the sweep ends a dead keeper\'s populated job cgroup and returns once it is removed', async () => {
    const name = 'job-work_dead-k999999999-7-1';
    const path = join(parent, name);
    mkdirSync(path);
    const [file, args] = launcherArgs(path, null, '/bin/sh', ['-c', 'sleep 60 & exec sleep 60']);
    const child = spawn(file, args, { stdio: 'ignore' });
    children.push(child);
    await waitFor('two processes in it', () => cgroupPids(path).length === 2);
    const t0 = performance.now();
    expect(await cg.sweep()).toEqual([{ workId: 'work_dead', keeperPid: 999999999, where: path, processes: 2 }]);
    expect(performance.now() - t0).toBeLessThan(3_000);
    expect(existsSync(path)).toBe(false);
  });

  it('escalate: SIGKILL now, whatever grace the stop gave', async () => {
    const job = run(`trap '' TERM; while :; do sleep 0.05; done`);
    await sleep(100);
    const stopped = job.stop({ signal: 'SIGTERM', graceMs: 60_000 });
    job.escalate();
    expect(await Promise.race([stopped, sleep(5_000).then(() => 'still running')])).toEqual({ code: null, signal: 'SIGKILL' });
    expect(job.lastSignal?.signal).toBe('SIGKILL');
  });

  it('a second stop returns the same promise, sends no second stop signal, and a shorter grace brings the SIGKILL forward', async () => {
    const got = join(dir, 'got');
    const ready = join(dir, 'ready');
    const job = run(`trap 'echo term >> ${got}' TERM; touch ${ready}; while :; do sleep 0.05; done`);
    await waitFor('the trap', () => existsSync(ready));
    const first = job.stop({ signal: 'SIGTERM', graceMs: 60_000 });
    await waitFor('the SIGTERM to be handled', () => existsSync(got));
    const t0 = performance.now();
    const second = job.stop({ signal: 'SIGTERM', graceMs: 100 });
    expect(second).toBe(first);
    expect(await Promise.race([second, sleep(10_000).then(() => 'not killed')])).toEqual({ code: null, signal: 'SIGKILL' });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(90);
    expect(readFileSync(got, 'utf8')).toBe('term\n');
    // A later, longer grace changes nothing.
    expect(job.stop({ signal: 'SIGTERM', graceMs: 60_000 })).toBe(first);
  });

  it('a kill time set after the leader exited still ends a member that ignores SIGTERM', async () => {
    const pidFile = join(dir, 'daemon');
    const job = run(`setsid bash -c 'trap "" TERM; echo $$ > ${pidFile}; exec sleep 60' & while [ ! -s ${pidFile} ]; do sleep 0.01; done`);
    const daemon = await pidFrom(pidFile);
    await job.exited;
    job.killAt(performance.now() + 50);
    await Promise.race([job.empty, sleep(5_000)]);
    expect(isLive(daemon)).toBe(false);
    expect(job.isAlive()).toBe(false);
  });

  it('without an OOM score the job keeps the keeper\'s; each run is numbered in its cgroup name and tag', async () => {
    const out = join(dir, 'out');
    const first = run(`cat /proc/self/oom_score_adj > ${out}; echo "$LEASE_KEEPER_RUN_ID" >> ${out}`, 'work_n');
    await first.empty;
    const [oom, runId] = readFileSync(out, 'utf8').trim().split('\n');
    expect(Number(oom)).toBe(ownOomScoreAdj());
    const start = readStat(process.pid)!.startTime;
    expect(runId).toBe(`${workerId}/${process.pid}/${start}/1`);
    expect(first.where.cgroup).toBe(join(parent, `job-work_n-k${process.pid}-${start}-1`));
    const second = run('true', 'work_n');
    expect(second.where.cgroup).toBe(join(parent, `job-work_n-k${process.pid}-${start}-2`));
    await second.empty;
  });

  it('the launcher puts the job into the cgroup before it runs: what it forks is in there too', async () => {
    const jobDir = join(parent, 'by-hand');
    mkdirSync(jobDir);
    const [file, args] = launcherArgs(jobDir, null, '/bin/sh', ['-c', 'sleep 60 & exec sleep 60']);
    const child = spawn(file, args, { stdio: 'ignore' });
    children.push(child);
    await waitFor('two processes in the cgroup', () => cgroupPids(jobDir).length === 2);
    expect(cgroupPids(jobDir)).toContain(child.pid);
    killCgroup(jobDir);
    await waitFor('the cgroup to empty', () => !populated(jobDir));
    expect(child.signalCode ?? (await new Promise((r) => child.once('exit', (_c, s) => r(s))))).toBe('SIGKILL');
  });

  it('close keeps the parent while a job cgroup is in it, and removes it once empty', async () => {
    const job = run('sleep 60');
    cg.close();
    expect(existsSync(parent)).toBe(true);
    job.kill();
    await job.empty;
    cg.close();
    expect(existsSync(parent)).toBe(false);
  });

  it('two keepers of one worker id (one per host by default): one closing between jobs does not fail the other\'s next job', async () => {
    const other = CgroupContainment.open({ workerId });
    if (!other.ok) throw new Error(other.reason);
    other.containment.close(); // no job of either in the parent: rmdir succeeds
    expect(existsSync(parent)).toBe(false);
    const job = run('exit 7', 'work_after');
    expect(String(job.where.cgroup).startsWith(`${parent}/job-work_after-`)).toBe(true);
    expect(await job.exited).toEqual({ code: 7, signal: null });
    await job.empty;
    expect(existsSync(String(job.where.cgroup))).toBe(false);
  });
});
