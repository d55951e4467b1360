/**
 * cgroup containment's decisions against a temporary directory standing in for the cgroup2 mount: where
 * job cgroups go and why cgroups cannot be used (the reasons an operator reads in `config` and in the
 * `auto` fallback line), the job cgroup names the start-up sweep relies on, the limit files, the
 * accounting figures, and the pid lists a stop signals. No root needed.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  CgroupContainment,
  cgroup2Mount,
  cgroupPids,
  jobCgroupName,
  limitFiles,
  neededControllers,
  ownCgroup,
  parseJobCgroupName,
  planLayout,
  populated,
  readAccounting,
  type CgroupHost,
} from '../../src/job/cgroup.js';
import { readStat } from '../../src/job/group-members.js';
import { catchSpawn } from '../support/spawn-error.js';

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lk-mutcg-'));
  writeFileSync(join(dir, 'cgroup.procs'), '');
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const host = (self: string, root = true, mount = dir): CgroupHost => ({
  mountinfo: () => `41 31 0:38 / ${mount} rw,relatime - cgroup2 cgroup2 rw\n`,
  selfCgroup: () => self,
  isRoot: () => root,
});

/** A delegated cgroup `name` under the fake mount, with the files the keeper must be able to write. */
function delegated(name: string, files = ['cgroup.procs', 'cgroup.subtree_control']): string {
  const path = join(dir, name);
  mkdirSync(path, { recursive: true });
  for (const f of files) writeFileSync(join(path, f), '');
  return path;
}

describe('mountinfo and /proc/self/cgroup', () => {
  it('takes the first cgroup2 line, skipping lines it cannot read, and unescapes the mount point', () => {
    const info = [
      'garbage without the separator',
      '30 24 0:5 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory',
      '12 1 0:9 - cgroup2', // no mount point field
      '41 31 0:38 / /first\\011tab\\134back rw - cgroup2 cgroup2 rw',
      '42 31 0:39 / /second rw - cgroup2 cgroup2 rw',
    ].join('\n');
    expect(cgroup2Mount(info)).toBe('/first\ttab\\back');
    expect(cgroup2Mount('')).toBeNull();
    // A file system type that merely starts with "cgroup2" is not it.
    expect(cgroup2Mount('41 31 0:38 / /x rw - cgroup2x none rw')).toBeNull();
  });

  it('reads the unified path from the 0:: line only; an empty path is the root', () => {
    expect(ownCgroup('0::\n')).toBe('/');
    expect(ownCgroup('1:name=systemd:/x\n0::/a/b  \n')).toBe('/a/b');
    expect(ownCgroup('10::/not-unified\n')).toBeNull();
  });
});

