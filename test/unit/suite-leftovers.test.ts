/** The suite's own clean-up (test/support/global-setup.ts, cgroups.ts): what a run that died before its teardown left is removed by the next run. */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { removeDeadKeepersCgroupsIn } from '../support/cgroups.js';
import { removeDeadRunsDirs } from '../support/global-setup.js';

describe('removeDeadRunsDirs', () => {
  let dir = '';
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("removes the directory of a run whose pid is dead, keeps a live run's and anything else", () => {
    dir = mkdtempSync(join(tmpdir(), 'lk-leftovers-'));
    const dead = spawnSync('true').pid; // exited and reaped: its pid names no process now (reuse within ms is not expected)
    const deadRun = join(dir, `lk-test-run-${dead}-aB3dE`);
    const liveRun = join(dir, `lk-test-run-${process.pid}-xY9zQ`);
    const other = join(dir, 'lk-test-run-legacy');
    for (const d of [deadRun, liveRun, other]) {
      mkdirSync(d);
      writeFileSync(join(d, 'file'), 'x');
    }
    removeDeadRunsDirs(dir);
    expect(existsSync(deadRun)).toBe(false);
    expect(existsSync(liveRun)).toBe(true);
    expect(existsSync(other)).toBe(true);
  });

  it("a run whose pid is alive is kept, whoever owns it (pid 1)", () => {
    dir = mkdtempSync(join(tmpdir(), 'lk-leftovers-'));
    const init = join(dir, 'lk-test-run-1-q'); // pid 1 always exists, and is not ours unless we run as root
    mkdirSync(init);
    removeDeadRunsDirs(dir);
    expect(existsSync(init)).toBe(true);
  });

  it('a missing temporary directory is no error', () => {
    dir = join(tmpdir(), 'lk-leftovers-none');
    expect(() => removeDeadRunsDirs(dir)).not.toThrow();
  });
});

describe('removeDeadKeepersCgroupsIn (a directory standing in for the cgroup2 mount)', () => {
  let mount = '';
  afterEach(() => rmSync(mount, { recursive: true, force: true }));

  it("removes dead keepers' job cgroups and dead test workers' parents; a live owner's, and what is not the suite's, stay", () => {
    mount = mkdtempSync(join(tmpdir(), 'lk-leftovers-cg-'));
    const dead = spawnSync('true').pid!;
    const deadJob = `job-work_a-k${dead}-5-1`;
    const dirs = {
      deadWorker: `lease-keeper-ut-${dead}-ab12`, // a test worker StrykerJS stopped mid-test
      deadMutWorker: `lease-keeper-ut-mut-${dead}-cd34`,
      deadOomWorker: `lease-keeper-ut-oom-${dead}`,
      liveWorker: `lease-keeper-ut-${process.pid}-ef56`, // this worker's, between its open() and its first job
      integration: 'lease-keeper-it-q1w2e3', // a worker id without its run's pid
      ownRun: `lease-keeper-it-r${process.pid}-a1`, // this run's (the teardown runs in the run's own process)
      deadRun: `lease-keeper-it-r${dead}-b2`,
      liveRun: 'lease-keeper-it-r1-c3', // another run, alive (pid 1): its keepers may still be at work
      operator: 'lease-keeper-prod-host-1',
    };
    for (const d of Object.values(dirs)) mkdirSync(join(mount, d));
    for (const d of [dirs.deadWorker, dirs.liveWorker, dirs.integration, dirs.ownRun, dirs.deadRun, dirs.liveRun, dirs.operator]) mkdirSync(join(mount, d, deadJob));
    mkdirSync(join(mount, dirs.deadWorker, deadJob, 'inner')); // a cgroup the job made below its own
    const removed = removeDeadKeepersCgroupsIn(mount);
    expect(removed.sort()).toEqual(
      [
        join(mount, dirs.deadWorker, deadJob),
        join(mount, dirs.deadWorker),
        join(mount, dirs.deadMutWorker),
        join(mount, dirs.deadOomWorker),
        join(mount, dirs.liveWorker, deadJob),
        join(mount, dirs.integration, deadJob),
        join(mount, dirs.integration),
        join(mount, dirs.ownRun, deadJob),
        join(mount, dirs.ownRun),
        join(mount, dirs.deadRun, deadJob),
        join(mount, dirs.deadRun),
      ].sort(),
    );
    expect(existsSync(join(mount, dirs.liveWorker))).toBe(true);
    expect(existsSync(join(mount, dirs.operator, deadJob))).toBe(true);
    expect(existsSync(join(mount, dirs.liveRun, deadJob))).toBe(true);
  });
});
