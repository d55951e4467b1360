// What a benchmark left in cgroup v2, removed: the floor's cgroups, and a keeper's job cgroups when it was
// ended at once (a second SIGTERM leaves them for the next keeper's start-up sweep).
import { existsSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cgroup2Mount } from '../../src/job/cgroup.js';

/** Kills whatever is left in `<cgroup2 mount>/<name>` and its children, then removes them. */
export function removeCgroupTree(name: string): number {
  const mount = cgroup2Mount(readFileSync('/proc/self/mountinfo', 'utf8'));
  if (mount === null) return 0;
  const dir = join(mount, name);
  if (!existsSync(dir)) return 0;
  const children = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory());
  for (const e of children) {
    try {
      writeFileSync(join(dir, e.name, 'cgroup.kill'), '1');
    } catch {
      // gone already
    }
  }
  for (let i = 0; i < 100; i++) {
    try {
      for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) rmdirSync(join(dir, e.name));
      rmdirSync(dir);
      return children.length;
    } catch {
      // the kernel may still be tearing the last task down
    }
  }
  return children.length;
}

/** The cgroup a keeper running as root makes for its jobs (src/job/cgroup.ts, planLayout). */
export const keeperCgroup = (workerId: string): string => `lease-keeper-${workerId.replace(/[^A-Za-z0-9._:@-]/g, '_')}`;
