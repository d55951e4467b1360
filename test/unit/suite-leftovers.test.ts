/** The suite's own clean-up (test/support/global-setup.ts): what a run that died before its teardown left is removed by the next run. */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
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
