/**
 * Where a job's stdout and stderr go (LEASE_KEEPER_JOB_OUTPUT, spec §3 and §7):
 * - `inherit`: the keeper's own stdout and stderr (no line passes through the keeper);
 * - `journal`: two journald stream connections per job, speaking the stdout stream protocol of
 *   sd_journal_stream_fd(3), handed to the child as its fd 1 and 2, so no line passes through the keeper
 *   either; each carries a syslog identifier naming the work item, stderr at a higher priority;
 * - `prefix`: pipes the keeper reads, writing each line to its own stdout/stderr with the work id in front.
 * The worker asks for one job's stdio with `open()`, spawns with it, calls `started()` with the child's
 * pipes, and `close()` once the job's containment says it is gone: the end of the job is never decided by
 * EOF on its output (an escaped daemon may hold the pipes open forever).
 */
import { fstatSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import type { StdioOptions } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { LineSplitter } from './output-lines.js';

export type JobOutputMode = 'inherit' | 'prefix' | 'journal';

/** journald's socket for stdout streams (systemd-journald.socket). */
export const JOURNAL_STDOUT_SOCKET = '/run/systemd/journal/stdout';
/** syslog priorities of the two journal streams: stdout info (6), stderr err (3), as Docker's journald driver does. */
export const JOB_STDOUT_PRIORITY = 6;
export const JOB_STDERR_PRIORITY = 3;
/** `prefix` mode: longer lines are written in pieces of this many bytes (Docker splits at 16 KiB too). */
export const MAX_LINE_BYTES = 16 * 1024;

/** The SYSLOG_IDENTIFIER of a job's journal streams: `journalctl -u <unit> -t lease-keeper-job-<work_id>`. */
export function journalIdentifier(workId: string): string {
  return `lease-keeper-job-${workId}`;
}

/**
 * The header that opens a journald stdout stream, one field per line: identifier, unit id (empty: journald
 * takes the unit from the peer's cgroup), priority, level_prefix (1: a line starting `<N>` sets its own
 * priority, as under systemd's default SyslogLevelPrefix=yes), forward to syslog, to kmsg, to console (0:
 * journald's own configuration decides). See sd_journal_stream_fd(3) and journald-stream.c.
 */
export function journalStreamHeader(identifier: string, priority: number): string {
  return `${identifier}\n\n${priority}\n1\n0\n0\n0\n`;
}

/**
 * True when the keeper's stdout is journald's: JOURNAL_STREAM holds `<dev>:<inode>` of fd 1 (systemd.exec(5):
 * comparing them, not just testing that the variable is set, tells an inherited, stale variable apart).
 */
export function stdoutIsJournal(env: NodeJS.ProcessEnv, stat: () => { dev: number; ino: number } = () => fstatSync(1)): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (m === null) return false;
  try {
    const st = stat();
    return String(st.dev) === m[1] && String(st.ino) === m[2];
  } catch {
    return false;
  }
}

/** `auto` → `journal` when the keeper's stdout is journald's, else `inherit`. */
export function resolveJobOutputMode(mode: JobOutputMode | 'auto', env: NodeJS.ProcessEnv, stat?: () => { dev: number; ino: number }): JobOutputMode {
  if (mode !== 'auto') return mode;
  return stdoutIsJournal(env, stat) ? 'journal' : 'inherit';
}

export interface JobOutputOptions {
  mode: JobOutputMode;
  /** journald's stdout socket. Default /run/systemd/journal/stdout; tests point it at their own server. */
  journalSocket?: string;
  /** `prefix` mode's destinations; default process.stdout and process.stderr (asynchronous for pipes and sockets). */
  stdout?: Writable;
  stderr?: Writable;
  maxLineBytes?: number;
  /** Give up connecting to journald after this long (then inherit). Default 1000 ms. */
  connectTimeoutMs?: number;
  /** `close()`: how long what the pipes still hold may take to be copied once the job is gone. Default 2000 ms. */
  closeTimeoutMs?: number;
  /** Called once, the first time journald cannot be reached (that job and later ones may inherit). */
  onJournalUnavailable?: (err: Error, socket: string) => void;
}

/** One job's output: the stdio to spawn with, and what to do after the spawn and once the job is gone. */
export interface JobStdio {
  /** The mode in effect for this job (`inherit` when journald could not be reached). */
  readonly mode: JobOutputMode;
  /** For spawn(): stdin is always inherited. */
  readonly stdio: StdioOptions;
  /** Changes to the job's environment: JOURNAL_STREAM names the job's own journal stream, or is removed (undefined). */
  readonly env: Record<string, string | undefined>;
  /** Right after the spawn (or its failure, with nulls): the keeper's copies of the sockets are closed, pipes are read. */
  started(pipes: { stdout: Readable | null; stderr: Readable | null }): void;
  /**
   * The job is gone: copies what its pipes still hold, for at most closeTimeoutMs, then destroys them.
   * Resolves true when output was cut short (a pipe still open, held by a process outside the job, or the
   * keeper's own stdout too slow). Never rejects.
   */
  close(): Promise<boolean>;
}

