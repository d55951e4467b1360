import type { ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import type { JobExit } from '../lease/outcome.js';
import type { ContainedJob, JobAccounting, SentSignal, StopOptions } from './containment.js';
import { groupGone, liveMembers, scanGroups, signalGroup, type GroupScan } from './group-members.js';
import { startLeader, type JobSpec, type LaunchDeps } from './launch.js';
import { KillDeadline } from './kill-deadline.js';
import { SurvivorPoll } from './survivor-poll.js';

export type { JobSpec } from './launch.js';
export type { SentSignal, StopOptions } from './containment.js';

/** Test seams; production uses the defaults. */
export interface ProcessGroupDeps extends LaunchDeps {
  /** How often to look for survivors once the leader has exited, in ms. Default 20. */
  pollMs?: number;
  /** The /proc scan (live members by pgid); default scanGroups. Groups with the same one share its scans. */
  scanGroups?: () => GroupScan | null;
  /** Members of the job outside its process group (the environment tag's); default none. */
  outside?: OutsideMembers;
}

/**
 * Processes of the job that left its process group (setsid, setpgid) but can still be found, e.g. by the
 * tag in their environment. The group signals them with its own members and counts them as live.
 */
export interface OutsideMembers {
  /** Sends `signal` to every one of them, except members of group `signalled` (they just got it); true when any got it. */
  signal(signal: NodeJS.Signals, signalled: number | null): boolean;
  /** The live ones now (a look that may be shared by every job within one event-loop tick). */
  live(): readonly number[];
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
 * A member that moves itself to another group or session (setsid, setpgid) is out of reach, unless
 * `outside` finds it (the environment tag); the cgroup containment has no such hole (cgroup.ts).
 */
export class ProcessGroup implements ContainedJob {
  /** The leader's pid. */
  readonly pid: number;
  /** The group id, equal to the leader's pid. */
  readonly pgid: number;
  /** True when the kernel will SIGKILL the leader if the keeper dies (setpriv was found). */
  readonly parentDeathSignal: boolean;
  /** The argv given to spawn(), setpriv included when used. */
  readonly argv: readonly string[];
  /** The read ends of the job's stdout and stderr when spawned with 'pipe' there, else null. */
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
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
  readonly #killDeadline = new KillDeadline(() => this.#killSafely());
  #stopping: Promise<JobExit> | null = null;
  #failStop: ((err: unknown) => void) | null = null;
  /** Proven gone (ESRCH): its id may now be reused, so it is never signalled again. */
  #groupGone = false;
  readonly #pollMs: number;
  readonly #scanGroups: () => GroupScan | null;
  readonly #outside: OutsideMembers | null;
  #resolveExited!: (exit: JobExit) => void;
  #resolveEmpty!: () => void;

  /**
   * Starts the job in a new process group (pgid = pid) with the spec's stdio (default inherited). Throws SpawnError (127/126)
   * when the command cannot be run, before anything is spawned where that can be known.
   */
  static start(spec: JobSpec, deps: ProcessGroupDeps = {}): ProcessGroup {
    const leader = startLeader(spec, deps);
    const poll = { pollMs: deps.pollMs ?? DEFAULT_POLL_MS, scanGroups: deps.scanGroups ?? scanGroups };
    return new ProcessGroup(leader.child, leader.pid, leader.parentDeathSignal, leader.argv, poll, deps.outside ?? null);
  }

  private constructor(
    child: ChildProcess,
    pid: number,
    parentDeathSignal: boolean,
    argv: string[],
    poll: { pollMs: number; scanGroups: () => GroupScan | null },
    outside: OutsideMembers | null,
  ) {
    this.pid = pid;
    this.pgid = pid;
    this.parentDeathSignal = parentDeathSignal;
    this.argv = argv;
    this.stdout = child.stdout;
    this.stderr = child.stderr;
    this.#pollMs = poll.pollMs;
    this.#scanGroups = poll.scanGroups;
    this.#outside = outside;
    this.exited = new Promise((resolve) => (this.#resolveExited = resolve));
    this.empty = new Promise((resolve) => (this.#resolveEmpty = resolve));
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

  /** Where the job runs, for log lines. */
  get where(): Readonly<Record<string, number>> {
    return { pgid: this.pgid };
  }

  /** A process group has no accounting of its own. */
  accounting(): JobAccounting | null {
    return null;
  }

  /** True while the group has a live member (the leader counts until its exit is reported). */
  isAlive(): boolean {
    if (this.#isEmpty) return false;
    if (this.#exit === null) return true;
    if (this.#outside !== null && this.#outside.live().length > 0) return true;
    return liveMembers(this.pgid, this.#known, this.#scanGroups).length > 0;
  }

  /**
   * Sends `signal` to the whole group (and to the job's members outside it). Returns false when nothing
   * was left to signal (not an error); throws on EPERM from the group.
   */
  interrupt(signal: NodeJS.Signals): boolean {
    // Once the job is empty its ids may be reused by unrelated processes: never signal it again.
    if (this.#isEmpty) return false;
    let delivered = false;
    let group = false;
    let failure: unknown = null;
    if (!this.#groupGone) {
      try {
        delivered = group = signalGroup(this.pgid, signal);
        if (!delivered && this.#exit !== null) this.#groupGone = true;
      } catch (err) {
        failure = err;
      }
    }
    if (this.#outside !== null && this.#outside.signal(signal, group ? this.pgid : null)) delivered = true;
    if (delivered) this.#lastSignal = { signal, atMs: performance.now() };
    if (failure !== null) throw failure;
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
    if (!this.#isEmpty) this.#killDeadline.bringForward(atMs);
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
      this.#groupGone = true;
      if (this.#outside === null || this.#outside.live().length === 0) {
        this.#becomeEmpty();
        return;
      }
    }
    sharedPoll(this.#scanGroups, this.#pollMs).add({ look: (scan) => this.#look(scan) });
  }

  /** One look for survivors, with the poll tick's shared scan; true once the group is empty. */
  #look(scan: () => GroupScan | null): boolean {
    this.#known = this.#groupGone ? [] : liveMembers(this.pgid, this.#known, scan);
    if (this.#known.length === 0 && (this.#outside === null || this.#outside.live().length === 0)) {
      this.#becomeEmpty();
      return true;
    }
    const now = performance.now();
    if (now >= this.#killDeadline.atMs && now - this.#lastKillMs >= REKILL_EVERY_MS) this.#killSafely();
    return false;
  }

  #becomeEmpty(): void {
    this.#isEmpty = true;
    this.#known = [];
    this.#killDeadline.cancel();
    this.#resolveEmpty();
  }
}
