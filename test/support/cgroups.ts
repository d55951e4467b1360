/**
 * Job cgroups left by keepers the suite SIGKILLed (their processes are killed by the tests, the empty
 * directories stay): removed at the end of a run, as the next keeper's start-up sweep would. Only the
 * suite's own worker ids (`it-`, `chaos-`, `ut-` prefixes), and only job cgroups whose keeper (pid + start
 * time) is dead, so that a concurrent run's live keepers are never touched. The unit tests' containments
 * (`ut-`) run inside the test worker, whose pid their worker id carries: a test worker that died before its
 * teardown (StrykerJS stops them mid-test) leaves its parent, removed once that pid is dead. Integration
 * keepers' worker ids carry their run's pid (`it-r<pid>-`): another live run's are left alone, since its
 * keepers may be running, or between jobs, or about to sweep what a keeper it SIGKILLed on purpose left.
 * (An empty parent removed under a live keeper would be made again at its next start.)
 */
import { existsSync, readFileSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { cgroup2Mount, killCgroup, parseJobCgroupName, populated } from '../../src/job/cgroup.js';
import { keeperAlive } from '../../src/job/containment.js';
import { pidAlive } from './processes.js';

const SUITE_PARENTS = /^lease-keeper-(it|chaos|ut)-/;
/** `ut-<pid>-…`, `ut-mut-<pid>-…`, `ut-oom-<pid>`: the test worker that made it. */
const UNIT_OWNER = /^lease-keeper-ut-(?:[a-z]+-)?(\d+)(?:-|$)/;
/** `it-r<pid>-…` (integrationWorkerId): the run, vitest's main process, where this teardown runs too. */
const RUN_OWNER = /^lease-keeper-it-r(\d+)-/;

export function removeDeadKeepersCgroups(mountinfo?: string): string[] {
  let mount: string | null;
  try {
    mount = cgroup2Mount(mountinfo ?? readFileSync('/proc/self/mountinfo', 'utf8'));
  } catch {
    return [];
  }
  if (mount === null || process.getuid?.() !== 0 || !existsSync(mount)) return [];
  return removeDeadKeepersCgroupsIn(mount);
}

/** The same below `mount` (a real cgroup2 mount, or a directory standing in for one in tests). */
export function removeDeadKeepersCgroupsIn(mount: string): string[] {
  const removed: string[] = [];
  for (const parent of safeList(mount).filter((n) => SUITE_PARENTS.test(n))) {
    const run = RUN_OWNER.exec(parent);
    // Another live run's keepers: its own teardown cleans up after them, once they are all done.
    if (run !== null && Number(run[1]) !== process.pid && pidAlive(Number(run[1]))) continue;
    const dir = join(mount, parent);
    for (const name of safeList(dir)) {
      const job = parseJobCgroupName(name);
      if (job === null || keeperAlive(job.keeperPid, job.keeperStartTime)) continue;
      const path = join(dir, name);
      if (populated(path)) killCgroup(path);
      if (tryRmdir(path)) removed.push(path);
    }
    const owner = UNIT_OWNER.exec(parent);
    if (owner !== null && pidAlive(Number(owner[1]))) continue;
    if (tryRmdir(dir)) removed.push(dir);
  }
  return removed;
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch {
    return [];
  }
}

/** Removes a cgroup and, first, the cgroups a job made below it (the kernel refuses one with children). */
function tryRmdir(path: string): boolean {
  for (const child of safeList(path)) tryRmdir(join(path, child));
  for (let i = 0; i < 20; i++) {
    try {
      rmdirSync(path);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EBUSY') return false;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    }
  }
  return false;
}
