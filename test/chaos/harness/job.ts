/**
 * The chaos job: one bash process (no helper processes, so that pdeathsig alone can clean it up) that
 * records `start|end|child <work_id> <ms> <keeper> <pid|how>` lines into $CHAOS_RECORD. Its behaviour comes
 * from the item's session id, `chaos-<mode>-<ms>-<exit>-<drainms>`:
 *   run    sleeps <ms>, exits <exit>; SIGTERM: records `end term` and exits 0
 *   ignore ignores SIGTERM (only SIGKILL ends it early)
 *   slow   on SIGTERM drains for <drainms> before exiting
 *   fork   starts a grandchild in its group that ignores SIGTERM and lives 600 s unless killed; the
 *          leader exits on SIGTERM or after <ms>, leaving the grandchild to the keeper
 *   escape like fork, but the grandchild is a daemon: it leaves the job's session and process group
 *          (setsid) first, so only the keeper's containment (cgroup, or the environment tag) still finds it
 * Waiting is `read -t` on a FIFO nobody writes to: a builtin, interruptible by a trapped signal.
 * Times are $EPOCHREALTIME in ms: the same clock (Date.now) as the emulator's events.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export type JobMode = 'run' | 'ignore' | 'slow' | 'fork' | 'escape';

export interface JobFiles {
  script: string;
  fifo: string;
}

const SCRIPT = `#!/usr/bin/env bash
exec 9<>"$CHAOS_FIFO"
ms() { local t=\${EPOCHREALTIME/[.,]/}; MS=\${t%???}; }
rec() { ms; echo "$1 $LEASE_KEEPER_WORK_ID $MS $CHAOS_KEEPER $2" >> "$CHAOS_RECORD"; }
IFS=- read -r _ mode dur code drain <<< "$LEASE_KEEPER_SESSION_ID"
rec start $$
printf -v secs '%d.%03d' $((dur / 1000)) $((dur % 1000))
printf -v dsecs '%d.%03d' $((drain / 1000)) $((drain % 1000))
case $mode in
  ignore) trap '' TERM ;;
  slow) trap 'read -t "$dsecs" -u 9; rec end term-slow; exit 0' TERM ;;
  *) trap 'rec end term; exit 0' TERM ;;
esac
if [ "$mode" = fork ]; then
  ( trap '' TERM; rec child $BASHPID; read -t 600 -u 9 ) &
fi
if [ "$mode" = escape ]; then
  # setsid in a non-leader execs in place (no fork): the recorded pid is the daemon's, in a new session.
  ( trap '' TERM; rec child $BASHPID; exec setsid bash -c 'read -t 600 -u 9' ) &
fi
read -t "$secs" -u 9
rec end done
exit "$code"
`;

/** Writes the job script and its FIFO into `dir` (once per run; every scenario shares them). */
export function writeJob(dir: string): JobFiles {
  mkdirSync(dir, { recursive: true });
  const script = join(dir, 'chaos-job.sh');
  const fifo = join(dir, 'chaos-job.fifo');
  writeFileSync(script, SCRIPT);
  chmodSync(script, 0o755);
  if (!existsSync(fifo)) execFileSync('mkfifo', ['-m', '600', fifo]);
  return { script, fifo };
}

/** The session id that tells the job how to behave. */
export function sessionId(mode: JobMode, durMs: number, exitCode: number, drainMs: number): string {
  return `chaos-${mode}-${durMs}-${exitCode}-${drainMs}`;
}

export interface RecordLine {
  kind: 'start' | 'end' | 'child';
  workId: string;
  ms: number;
  keeper: string;
  extra: string;
}

export function parseRecordLines(text: string): RecordLine[] {
  const out: RecordLine[] = [];
  for (const line of text.split('\n')) {
    const [kind, workId, ms, keeper, extra] = line.split(' ');
    if ((kind === 'start' || kind === 'end' || kind === 'child') && workId && ms && keeper) {
      out.push({ kind, workId, ms: Number(ms), keeper, extra: extra ?? '' });
    }
  }
  return out;
}
