/**
 * Integration support: runs the REAL `bin/lease-keeper` (compiled dist/) as a child process against
 * the real emulator on a loopback socket, and reads its JSON log lines.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, existsSync, writeFileSync, chmodSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmulator, type Emulator } from '../../src/emulator/index.js';
import { endAllWithEnv, integrationWorkerId, suiteEnv } from '../support/processes.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = join(ROOT, 'bin/lease-keeper');
export const TOKEN = 'pt-integration-SECRET-7f3a9c';

export interface LogLine {
  level: number;
  msg: string;
  work_id?: string;
  [k: string]: unknown;
}

export class Keeper {
  readonly lines: LogLine[] = [];
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];

  /** `tag`: the LK_TEST_KEEPER value in the environment of the keeper and of everything its jobs start. */
  constructor(
    readonly child: ChildProcess,
    readonly tag: string = '',
  ) {
    let partial = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      const text = chunk.toString();
      this.stdout += text;
      partial += text;
      const parts = partial.split('\n');
      partial = parts.pop()!;
      for (const raw of parts) {
        const line = raw.replace(/^<\d>/, '');
        if (!line.startsWith('{')) continue;
        try {
          const parsed = JSON.parse(line) as LogLine;
          this.lines.push(parsed);
          this.waiters = this.waiters.filter((w) => {
            if (!w.pred(parsed)) return true;
            w.resolve(parsed);
            return false;
          });
        } catch {
          /* a job's own output line that happens to start with { */
        }
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  }

  /** Resolves with the first log line (past or future) matching `pred`. */
  waitFor(pred: (l: LogLine) => boolean, timeoutMs = 20_000): Promise<LogLine> {
    const seen = this.lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for a log line; last lines:\n${this.tail()}`)), timeoutMs);
      this.waiters.push({
        pred,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
    });
  }

  waitForMsg(msg: string, timeoutMs?: number): Promise<LogLine> {
    return this.waitFor((l) => l.msg === msg || l.msg.startsWith(`${msg}:`), timeoutMs);
  }

  msgs(): string[] {
    return this.lines.map((l) => l.msg.split(':')[0]!);
  }

  tail(n = 15): string {
    return `${this.lines.slice(-n).map((l) => JSON.stringify(l)).join('\n')}\nstderr: ${this.stderr}`;
  }

  async exit(timeoutMs = 30_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`keeper did not exit in ${timeoutMs} ms; last lines:\n${this.tail()}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }

  /**
   * Teardown: SIGKILLs the keeper and every process of its jobs, found by the keeper's tag (a job's
   * grandchild reparented to PID 1 included), and waits until none is left.
   */
  async end(): Promise<void> {
    this.kill('SIGKILL');
    if (this.tag) await endAllWithEnv({ LK_TEST_KEEPER: this.tag });
    await Promise.race([this.exited, sleep(3000)]);
  }
}

export interface KeeperOptions {
  env?: Record<string, string | undefined>;
  args?: string[];
  command: string[];
  once?: boolean;
  /** A command line to run the keeper through (e.g. setpriv to another user); it ends with exec "$@". */
  wrap?: string[];
  /** The lease-keeper entry to run instead of this checkout's bin/lease-keeper (a staged copy). */
  bin?: string;
}

export function startKeeper(emu: Emulator, opts: KeeperOptions): Keeper {
  const tag = randomUUID();
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    QODER_API_URL: emu.url,
    QODER_PAT: emu.token,
    QODER_ENVIRONMENT_ID: emu.environmentId,
    LEASE_KEEPER_WORKER_ID: integrationWorkerId(Math.random().toString(36).slice(2, 8)),
    LEASE_KEEPER_STOP_GRACE_SECONDS: '1',
    LEASE_KEEPER_LOG_LEVEL: 'debug',
    ...suiteEnv(),
    LK_TEST_KEEPER: tag,
    ...opts.env,
  };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  const args = [opts.bin ?? BIN, 'run', ...(opts.once === false ? [] : ['--once']), ...(opts.args ?? []), '--', ...opts.command];
  const [file, ...rest] = [...(opts.wrap ?? []), process.execPath, ...args];
  const child = spawn(file!, rest, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  return new Keeper(child, tag);
}

export async function emulator(ttlOverrideSeconds = 2): Promise<Emulator> {
  return startEmulator({ token: TOKEN, environmentId: 'env_integration', ttlOverrideSeconds });
}

/** A scratch folder for one test's job records; remove it with `removeScratch` in the test's teardown. */
export function scratch(): string {
  return mkdtempSync(join(tmpdir(), 'lk-it-'));
}

export function removeScratch(dir: string | undefined): void {
  if (dir) rmSync(dir, { recursive: true, force: true });
}

/**
 * A job that records `start <work_id> <ms>` and `end <work_id> <ms> <how>` lines in `$RECORD`, runs
 * for `$JOB_SECONDS` (default 30) and by default exits 0 on SIGTERM. JOB_MODE=ignore-term ignores
 * SIGTERM and starts a grandchild that ignores it too (its pid in $RECORD.grandchild).
 */
export function recordingJob(dir: string): string {
  const path = join(dir, 'job.sh');
  writeFileSync(
    path,
    `#!/usr/bin/env bash
now() { date +%s%3N; }
# Traps first, then the start record: a test that waits for the record knows the job is ready for signals.
if [ "$JOB_MODE" = "ignore-term" ]; then
  trap '' TERM
  bash -c 'trap "" TERM; echo $$ > "$RECORD.grandchild.tmp"; mv "$RECORD.grandchild.tmp" "$RECORD.grandchild"; while true; do sleep 0.1; done' &
  while [ ! -s "$RECORD.grandchild" ]; do sleep 0.01; done
  echo "start $LEASE_KEEPER_WORK_ID $(now)" >> "$RECORD"
  while true; do sleep 0.1; done
fi
trap 'echo "end $LEASE_KEEPER_WORK_ID $(now) term" >> "$RECORD"; exit 0' TERM
echo "start $LEASE_KEEPER_WORK_ID $(now)" >> "$RECORD"
end=$(( $(now) + \${JOB_SECONDS:-30} * 1000 ))
while [ "$(now)" -lt "$end" ]; do sleep 0.05 & wait $!; done
echo "end $LEASE_KEEPER_WORK_ID $(now) done" >> "$RECORD"
exit \${JOB_EXIT:-0}
`,
  );
  chmodSync(path, 0o755);
  return path;
}

export interface JobRecord {
  workId: string;
  start: number;
  end: number | null;
  how: string | null;
}

export function readRecords(file: string): JobRecord[] {
  if (!existsSync(file)) return [];
  const runs: JobRecord[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const [kind, workId, ms, how] = line.split(' ');
    if (kind === 'start') runs.push({ workId: workId!, start: Number(ms), end: null, how: null });
    if (kind === 'end') {
      const run = [...runs].reverse().find((r) => r.workId === workId && r.end === null);
      if (run) {
        run.end = Number(ms);
        run.how = how ?? null;
      }
    }
  }
  return runs;
}

/** Resolves once the job for `workId` (any, when omitted) has written its start record. */
export async function jobStarted(file: string, workId?: string, timeoutMs = 20_000): Promise<JobRecord> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const run = readRecords(file).find((r) => workId === undefined || r.workId === workId);
    if (run) return run;
    if (Date.now() > until) throw new Error(`no job start record in ${file} after ${timeoutMs} ms`);
    await sleep(20);
  }
}

/** True while a process with this pid exists (and is not a zombie). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