describe('planLayout: where job cgroups go, or why cgroups cannot be used', () => {
  it('says when /proc cannot be read', () => {
    const broken: CgroupHost = {
      mountinfo: () => {
        throw new Error('ENOENT: /proc/self/mountinfo');
      },
      selfCgroup: () => '0::/\n',
      isRoot: () => true,
    };
    expect(planLayout(broken, 'w1')).toEqual({ ok: false, reason: 'cannot read /proc (ENOENT: /proc/self/mountinfo)' });
    const noSelf: CgroupHost = {
      ...host('0::/\n'),
      selfCgroup: () => {
        throw new Error('EACCES');
      },
    };
    expect(planLayout(noSelf, 'w1')).toEqual({ ok: false, reason: 'cannot read /proc (EACCES)' });
  });

  it('says when no cgroup2 is mounted, when the keeper is in no v2 cgroup, and when the mount is not cgroup v2', () => {
    expect(planLayout({ ...host('0::/\n'), mountinfo: () => '' }, 'w1')).toEqual({ ok: false, reason: 'no cgroup v2 (cgroup2) file system is mounted' });
    expect(planLayout(host('1:name=systemd:/\n'), 'w1')).toEqual({
      ok: false,
      reason: 'the keeper is in no cgroup v2 (no 0:: line in /proc/self/cgroup)',
    });
    rmSync(join(dir, 'cgroup.procs'));
    expect(planLayout(host('0::/\n'), 'w1')).toEqual({ ok: false, reason: `${dir} is not a cgroup v2 mount` });
  });

  it('uses the mount it is given over the one in mountinfo', () => {
    const other = join(dir, 'elsewhere');
    mkdirSync(other);
    writeFileSync(join(other, 'cgroup.procs'), '');
    expect(planLayout(host('0::/\n'), 'w1', other)).toEqual({
      ok: true,
      layout: { mount: other, parent: join(other, 'lease-keeper-w1'), keeperLeaf: null, above: other },
    });
  });

  it('root layout: refused when not root, with what to do', () => {
    expect(planLayout(host('0::/\n', false), 'w1')).toEqual({
      ok: false,
      reason: `the keeper's cgroup is the root of ${dir} and it is not root: run it as root, or under systemd with Delegate=yes`,
    });
  });

  it('root layout: the worker id becomes a safe directory name', () => {
    const plan = (id: string) => {
      const r = planLayout(host('0::/\n'), id);
      return r.ok ? r.layout.parent : r.reason;
    };
    expect(plan('host-1.a:b@c_d')).toBe(join(dir, 'lease-keeper-host-1.a:b@c_d'));
    expect(plan('a b/c\u00e9')).toBe(join(dir, 'lease-keeper-a_b_c_'));
  });

  it('delegated layout: each file it must write is checked, and the reason names the cgroup and Delegate=yes', () => {
    const reason = (unit: string) => ({ ok: false, reason: `the keeper's cgroup ${unit} is not writable by it (under systemd: Delegate=yes in the unit)` });
    expect(planLayout(host('0::/missing.service\n'), 'w1')).toEqual(reason(join(dir, 'missing.service')));
    const noProcs = delegated('no-procs.service', ['cgroup.subtree_control']);
    expect(planLayout(host('0::/no-procs.service\n'), 'w1')).toEqual(reason(noProcs));
    const noControl = delegated('no-control.service', ['cgroup.procs']);
    expect(planLayout(host('0::/no-control.service\n'), 'w1')).toEqual(reason(noControl));
    const ok = delegated('ok.service');
    expect(planLayout(host('0::/ok.service\n'), 'w1')).toEqual({ ok: true, layout: { mount: dir, parent: ok, keeperLeaf: join(ok, 'keeper'), above: null } });
  });

  it('delegated layout, already in its leaf: the unit above the leaf is what must be writable', () => {
    const unit = delegated('lk.service', ['cgroup.procs']); // no cgroup.subtree_control in the unit
    delegated('lk.service/keeper');
    expect(planLayout(host('0::/lk.service/keeper\n'), 'w1')).toEqual({
      ok: false,
      reason: `the keeper's cgroup ${unit} is not writable by it (under systemd: Delegate=yes in the unit)`,
    });
    // A cgroup merely named like the leaf's prefix is a unit of its own.
    const keeperish = delegated('keepers');
    expect(planLayout(host('0::/keepers\n'), 'w1')).toMatchObject({ ok: true, layout: { parent: keeperish, keeperLeaf: join(keeperish, 'keeper') } });
  });
});