/** Per keeper: hands out each job's stdio in the configured mode. */
export class JobOutput {
  readonly mode: JobOutputMode;
  readonly #opts: JobOutputOptions;
  readonly #sinks: { stdout: Sink; stderr: Sink } | null;
  /** Closes in progress, so that flush() can wait for them. */
  readonly #closing = new Set<Promise<boolean>>();
  #warned = false;

  constructor(opts: JobOutputOptions) {
    this.mode = opts.mode;
    this.#opts = opts;
    this.#sinks = opts.mode === 'prefix' ? { stdout: new Sink(opts.stdout ?? process.stdout), stderr: new Sink(opts.stderr ?? process.stderr) } : null;
  }

  /** The stdio for the job of `workId`. Never rejects: a journald that cannot be reached gives `inherit`. */
  async open(workId: string): Promise<JobStdio> {
    if (this.mode === 'inherit') return INHERIT;
    if (this.mode === 'prefix') {
      return new PrefixStdio(workId, this.#sinks!, {
        maxLineBytes: this.#opts.maxLineBytes ?? MAX_LINE_BYTES,
        closeTimeoutMs: this.#opts.closeTimeoutMs ?? 2000,
        closing: this.#closing,
      });
    }
    const path = this.#opts.journalSocket ?? JOURNAL_STDOUT_SOCKET;
    const identifier = journalIdentifier(workId);
    const timeoutMs = this.#opts.connectTimeoutMs ?? 1000;
    const out = connectJournal(path, journalStreamHeader(identifier, JOB_STDOUT_PRIORITY), timeoutMs);
    const err = connectJournal(path, journalStreamHeader(identifier, JOB_STDERR_PRIORITY), timeoutMs);
    const [o, e] = await Promise.allSettled([out, err]);
    if (o.status === 'fulfilled' && e.status === 'fulfilled') return new JournalStdio(o.value, e.value);
    for (const s of [o, e]) if (s.status === 'fulfilled') s.value.destroy();
    const reason = o.status === 'rejected' ? o.reason : (e as PromiseRejectedResult).reason;
    if (!this.#warned) {
      this.#warned = true;
      this.#opts.onJournalUnavailable?.(reason instanceof Error ? reason : new Error(String(reason)), path);
    }
    return INHERIT;
  }

  /**
   * Waits, at most `timeoutMs`, until the output of every job closed so far is copied and the keeper's
   * own stdout/stderr took it (before the process exits, which would drop what is still queued).
   */
  async flush(timeoutMs: number): Promise<void> {
    const until = performance.now() + timeoutMs;
    const left = () => Math.max(0, until - performance.now());
    if (this.#closing.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all([...this.#closing]), new Promise((resolve) => (timer = setTimeout(resolve, left())))]);
      clearTimeout(timer);
    }
    if (this.#sinks === null) return;
    while (left() > 0 && (this.#sinks.stdout.queued() > 0 || this.#sinks.stderr.queued() > 0)) await delay(Math.min(10, left()));
  }
}

const INHERIT: JobStdio = {
  mode: 'inherit',
  stdio: 'inherit',
  env: {},
  started: () => {},
  close: () => Promise.resolve(false),
};

/** Connects to journald's stdout socket and sends the stream header; the socket is then ready for a child. */
function connectJournal(path: string, header: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path });
    const timer = setTimeout(() => fail(new Error(`no connection to ${path} within ${timeoutMs} ms`)), timeoutMs);
    function fail(err: Error): void {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    }
    socket.once('error', fail);
    socket.once('connect', () => {
      socket.write(header, (err) => {
        if (err) return fail(err);
        clearTimeout(timer);
        socket.off('error', fail);
        // journald never writes back; after the hand-over, errors on the keeper's copy do not matter.
        socket.on('error', () => {});
        resolve(socket);
      });
    });
  });
}

class JournalStdio implements JobStdio {
  readonly mode = 'journal';
  readonly stdio: StdioOptions;
  readonly env: Record<string, string | undefined>;

  constructor(
    private readonly out: Socket,
    private readonly err: Socket,
  ) {
    this.stdio = ['inherit', out, err];
    // systemd.exec(5): JOURNAL_STREAM names the stream the output goes to; here the job's stderr, the
    // stream programs check before logging with `<N>` prefixes (level_prefix is on for both).
    this.env = { JOURNAL_STREAM: streamId(err) };
  }

