/**
 * vitest globalSetup for the suites (vitest.config.ts, vitest.chaos.config.ts): the run cleans up after
 * itself, also when a test fails, or the run fails.
 *
 * Setup exports two things every process the suite starts inherits (the integration keepers pass them on
 * explicitly, since they build their environment from scratch):
 *   - LK_TEST_RUN=<id>: found through /proc/<pid>/environ, it marks the run's processes even after they
 *     were reparented to PID 1 (a job's grandchild whose keeper was SIGKILLed);
 *   - TMPDIR=<a fresh lk-test-run-* directory>: os.tmpdir() of every worker, keeper and job, so what the
 *     run leaves is told apart from what other runs on the same machine create at the same time (what a
 *     test leaves on purpose, such as the chaos suite's report, goes to reports/chaos in the checkout, see keptReportDir).
 * Teardown waits a moment for processes still on their way out, then fails the run when any process of
 * the run is alive (the marker, or still a descendant of vitest other than its own workers) or anything
 * is left in the run's temporary directory. Setup removes the directories of earlier runs that died before
 * their teardown. It kills and removes what it found either way, so one bad run
 * does not poison the next. LK_TEST_LEFTOVERS=report only prints the report.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { removeDeadKeepersCgroups } from './cgroups.js';
import { commandLine, descendants, pidAlive, procsWithCommandLine, procsWithEnv, type ProcInfo } from './processes.js';

const SETTLE_MS = 3000;

/**
 * The run's processes, apart from vitest itself (its workers, and tools it runs from node_modules): those
 * with the marker, those still below vitest, and those running something from the run's TMPDIR (a job
 * script started from a hand-built environment and orphaned).
 */
function runProcesses(run: string, runTmp: string): ProcInfo[] {
  const found = new Map<number, ProcInfo>();
  for (const p of [...procsWithEnv({ LK_TEST_RUN: run }), ...descendants(process.pid), ...procsWithCommandLine(runTmp)]) {
    if (p.pid === process.pid) continue;
    const cmd = commandLine(p.pid);
    if (cmd === '' || cmd.includes('/node_modules/')) continue;
    found.set(p.pid, p);
  }
  return [...found.values()];
}

/**
 * The temporary directories of earlier runs that never reached their teardown (a run killed with SIGKILL,
 * or StrykerJS's vitest runner, which disposes of vitest without it): each name carries the pid of the run
 * that made it, and a dead pid's directory is removed. A live pid (another run, or a reused pid) is left.
 */
export function removeDeadRunsDirs(outerTmp: string): void {
  let names: string[] = [];
  try {
    names = readdirSync(outerTmp);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^lk-test-run-(\d+)-/.exec(name);
    if (m === null || pidAlive(Number(m[1]))) continue;
    rmSync(join(outerTmp, name), { recursive: true, force: true });
  }
}

export default function setup(): () => Promise<void> {
  const run = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const outerTmp = tmpdir();
  removeDeadRunsDirs(outerTmp);
  const runTmp = mkdtempSync(join(outerTmp, `lk-test-run-${process.pid}-`));
  process.env.LK_TEST_RUN = run;
  process.env.TMPDIR = runTmp;
  process.env.LK_TEST_OUTER_TMP = outerTmp;

  return async function teardown(): Promise<void> {
    let left = runProcesses(run, runTmp);
    for (const until = Date.now() + SETTLE_MS; left.length > 0 && Date.now() < until; left = runProcesses(run, runTmp)) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const report = left.map((p) => `  pid ${p.pid} (parent ${p.ppid}, group ${p.pgrp}): ${commandLine(p.pid) || '?'}`);
    for (const p of left) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone since */
      }
    }
    // Empty job cgroups of keepers the tests SIGKILLed (their processes are gone by now).
    removeDeadKeepersCgroups();
    let files: string[] = [];
    try {
      files = readdirSync(runTmp);
    } catch {
      /* removed by someone: nothing to report */
    }
    rmSync(runTmp, { recursive: true, force: true });
    process.env.TMPDIR = outerTmp;
    const problems: string[] = [];
    if (report.length > 0) problems.push(`${report.length} process(es) of the suite still alive after the run (now killed):\n${report.join('\n')}`);
    if (files.length > 0) problems.push(`${files.length} entr(y/ies) left in the run's temporary directory ${runTmp} (now removed): ${files.sort().join(', ')}`);
    if (problems.length === 0) return;
    const message = `The suite did not clean up after itself (test/support/global-setup.ts):\n${problems.join('\n')}`;
    if (process.env.LK_TEST_LEFTOVERS === 'report') {
      console.warn(message);
      return;
    }
    process.exitCode = 1; // vitest reports an error thrown here but exits 0
    throw new Error(message);
  };
}