describe('CgroupContainment.plan and open (fake mount)', () => {
  it('a limit whose controller is missing is refused, naming every missing controller and what there is', () => {
    const plan = (limits: object, controllers: string | null) => {
      if (controllers === null) rmSync(join(dir, 'cgroup.controllers'), { force: true });
      else writeFileSync(join(dir, 'cgroup.controllers'), controllers);
      return CgroupContainment.plan({ workerId: 'w1', limits, host: host('0::/\n') });
    };
    expect(plan({ memoryMax: 1 }, 'cpu io\n')).toEqual({ ok: false, reason: `the memory controller is not available in ${dir}/cgroup.controllers (has: cpu io)` });
    expect(plan({ memoryMax: 1, pidsMax: 5, cpuMax: 1 }, 'io\n')).toEqual({
      ok: false,
      reason: `the memory, pids, cpu controllers are not available in ${dir}/cgroup.controllers (has: io)`,
    });
    expect(plan({ pidsMax: 5 }, null)).toEqual({ ok: false, reason: `the pids controller is not available in ${dir}/cgroup.controllers (has: none)` });
    expect(plan({ pidsMax: 5, cpuMax: 0.5 }, 'cpu pids\n')).toMatchObject({ ok: true });
    // No limits: no controller needed, whatever the file says.
    expect(plan({}, null)).toMatchObject({ ok: true });
  });

  it('in a delegated cgroup the controllers come from the unit itself', () => {
    const unit = delegated('lk.service');
    writeFileSync(join(dir, 'cgroup.controllers'), 'memory pids cpu\n');
    writeFileSync(join(unit, 'cgroup.controllers'), 'pids\n');
    const r = CgroupContainment.plan({ workerId: 'w1', limits: { memoryMax: 1 }, host: host('0::/lk.service\n') });
    expect(r).toEqual({ ok: false, reason: `the memory controller is not available in ${unit}/cgroup.controllers (has: pids)` });
  });

  it('open in a delegated cgroup moves the keeper into its leaf and enables the controllers in the unit only', () => {
    const unit = delegated('lk.service');
    writeFileSync(join(unit, 'cgroup.controllers'), 'memory pids\n');
    writeFileSync(join(dir, 'cgroup.subtree_control'), 'untouched');
    const opened = CgroupContainment.open({ workerId: 'w1', limits: { pidsMax: 10 }, host: host('0::/lk.service\n') });
    expect(opened.ok).toBe(true);
    expect(readFileSync(join(unit, 'keeper', 'cgroup.procs'), 'utf8')).toBe(String(process.pid));
    expect(readFileSync(join(unit, 'cgroup.subtree_control'), 'utf8')).toBe('+pids');
    expect(readFileSync(join(dir, 'cgroup.subtree_control'), 'utf8')).toBe('untouched');
    expect(opened.ok && opened.containment.detail).toEqual({ cgroup_parent: unit });
    expect(opened.ok && opened.containment.kind).toBe('cgroup');
  });

  it('open in a delegated cgroup whose leaf is left from an earlier keeper: moves into it all the same', () => {
    const unit = delegated('lk.service');
    delegated('lk.service/keeper', []);
    const opened = CgroupContainment.open({ workerId: 'w1', host: host('0::/lk.service\n') });
    expect(opened.ok).toBe(true);
    expect(readFileSync(join(unit, 'keeper', 'cgroup.procs'), 'utf8')).toBe(String(process.pid));
  });

  it('open without limits enables no controller', () => {
    writeFileSync(join(dir, 'cgroup.subtree_control'), 'untouched');
    const opened = CgroupContainment.open({ workerId: 'w1', host: host('0::/\n') });
    expect(opened.ok).toBe(true);
    expect(readFileSync(join(dir, 'cgroup.subtree_control'), 'utf8')).toBe('untouched');
    expect(existsSync(join(dir, 'lease-keeper-w1', 'cgroup.subtree_control'))).toBe(false);
  });

  it('open says where it could not set up, and why', () => {
    writeFileSync(join(dir, 'lease-keeper-w1'), 'a file where the parent should be');
    const opened = CgroupContainment.open({ workerId: 'w1', host: host('0::/\n') });
    expect(opened.ok).toBe(false);
    expect(!opened.ok && opened.reason).toMatch(new RegExp(`^cannot set up job cgroups under ${join(dir, 'lease-keeper-w1')}: EEXIST`));
    // A plan that fails is returned as it is, before anything is created.
    const refused = CgroupContainment.open({ workerId: 'w2', host: host('0::/\n', false) });
    expect(refused).toEqual(planLayout(host('0::/\n', false), 'w2'));
  });

  it('close removes the parent it created in the root layout, never a delegated unit', () => {
    const opened = CgroupContainment.open({ workerId: 'w1', host: host('0::/\n') });
    if (!opened.ok) throw new Error(opened.reason);
    opened.containment.close();
    expect(() => mkdirSync(join(dir, 'lease-keeper-w1'))).not.toThrow(); // it was gone
    const unit = delegated('lk.service');
    const inUnit = CgroupContainment.open({ workerId: 'w1', host: host('0::/lk.service\n') });
    if (!inUnit.ok) throw new Error(inUnit.reason);
    rmSync(join(unit, 'keeper'), { recursive: true });
    for (const f of ['cgroup.procs', 'cgroup.subtree_control']) rmSync(join(unit, f));
    inUnit.containment.close(); // the unit is empty now, and still not ours to remove
    expect(() => mkdirSync(unit)).toThrow(/EEXIST/);
  });
});

