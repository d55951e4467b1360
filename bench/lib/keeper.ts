// Keepers as a user runs them: the executable bin/lease-keeper, its log (pino JSON lines) in a file.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, readSync } from 'node:fs';
import { dirname } from 'node:path';
import { paths } from './build.js';
import { keeperCgroup, removeCgroupTree } from './cgroups.js';
import type { Emulator } from './emulator.js';
import { track } from './proc.js';
import { idleSleep } from './time.js';

/** One pino line of a keeper's log. */
export interface LogLine {
  msg: string;
  time: string;
  work_id?: string;
  [field: string]: unknown;
}

export interface KeeperOptions {
  workerId: string;
  concurrency?: number;
  command: string[];
  logFile: string;
  env?: Record<string, string>;
  /** Node flags (e.g. --cpu-prof, not allowed in NODE_OPTIONS): run node with them on the same script. */
  nodeArgs?: string[];
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Keeper {
  pid: number;
  workerId: string;
  logFile: string;
  spawnedAt: number;
  exited: Promise<Exit>;
  tail: LogTail;
  alive(): boolean;
  signal(sig: NodeJS.Signals): void;
  /** SIGTERM (drain), then a second one (kill the job groups, exit at once), then SIGKILL. */
  stop(o?: { drainMs?: number; timeoutMs?: number }): Promise<Exit>;
}

const liveKeepers = new Set<Keeper>();

/**
 * Spawns `bin/lease-keeper run -- <command>` with a clean environment, its stdout and stderr (pino JSON
 * lines, and the jobs' inherited output) going to `logFile`.
 */
export function spawnKeeper(emu: Emulator, { workerId, concurrency = 1, command, logFile, env = {}, nodeArgs }: KeeperOptions): Keeper {
  mkdirSync(dirname(logFile), { recursive: true });
  const fd = openSync(logFile, 'w');
  const fullEnv: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    QODER_API_URL: emu.url,
    QODER_PAT: emu.token,
    QODER_ENVIRONMENT_ID: emu.environmentId,
    LEASE_KEEPER_WORKER_ID: workerId,
    LEASE_KEEPER_CONCURRENCY: String(concurrency),
    LEASE_KEEPER_LOG_LEVEL: 'info',
    ...env,
  };
  const spawnedAt = Date.now();
  const [file, argv] = nodeArgs ? [process.execPath, [...nodeArgs, paths.bin]] : [paths.bin, []];
  const child = spawn(file, [...argv, 'run', '--', ...command], { env: fullEnv, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const pid = track(child.pid);
  const exited = new Promise<Exit>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  const running = (): boolean => child.exitCode === null && child.signalCode === null;
  const handle: Keeper = {
    pid,
    workerId,
    logFile,
    spawnedAt,
    exited,
    tail: new LogTail(logFile),
    alive: running,
    signal(sig) {
      if (running()) child.kill(sig);
    },
    async stop({ drainMs = 0, timeoutMs = 15_000 } = {}) {
      this.signal('SIGTERM');
      if (drainMs > 0) await Promise.race([exited, idleSleep(drainMs)]);
      this.signal('SIGTERM');
      let r = await Promise.race([exited, idleSleep(timeoutMs).then(() => null)]);
      if (r === null) {
        this.signal('SIGKILL');
        r = await exited;
      }
      // Ended at once (a second SIGTERM), a keeper leaves its job cgroups to the next one's start-up sweep.
      removeCgroupTree(keeperCgroup(workerId));
      return r;
    },
  };
  liveKeepers.add(handle);
  void exited.then(() => liveKeepers.delete(handle));
  return handle;
}

/** Stops every keeper still running (after a failure): each kills its job groups on the second SIGTERM. */
export async function stopAllKeepers(): Promise<void> {
  await Promise.all([...liveKeepers].map((k) => k.stop({ timeoutMs: 5000 })));
}

/** Reads a growing file of JSON lines incrementally; counts lines by `msg` as they come. */
export class LogTail {
  readonly lines: LogLine[] = [];
  private offset = 0;
  private partial = '';
  private readonly counts = new Map<string, number>();

  constructor(readonly file: string) {}

  poll(): LogLine[] {
    if (!existsSync(this.file)) return [];
    const fd = openSync(this.file, 'r');
    const fresh: LogLine[] = [];
    try {
      const size = fstatSync(fd).size;
      if (size > this.offset) {
        const buf = Buffer.alloc(size - this.offset);
        readSync(fd, buf, 0, buf.length, this.offset);
        this.offset = size;
        const parts = (this.partial + buf.toString('utf8')).split('\n');
        this.partial = parts.pop() ?? '';
        for (const raw of parts) {
          if (!raw.startsWith('{')) continue;
          try {
            const l = JSON.parse(raw) as LogLine;
            this.lines.push(l);
            this.counts.set(l.msg, (this.counts.get(l.msg) ?? 0) + 1);
            fresh.push(l);
          } catch {
            /* a job's own output */
          }
        }
      }
    } finally {
      closeSync(fd);
    }
    return fresh;
  }

  count(msg: string): number {
    return this.counts.get(msg) ?? 0;
  }
}

/** Milliseconds since the epoch of a pino ISO `time`. */
export const logMs = (line: LogLine): number => Date.parse(line.time);

/** One line of a trap job's record file (bench/jobs/trap-job.sh): kind, work id, time. */
export interface JobRecord {
  kind: string;
  workId: string;
  ms: number;
  extra: string | undefined;
}

export function readRecord(file: string): JobRecord[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [kind = '', workId = '', t = '', extra] = l.split(' ');
      return { kind, workId, ms: Number(t.replace(',', '.')) * 1000, extra };
    });
}
