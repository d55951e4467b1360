/**
 * Tests that need something this machine may lack (root, a writable cgroup v2, the systemd sandbox, perl,
 * setpriv) skip elsewhere with the reason in their name. In CI a skip would hide a broken feature, so
 * `.ci/run` sets LEASE_KEEPER_TEST_STRICT=1 and a missing prerequisite becomes a failing test instead.
 */
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
