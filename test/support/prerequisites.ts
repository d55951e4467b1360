/**
 * Tests that need something this machine may lack (root, a writable cgroup v2, the systemd sandbox, perl,
 * setpriv) skip elsewhere with the reason in their name. In CI a skip would hide a broken feature, so
 * `.ci/run` sets LEASE_KEEPER_TEST_STRICT=1 and a missing prerequisite becomes a failing test instead.
 */
import { accessSync, constants, existsSync, mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { it } from 'vitest';

/** True when the suite must not skip for a missing prerequisite (set by `.ci/run`). */
export function strictPrerequisites(): boolean {
  return process.env.LEASE_KEEPER_TEST_STRICT === '1';
}

/**
 * Call at module or describe level with `missing` = null when the prerequisite is there, else the reason
 * it is not. Returns true when the tests that need it should run; otherwise registers one test that is
 * skipped (reason in its name) or, under LEASE_KEEPER_TEST_STRICT=1, fails with the reason.
 * Use: `describe.runIf(prerequisite('writable cgroup v2', cgroupMissing()))('...', () => ...)`.
 */
export function prerequisite(name: string, missing: string | null): boolean {
  if (missing === null) return true;
  if (strictPrerequisites()) {
    it(`prerequisite: ${name}`, () => {
      throw new Error(`${name} is required (LEASE_KEEPER_TEST_STRICT=1) but missing: ${missing}`);
    });
  } else {
    it.skip(`needs ${name}: ${missing}`, () => {});
  }
  return false;
}

/** null as root, else why not. */
export function rootMissing(): string | null {
  return process.getuid?.() === 0 ? null : 'not running as root';
}

/**
 * null when this process can create cgroup v2 children and kill them with cgroup.kill (root with a
 * writable cgroup2 mount), else why not. Reads /proc/self/mountinfo like the keeper does.
 */
export function cgroupMissing(): string | null {
  const root = rootMissing();
  if (root !== null) return root;
  const mount = cgroup2MountPoint();
  if (mount === null) return 'no cgroup2 file system is mounted';
  if (!existsSync(join(mount, 'cgroup.kill')) && !probeKill(mount)) return `${mount} has no cgroup.kill (Linux < 5.14)`;
  try {
    accessSync(mount, constants.W_OK);
  } catch {
    return `${mount} is not writable`;
  }
  return null;
}

/** The cgroup2 mount point from /proc/self/mountinfo, or null. */
export function cgroup2MountPoint(): string | null {
  try {
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const sep = line.indexOf(' - ');
      if (sep > 0 && line.slice(sep + 3).startsWith('cgroup2 ')) return line.slice(0, sep).split(' ')[4] ?? null;
    }
  } catch {
    // no /proc
  }
  return null;
}

/** The root cgroup has no cgroup.kill of its own; look for it in a child. */
function probeKill(mount: string): boolean {
  const dir = join(mount, `lk-probe-${process.pid}`);
  try {
    mkdirSync(dir);
    return existsSync(join(dir, 'cgroup.kill'));
  } catch {
    return false;
  } finally {
    try {
      rmdirSync(dir);
    } catch {
      // not created
    }
  }
}
