/**
 * Job cgroups left by keepers the suite SIGKILLed (their processes are killed by the tests, the empty
 * directories stay): removed at the end of a run, as the next keeper's start-up sweep would. Only the
 * suite's own worker ids (`it-`, `chaos-` prefixes), and only job cgroups whose keeper (pid + start
 * time) is dead, so that a concurrent run's live keepers are never touched.
 */
import { existsSync, readFileSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { cgroup2Mount, killCgroup, parseJobCgroupName, populated } from '../../src/job/cgroup.js';
import { keeperAlive } from '../../src/job/containment.js';

const SUITE_PARENTS = /^lease-keeper-(it|chaos)-/;

export function removeDeadKeepersCgroups(mountinfo?: string): string[] {
  let mount: string | null;
  try {
    mount = cgroup2Mount(mountinfo ?? readFileSync('/proc/self/mountinfo', 'utf8'));
  } catch {
    return [];
  }
  if (mount === null || process.getuid?.() !== 0 || !existsSync(mount)) return [];
  const removed: string[] = [];
  for (const parent of safeList(mount).filter((n) => SUITE_PARENTS.test(n))) {
    const dir = join(mount, parent);
    for (const name of safeList(dir)) {
      const job = parseJobCgroupName(name);
      if (job === null || keeperAlive(job.keeperPid, job.keeperStartTime)) continue;
      const path = join(dir, name);
      if (populated(path)) killCgroup(path);
      if (tryRmdir(path)) removed.push(path);
    }
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

function tryRmdir(path: string): boolean {
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
