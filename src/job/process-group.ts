import { spawn as nodeSpawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { statSync } from 'node:fs';
import type { JobExit } from '../lease/outcome.js';
import { SpawnError } from './errors.js';
import { groupGone, liveMembers, scanGroups, signalGroup, type GroupScan } from './group-members.js';
import { findSetpriv, planLaunch } from './launch.js';
import { resolveCommand } from './resolve.js';
import { SurvivorPoll } from './survivor-poll.js';

/** What to run. The caller builds `env` (spec §3); it is passed to the job exactly as given. */
export interface JobSpec {
  /** The command and its arguments; `command[0]` is looked up in `env.PATH` unless it contains a slash. */
  command: string[];
  env: NodeJS.ProcessEnv;
  /** Working directory of the job; default the keeper's. */
  cwd?: string;
  /** Ask the kernel to SIGKILL the job's leader if the keeper dies (needs setpriv). Default true. */
  parentDeathSignal?: boolean;
}

/** How to stop the group: `signal` first, SIGKILL `graceMs` later unless the group is empty by then. */
export interface StopOptions {
  signal: NodeJS.Signals;
  graceMs: number;
}

/** A signal the supervisor delivered, stamped with performance.now(), for metrics. */
export interface SentSignal {
  signal: NodeJS.Signals;
  atMs: number;
}

/** Test seams; production uses the defaults. */
export interface ProcessGroupDeps {
  spawn?: (file: string, args: readonly string[], options: SpawnOptions) => ChildProcess;
  /** Path of setpriv, or null to behave as if it were not installed. Default: /usr/bin/setpriv if executable. */
  setpriv?: string | null;
  /** How often to look for survivors once the leader has exited, in ms. Default 20. */
  pollMs?: number;
  /** The /proc scan (live members by pgid); default scanGroups. Groups with the same one share its scans. */
  scanGroups?: () => GroupScan | null;
}

const DEFAULT_POLL_MS = 20;
/** While SIGKILLed members linger (a fork racing the kill), repeat the SIGKILL this often. */
const REKILL_EVERY_MS = 500;

/** One shared poll per (scan, pollMs): every group polled with them shares one /proc scan per tick. */
const polls = new Map<() => GroupScan | null, Map<number, SurvivorPoll>>();

function sharedPoll(scan: () => GroupScan | null, pollMs: number): SurvivorPoll {
  let byMs = polls.get(scan);
  if (byMs === undefined) polls.set(scan, (byMs = new Map()));
  let poll = byMs.get(pollMs);
  if (poll === undefined) byMs.set(pollMs, (poll = new SurvivorPoll(pollMs, scan)));
  return poll;
}

/**
 * The job: a child process leading its own process group, and everything it starts that stays in the
 * group. Stopping it means the whole group (spec §5); it counts as stopped only once `empty` resolved.
 * A member that moves itself to another group or session (setsid, setpgid) is out of reach.
 */
export class ProcessGroup {
  /** The leader's pid. */
  readonly pid: number;
  /** The group id, equal to the leader's pid. */
  readonly pgid: number;
  /** True when the kernel will SIGKILL the leader if the keeper dies (setpriv was found). */
  readonly parentDeathSignal: boolean;
  /** The argv given to spawn(), setpriv included when used. */
  readonly argv: readonly string[];
  /** Resolves when the leader exited: its code, or the name of the signal that ended it. */
  readonly exited: Promise<JobExit>;
  /**
   * Resolves when no live process is left in the group (zombies do not count). Never rejects. Until then,
   * once the leader has exited, a 20 ms poll keeps the event loop alive (kill(-pgid, 0) first; a /proc
   * scan only while the group still exists, one per tick shared with every other group polled).
   */
  readonly empty: Promise<void>;

  #exit: JobExit | null = null;
  #isEmpty = false;
  #known: number[] = [];
  #lastSignal: SentSignal | null = null;
  #lastKillMs = -Infinity;
  #killAtMs = Infinity;
  #killTimer: NodeJS.Timeout | null = null;
  #stopping: Promise<JobExit> | null = null;
  #failStop: ((err: unknown) => void) | null = null;
  readonly #pollMs: number;
  readonly #scanGroups: () => GroupScan | null;
  #resolveExited!: (exit: JobExit) => void;
  #resolveEmpty!: () => void;

  /**
   * Starts the job in a new process group (pgid = pid) with stdio inherited. Throws SpawnError (127/126)
   * when the command cannot be run, before anything is spawned where that can be known.
   */
  static start(spec: JobSpec, deps: ProcessGroupDeps = {}): ProcessGroup {
    const [command, ...args] = spec.command;
    if (command === undefined) throw new SpawnError(127, 'job command is empty');
    const cwd = spec.cwd ?? process.cwd();
    if (!isDirectory(cwd)) throw new SpawnError(126, `job working directory "${cwd}" does not exist or is not a directory`);
    const found = resolveCommand(command, spec.env, cwd);
    if (!found.ok) throw new SpawnError(found.code, found.message);

    const setpriv = spec.parentDeathSignal === false ? null : deps.setpriv === undefined ? findSetpriv() : deps.setpriv;
    const plan = planLaunch(found.path, args, setpriv);
    const spawn = deps.spawn ?? nodeSpawn;
    const child = spawn(plan.file, plan.args, { detached: true, stdio: 'inherit', env: spec.env, cwd });
    if (child.pid === undefined) {
      // Node reports a failed exec (EACCES, ENOENT, ...) as an 'error' event on the next tick, with no pid
      // and no 'exit' ever. The checks above make this a race (the file changed since), so report it now.
      child.once('error', () => {});
      throw new SpawnError(126, `job command "${command}" could not be started (${found.path} changed or was refused by the kernel)`);
    }
    const poll = { pollMs: deps.pollMs ?? DEFAULT_POLL_MS, scanGroups: deps.scanGroups ?? scanGroups };
    return new ProcessGroup(child, child.pid, plan.parentDeathSignal, [plan.file, ...plan.args], poll);
  }

  private constructor(
    child: ChildProcess,
    pid: number,
    parentDeathSignal: boolean,
    argv: string[],
    poll: { pollMs: number; scanGroups: () => GroupScan | null },
  ) {
    this.pid = pid;
    this.pgid = pid;
    this.parentDeathSignal = parentDeathSignal;
    this.argv = argv;
    this.#pollMs = poll.pollMs;
    this.#scanGroups = poll.scanGroups;
    this.exited = new Promise((resolve) => (this.#resolveExited = resolve));
    this.empty = new Promise((resolve) => (this.#resolveEmpty = resolve));
    // After a successful spawn Node only emits 'error' for kill()/send() failures, which we never call;
    // a listener keeps such an event from crashing the keeper.
    child.on('error', () => {});
    child.once('exit', (code, signal) => {
      this.#exit = { code, signal };
      this.#resolveExited(this.#exit);
      this.#watchUntilEmpty();
    });
  }

  /** The last signal delivered to the group, or null. */
  get lastSignal(): SentSignal | null {
    return this.#lastSignal;
  }

  /** True while the group has a live member (the leader counts until its exit is reported). */
  isAlive(): boolean {
    if (this.#isEmpty) return false;
    if (this.#exit === null) return true;
    return liveMembers(this.pgid, this.#known, this.#scanGroups).length > 0;
  }

  /** Sends `signal` to the whole group. Returns false when it is already gone (not an error); throws on EPERM. */
  interrupt(signal: NodeJS.Signals): boolean {
    // Once the group is empty its id may be reused by an unrelated process: never signal it again.
    if (this.#isEmpty) return false;
    const delivered = signalGroup(this.pgid, signal);
    if (delivered) this.#lastSignal = { signal, atMs: performance.now() };
    return delivered;
  }

  /** SIGKILL to the whole group. Returns false when it is already gone. */
  kill(): boolean {
    this.#lastKillMs = performance.now();
    return this.interrupt('SIGKILL');
  }

  /**
   * Stops the group: `signal`, then SIGKILL once `graceMs` passed, then waits until the group is empty.
   * Resolves with the leader's exit. A second call returns the same promise; a shorter grace brings the
   * SIGKILL forward, a longer one never postpones it. Rejects only if the group cannot be signalled (EPERM).
   */
  stop(options: StopOptions): Promise<JobExit> {
    const killAtMs = performance.now() + Math.max(0, options.graceMs);
    if (this.#stopping === null) {
      this.#stopping = new Promise<JobExit>((resolve, reject) => {
        this.#failStop = reject;
        void this.empty.then(() => this.exited).then(resolve);
      });
      try {
        this.interrupt(options.signal);
      } catch {
        this.killAt(performance.now());
        return this.#stopping;
      }
    }
    this.killAt(killAtMs);
    return this.#stopping;
  }

  /** SIGKILLs the group at `atMs` (performance.now() time) unless it is empty by then; never later than already set. */
  killAt(atMs: number): void {
    if (this.#isEmpty || atMs >= this.#killAtMs) return;
    this.#killAtMs = atMs;
    if (this.#killTimer !== null) clearTimeout(this.#killTimer);
    this.#killTimer = setTimeout(() => {
      this.#killTimer = null;
      this.#killSafely();
    }, Math.max(0, atMs - performance.now()));
  }

  /** SIGKILL now, for a stop in progress or not (a lease fence that cannot wait for the grace). */
  escalate(): void {
    this.killAt(performance.now());
  }

  #killSafely(): void {
    try {
      this.kill();
    } catch (err) {
      this.#failStop?.(err);
    }
  }

  /**
   * After the leader exits, look for survivors until none is left. Usually the group went with its leader
   * and kill(-pgid, 0) says so at once (ESRCH), with no /proc scan. Otherwise (a member still runs, or a
   * dead one is not reaped yet) the shared poll looks right after this event-loop phase, then every #pollMs.
   */
  #watchUntilEmpty(): void {
    if (groupGone(this.pgid)) {
      this.#becomeEmpty();
      return;
    }
    sharedPoll(this.#scanGroups, this.#pollMs).add({ look: (scan) => this.#look(scan) });
  }

  /** One look for survivors, with the poll tick's shared scan; true once the group is empty. */
  #look(scan: () => GroupScan | null): boolean {
    this.#known = liveMembers(this.pgid, this.#known, scan);
    if (this.#known.length === 0) {
      this.#becomeEmpty();
      return true;
    }
    const now = performance.now();
    if (now >= this.#killAtMs && now - this.#lastKillMs >= REKILL_EVERY_MS) this.#killSafely();
    return false;
  }

  #becomeEmpty(): void {
    this.#isEmpty = true;
    this.#known = [];
    if (this.#killTimer !== null) clearTimeout(this.#killTimer);
    this.#killTimer = null;
    this.#resolveEmpty();
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