describe('job cgroup names', () => {
  const keeper = { workerId: 'w', pid: 4242, startTime: 987654 };

  it('carry the work id (made safe, cut at 160 characters), the keeper pid, its start time and the run number', () => {
    expect(jobCgroupName(undefined, keeper, 12)).toBe('job-run-k4242-987654-12');
    expect(jobCgroupName('a/b c:d@e.f-g_h', keeper, 1)).toBe('job-a_b_c_d_e.f-g_h-k4242-987654-1');
    expect(jobCgroupName('x'.repeat(300), keeper, 1)).toBe(`job-${'x'.repeat(160)}-k4242-987654-1`);
  });

  it('parse back to work id, keeper pid and start time; anything else is not a job cgroup', () => {
    expect(parseJobCgroupName(jobCgroupName('work-k1-2-3', keeper, 17))).toEqual({ workId: 'work-k1-2-3', keeperPid: 4242, keeperStartTime: 987654 });
    expect(parseJobCgroupName('job-ab-k12-345-67')).toEqual({ workId: 'ab', keeperPid: 12, keeperStartTime: 345 });
    for (const name of ['keeper', 'lease-keeper-w1', 'job-ab-k12-345', 'job--k12-345-6', 'xjob-ab-k12-345-6', 'job-ab-k12-345-6x', 'job-ab-kx-345-6', 'job-ab-k12-3a5-6']) {
      expect(parseJobCgroupName(name), name).toBeNull();
    }
  });
});

describe('limits and accounting files', () => {
  it('writes each limit alone, in the kernel\'s units (cpu.max: quota and period in microseconds, at least 1 ms)', () => {
    expect(limitFiles({})).toEqual([]);
    expect(limitFiles({ memoryMax: 536870912 })).toEqual([['memory.max', '536870912']]);
    expect(limitFiles({ pidsMax: 64 })).toEqual([['pids.max', '64']]);
    expect(limitFiles({ cpuMax: 1.234567 })).toEqual([['cpu.max', '123457 100000']]);
    expect(limitFiles({ cpuMax: 0.01 })).toEqual([['cpu.max', '1000 100000']]);
    expect(neededControllers({})).toEqual([]);
    expect(neededControllers({ cpuMax: 1, memoryMax: 1 })).toEqual(['memory', 'cpu']);
    expect(neededControllers({ pidsMax: 1 })).toEqual(['pids']);
  });

  it('reads each figure on its own; absent, malformed or zero figures are null or false', () => {
    expect(readAccounting(dir)).toEqual({ cpuSeconds: null, memoryPeakBytes: null, oomKilled: false });
    writeFileSync(join(dir, 'cpu.stat'), 'user_usec 5\nusage_usec 1500\nsystem_usec 7\n');
    writeFileSync(join(dir, 'memory.peak'), 'max\n');
    writeFileSync(join(dir, 'memory.events'), 'oom 2\noom_kill 0\n');
    expect(readAccounting(dir)).toEqual({ cpuSeconds: 0.0015, memoryPeakBytes: null, oomKilled: false });
    writeFileSync(join(dir, 'cpu.stat'), 'xusage_usec 9\n');
    writeFileSync(join(dir, 'memory.peak'), '4096\n');
    writeFileSync(join(dir, 'memory.events'), 'oom_kill 12\n');
    expect(readAccounting(dir)).toEqual({ cpuSeconds: null, memoryPeakBytes: 4096, oomKilled: true });
    writeFileSync(join(dir, 'memory.peak'), 'x12\n');
    expect(readAccounting(dir).memoryPeakBytes).toBeNull();
    writeFileSync(join(dir, 'memory.peak'), '12x\n');
    writeFileSync(join(dir, 'memory.events'), 'oom_group_kill 1\n');
    expect(readAccounting(dir)).toMatchObject({ memoryPeakBytes: null, oomKilled: false });
  });

  it('an unreadable file counts as absent', () => {
    mkdirSync(join(dir, 'cpu.stat')); // EISDIR on read
    expect(readAccounting(dir).cpuSeconds).toBeNull();
  });
});

