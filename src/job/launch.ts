import { accessSync, constants } from 'node:fs';

/** Where util-linux installs setpriv on every distribution we target. */
export const SETPRIV_PATH = '/usr/bin/setpriv';

/** What to hand to spawn(): the program, its arguments, and whether the kernel will SIGKILL the leader if we die. */
export interface LaunchPlan {
  file: string;
  args: string[];
  parentDeathSignal: boolean;
}

/** Returns `path` when it is an executable setpriv, else null. */
export function findSetpriv(path: string = SETPRIV_PATH): string | null {
  try {
    accessSync(path, constants.X_OK);
    return path;
  } catch {
    return null;
  }
}

/**
 * How to start the job at `path` (already resolved) so that a keeper killed with SIGKILL leaves no job
 * running past its lease (spec §5).
 *
 * With setpriv: `setpriv --pdeathsig SIGKILL -- <path> args...`. setpriv sets PR_SET_PDEATHSIG and then
 * execs the job, so the pid Node reports (the group leader) is the job's own; the setting survives exec.
 * Limits, which the caller should log when they matter:
 * - pdeathsig reaches the leader only. Grandchildren survive a keeper SIGKILL outside systemd; under
 *   systemd, KillMode=mixed kills the whole cgroup, so the unit covers them.
 * - It fires when the *thread* that forked exits. Node forks from the thread that calls spawn(), so a
 *   ProcessGroup started inside a worker_thread dies with that worker, not with the process.
 * - If the keeper dies in the instant between fork and setpriv's prctl(), the signal is never sent.
 * Without setpriv the job is spawned directly and `parentDeathSignal` is false.
 */
export function planLaunch(path: string, args: readonly string[], setpriv: string | null): LaunchPlan {
  if (setpriv === null) return { file: path, args: [...args], parentDeathSignal: false };
  return { file: setpriv, args: ['--pdeathsig', 'SIGKILL', '--', path, ...args], parentDeathSignal: true };
}
