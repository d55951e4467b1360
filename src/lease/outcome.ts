/**
 * How one claimed item ended. One enum, used in logs, metadata, metrics and exit codes.
 */
export const OUTCOMES = [
  'completed', //         the job exited 0
  'failed', //            the job exited non-zero or was killed by a signal it was not sent by us
  'stopped_by_server', // 409 on heartbeat: the item was stopped (or requeued) server-side
  'drained', //           state `stopping`: the job was asked to stop, drained, and the stop confirmed
  'lease_lost', //        412 or `lease_extended: false`: another holder owns the lease
  'self_fenced', //       no heartbeat accepted in time: the job was stopped before the local deadline
  'shutdown', //          the keeper got SIGTERM/SIGINT and drained the job
  'spawn_failed', //      the job command could not be started
] as const;

export type Outcome = (typeof OUTCOMES)[number];

/** Exit codes of `run` (spec §6). */
export const EXIT = {
  ok: 0,
  leaseLost: 75,
  auth: 77,
  config: 78,
  /** An internal error the keeper did not expect (a bug); systemd restarts it. */
  software: 70,
} as const;

export interface JobExit {
  /** Exit code when the job exited by itself, else null. */
  code: number | null;
  /** Signal name when a signal ended the job, else null. */
  signal: NodeJS.Signals | null;
}

/**
 * `--once` exit code for an outcome (spec §6): the job's own code (128+N for signal N), 75 when the
 * lease was lost or self-fenced, 0 for a clean keeper shutdown, 127/126 when the job could not start.
 */
export function exitCodeFor(outcome: Outcome, exit: JobExit | null, signalNumber: (s: NodeJS.Signals) => number): number {
  switch (outcome) {
    case 'lease_lost':
    case 'self_fenced':
      return EXIT.leaseLost;
    case 'completed':
    case 'failed':
    case 'drained':
    case 'stopped_by_server':
      // The job's own answer to being stopped counts: 0 when it drained cleanly, 143 when SIGTERM ended it.
      if (!exit) return 1;
      if (exit.code !== null) return exit.code;
      if (exit.signal !== null) return 128 + signalNumber(exit.signal);
      return 1;
    case 'spawn_failed':
      // Like a shell: 127 command not found / 126 cannot execute.
      return exit?.code ?? 127;
    case 'shutdown':
      return EXIT.ok;
  }
}