  started(): void {
    // The child holds its own copies now (fd 1 and 2); the keeper's would only keep the streams open.
    this.out.destroy();
    this.err.destroy();
  }

  close(): Promise<boolean> {
    this.started();
    return Promise.resolve(false);
  }
}

/** `<dev>:<inode>` of a connected socket, or undefined when Node does not expose its descriptor. */
function streamId(socket: Socket): string | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return undefined;
  try {
    const st = fstatSync(fd);
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

class PrefixStdio implements JobStdio {
  readonly mode = 'prefix';
  readonly stdio: StdioOptions = ['inherit', 'pipe', 'pipe'];
  // The job's output goes to pipes, not to the keeper's journal stream: a `<N>` prefix would be printed as is.
  readonly env = { JOURNAL_STREAM: undefined };
  readonly #copies: LineCopy[] = [];
  #closed: Promise<boolean> | null = null;

  constructor(
    private readonly workId: string,
    private readonly sinks: { stdout: Sink; stderr: Sink },
    private readonly o: { maxLineBytes: number; closeTimeoutMs: number; closing: Set<Promise<boolean>> },
  ) {}

  started(pipes: { stdout: Readable | null; stderr: Readable | null }): void {
    const prefix = Buffer.from(`[${this.workId}] `);
    if (pipes.stdout) this.#copies.push(new LineCopy(pipes.stdout, this.sinks.stdout, prefix, this.o.maxLineBytes));
    if (pipes.stderr) this.#copies.push(new LineCopy(pipes.stderr, this.sinks.stderr, prefix, this.o.maxLineBytes));
  }

  close(): Promise<boolean> {
    if (this.#closed !== null) return this.#closed;
    const closed = Promise.all(this.#copies.map((c) => c.close(this.o.closeTimeoutMs))).then((cut) => cut.includes(true));
    this.#closed = closed;
    this.o.closing.add(closed);
    void closed.then(() => this.o.closing.delete(closed));
    return closed;
  }
}

/** Copies one pipe into a sink line by line, prefix in front; pauses the pipe while the sink is full. */
class LineCopy {
  readonly #splitter: LineSplitter;
  readonly #ended: Promise<void>;
  #done = false;

  constructor(
    private readonly source: Readable,
    private readonly sink: Sink,
    private readonly prefix: Buffer,
    maxLineBytes: number,
  ) {
    this.#splitter = new LineSplitter(maxLineBytes);
    this.#ended = new Promise((resolve) => {
      source.once('end', resolve);
      source.once('close', resolve);
      // A read error ends the copy like EOF does; what was read is still written.
      source.on('error', () => resolve());
    });
    void this.#ended.then(() => this.#finish());
    source.on('data', (chunk: Buffer) => {
      let ready = true;
      for (const line of this.#splitter.push(chunk)) ready = this.#write(line);
      if (!ready) {
        source.pause();
        this.sink.whenDrained(() => {
          if (!this.#done) source.resume();
        });
      }
    });
  }

  /** Resolves true when the pipe had to be cut (no EOF within `timeoutMs`). */
  async close(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const ended = await Promise.race([
      this.#ended.then(() => true),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    this.#finish();
    return !ended;
  }

  /** Writes the unfinished last line (if any) and lets go of the pipe. */
  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    const rest = this.#splitter.end();
    if (rest !== null) this.#write(rest);
    this.source.removeAllListeners('data');
    this.source.destroy();
  }

  #write(line: Buffer): boolean {
    return this.sink.write(Buffer.concat([this.prefix, line, NEWLINE]));
  }
}

const NEWLINE = Buffer.from('\n');

/**
 * One of the keeper's own streams, shared by every job: each write is one whole line, so lines of
 * different jobs never mix. One 'drain' listener however many jobs wait for it.
 */
class Sink {
  #waiting: (() => void)[] = [];
  #broken = false;

  constructor(private readonly stream: Writable) {
    stream.on('drain', () => {
      const waiting = this.#waiting;
      this.#waiting = [];
      for (const resume of waiting) resume();
    });
    // EPIPE and the like: the reader is gone. Job output is then dropped rather than crashing the keeper.
    stream.on('error', () => {
      this.#broken = true;
      this.#release();
    });
  }

  /** False when the stream's buffer is full: wait for whenDrained() before writing more. */
  write(line: Buffer): boolean {
    if (this.#broken || this.stream.destroyed) return true;
    return this.stream.write(line);
  }

  whenDrained(resume: () => void): void {
    if (this.#broken || !this.stream.writableNeedDrain) resume();
    else this.#waiting.push(resume);
  }

  /** Bytes written but not yet taken by the stream's destination. */
  queued(): number {
    return this.#broken ? 0 : this.stream.writableLength;
  }

  #release(): void {
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const resume of waiting) resume();
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