describe('the pids a stop reaches, and populated', () => {
  it('lists every pid of the cgroup and of every cgroup below it', () => {
    writeFileSync(join(dir, 'cgroup.procs'), '11\n12\n');
    mkdirSync(join(dir, 'a', 'b'), { recursive: true });
    writeFileSync(join(dir, 'a', 'cgroup.procs'), '21\n');
    writeFileSync(join(dir, 'a', 'b', 'cgroup.procs'), '31\n32\n');
    writeFileSync(join(dir, 'a', 'not-a-cgroup'), '99\n');
    expect(cgroupPids(dir).sort()).toEqual([11, 12, 21, 31, 32]);
    writeFileSync(join(dir, 'cgroup.procs'), '');
    expect(cgroupPids(join(dir, 'a', 'b'))).toEqual([31, 32]);
    rmSync(join(dir, 'a'), { recursive: true });
    expect(cgroupPids(dir)).toEqual([]); // an empty cgroup
    expect(cgroupPids(join(dir, 'gone'))).toEqual([]);
  });

  it('populated reads `populated 1` from cgroup.events; anything else, or no file, is empty', () => {
    expect(populated(dir)).toBe(false);
    writeFileSync(join(dir, 'cgroup.events'), 'populated 1\nfrozen 0\n');
    expect(populated(dir)).toBe(true);
    writeFileSync(join(dir, 'cgroup.events'), 'populated 0\nfrozen 1\n');
    expect(populated(dir)).toBe(false);
  });
});

