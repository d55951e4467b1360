import { spawn as nodeSpawn, type ChildProcess, type SpawnOptions, type StdioOptions } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { SpawnError } from './errors.js';
import { resolveCommand } from './resolve.js';

/** Where util-linux installs setpriv on every distribution we target. */
export const SETPRIV_PATH = '/usr/bin/setpriv';

/** What to run. The caller builds `env` (spec §3); the containment adds only LEASE_KEEPER_RUN_ID. */
export interface JobSpec {
  /** The command and its arguments; `command[0]` is looked up in `env.PATH` unless it contains a slash. */
  command: string[];
  env: NodeJS.ProcessEnv;
  /** Working directory of the job; default the keeper's. */
  cwd?: string;
  /** Ask the kernel to SIGKILL the job's leader if the keeper dies (needs setpriv). Default true. */
  parentDeathSignal?: boolean;
  /** The job's stdio, as spawn() takes it. Default 'inherit' (the keeper's stdout/stderr). */
  stdio?: StdioOptions;
  /** A name for the job where the operator sees it (the cgroup's name): the work id. */
  name?: string;
}

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
 * - pdeathsig reaches the leader only. Grandchildren survive a keeper SIGKILL outside systemd unless the
 *   job has its own cgroup (the start-up sweep ends them); under systemd, KillMode=mixed kills the unit.
 * - It fires when the *thread* that forked exits. Node forks from the thread that calls spawn(), so a
 *   job started inside a worker_thread dies with that worker, not with the process.
 * - If the keeper dies in the instant between fork and setpriv's prctl(), the signal is never sent.
 * Without setpriv the job is spawned directly and `parentDeathSignal` is false.
 */
export function planLaunch(path: string, args: readonly string[], setpriv: string | null): LaunchPlan {
  if (setpriv === null) return { file: path, args: [...args], parentDeathSignal: false };
  return { file: setpriv, args: ['--pdeathsig', 'SIGKILL', '--', path, ...args], parentDeathSignal: true };
}

/** Test seams of every containment's spawn; production uses the defaults. */
export interface LaunchDeps {
  spawn?: (file: string, args: readonly string[], options: SpawnOptions) => ChildProcess;
  /** Path of setpriv, or null to behave as if it were not installed. Default: /usr/bin/setpriv if executable. */
  setpriv?: string | null;
}

/** A started leader: the child, its pid, the argv given to spawn(), and whether pdeathsig is set. */
export interface Leader {
  child: ChildProcess;
  pid: number;
  argv: string[];
  parentDeathSignal: boolean;
}

/**
 * Starts the job's leader in a new process group (pgid = pid). `wrap` puts a launcher in front of the
 * resolved command (the cgroup's), inside setpriv. Throws SpawnError (127/126) when the command cannot be run, before anything is
 * spawned where that can be known.
 */
export function startLeader(spec: JobSpec, deps: LaunchDeps, wrap: (path: string, args: string[]) => [string, string[]] = (p, a) => [p, a]): Leader {
  const [command, ...args] = spec.command;
  if (command === undefined) throw new SpawnError(127, 'job command is empty');
  const cwd = spec.cwd ?? process.cwd();
  if (!isDirectory(cwd)) throw new SpawnError(126, `job working directory "${cwd}" does not exist or is not a directory`);
  const found = resolveCommand(command, spec.env, cwd);
  if (!found.ok) throw new SpawnError(found.code, found.message);

  const setpriv = spec.parentDeathSignal === false ? null : deps.setpriv === undefined ? findSetpriv() : deps.setpriv;
  // The launcher runs inside setpriv, so the parent-death signal is armed before anything else happens.
  const plan = planLaunch(...wrap(found.path, args), setpriv);
  const spawn = deps.spawn ?? nodeSpawn;
  const child = spawn(plan.file, plan.args, { detached: true, stdio: spec.stdio ?? 'inherit', env: spec.env, cwd });
  if (child.pid === undefined) {
    // Node reports a failed exec (EACCES, ENOENT, ...) as an 'error' event on the next tick, with no pid
    // and no 'exit' ever. The checks above make this a race (the file changed since), so report it now.
    child.once('error', () => {});
    child.stdout?.destroy();
    child.stderr?.destroy();
    throw new SpawnError(126, `job command "${command}" could not be started (${found.path} changed or was refused by the kernel)`);
  }
  // After a successful spawn Node only emits 'error' for kill()/send() failures, which we never call;
  // a listener keeps such an event from crashing the keeper.
  child.on('error', () => {});
  return { child, pid: child.pid, argv: [plan.file, ...plan.args], parentDeathSignal: plan.parentDeathSignal };
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