describe('starting a job and the sweep (fake mount: files only, the job itself runs uncontained)', () => {
  const open = (limits = {}) => {
    writeFileSync(join(dir, 'cgroup.controllers'), 'memory pids cpu\n');
    const opened = CgroupContainment.open({ workerId: 'w1', limits, host: host('0::/\n') });
    if (!opened.ok) throw new Error(opened.reason);
    return opened.containment;
  };
  const me = () => readStat(process.pid)!.startTime;

  it('each job gets its own cgroup, named after the run, with the limits written as documented, entered by the launcher', async () => {
    const cg = open({ memoryMax: 268435456, pidsMax: 50, cpuMax: 0.5 });
    const job = cg.start({ command: ['/bin/true'], env: process.env, name: 'work_lim' });
    const jobDir = join(dir, 'lease-keeper-w1', `job-work_lim-k${process.pid}-${me()}-1`);
    expect(job.where).toEqual({ pgid: job.pid, cgroup: jobDir });
    expect(job.accounting()).toBeNull();
    await job.empty;
    expect(await job.exited).toEqual({ code: 0, signal: null });
    expect(readFileSync(join(jobDir, 'memory.max'), 'utf8')).toBe('268435456');
    expect(readFileSync(join(jobDir, 'pids.max'), 'utf8')).toBe('50');
    expect(readFileSync(join(jobDir, 'cpu.max'), 'utf8')).toBe('50000 100000');
    expect(readFileSync(join(jobDir, 'cgroup.procs'), 'utf8')).toBe('0'); // the launcher's "move myself"
    // No cgroup.events here: empty at once, and what it used reads as unknown.
    expect(job.accounting()).toEqual({ cpuSeconds: null, memoryPeakBytes: null, oomKilled: false });
    expect(job.isAlive()).toBe(false);
    const second = cg.start({ command: ['/bin/true'], env: process.env });
    expect(second.where.cgroup).toBe(join(dir, 'lease-keeper-w1', `job-run-k${process.pid}-${me()}-2`));
    await second.empty;
  });

  it('a job that cannot start: 127 for a missing command, with its cgroup removed again; 126 when the cgroup cannot be made', async () => {
    const cg = open();
    const parent = join(dir, 'lease-keeper-w1');
    expect(catchSpawn(() => cg.start({ command: ['/nonexistent/job'], env: process.env, name: 'work_x' }))).toMatchObject({ name: 'SpawnError', code: 127 });
    expect(readdirSync(parent)).toEqual([]);
    rmSync(parent, { recursive: true });
    writeFileSync(parent, 'a file where the parent should be');
    const err = catchSpawn(() => cg.start({ command: ['/bin/true'], env: process.env, name: 'work_y' }));
    expect(err).toMatchObject({ name: 'SpawnError', code: 126 });
    expect(err.message).toMatch(new RegExp(`^cannot create the job's cgroup ${parent}/job-work_y-k\\d+-\\d+-2: ENOTDIR`));
  });

  it('root layout: a parent removed under a live keeper is made again, controllers enabled, and the job runs', async () => {
    const cg = open({ pidsMax: 50 });
    const parent = join(dir, 'lease-keeper-w1');
    // What another keeper's close() does to the empty parent (a real rmdir: job-mut-cgroup-real.test.ts).
    rmSync(parent, { recursive: true });
    writeFileSync(join(dir, 'cgroup.subtree_control'), '');
    const job = cg.start({ command: ['/bin/true'], env: process.env, name: 'work_again' });
    const jobDir = join(parent, `job-work_again-k${process.pid}-${me()}-1`);
    expect(job.where.cgroup).toBe(jobDir);
    expect(await job.exited).toEqual({ code: 0, signal: null });
    await job.empty;
    expect(readFileSync(join(dir, 'cgroup.subtree_control'), 'utf8')).toBe('+pids');
    expect(readFileSync(join(parent, 'cgroup.subtree_control'), 'utf8')).toBe('+pids');
    expect(readFileSync(join(jobDir, 'pids.max'), 'utf8')).toBe('50');
  });

  it('delegated layout: a unit cgroup that is gone is not made again; the job cannot start (126)', () => {
    const unit = delegated('lk.service');
    const opened = CgroupContainment.open({ workerId: 'w1', host: host('0::/lk.service\n') });
    if (!opened.ok) throw new Error(opened.reason);
    rmSync(unit, { recursive: true });
    const err = catchSpawn(() => opened.containment.start({ command: ['/bin/true'], env: process.env, name: 'work_z' }));
    expect(err).toMatchObject({ name: 'SpawnError', code: 126 });
    expect(err.message).toMatch(new RegExp(`^cannot create the job's cgroup ${unit}/job-work_z-k\\d+-\\d+-1: ENOENT`));
    expect(existsSync(unit)).toBe(false);
  });

  it('the sweep removes a dead keeper\'s empty job cgroups, and leaves this keeper\'s and anything else alone', async () => {
    const cg = open();
    const parent = join(dir, 'lease-keeper-w1');
    for (const name of ['job-work_old-k999999999-5-3', `job-mine-k${process.pid}-${me()}-1`, 'keeper', 'job-not-a-job']) mkdirSync(join(parent, name));
    expect(await cg.sweep()).toEqual([{ workId: 'work_old', keeperPid: 999999999, where: join(parent, 'job-work_old-k999999999-5-3'), processes: 0 }]);
    expect(readdirSync(parent).sort()).toEqual([`job-mine-k${process.pid}-${me()}-1`, 'job-not-a-job', 'keeper']);
    rmSync(parent, { recursive: true });
    expect(await cg.sweep()).toEqual([]);
  });
});
