import { spawn, type ChildProcess } from 'node:child_process';

/**
 * sd_notify(3) from Node, by spawning `systemd-notify VAR=value ...`.
 *
 * Node has no AF_UNIX datagram socket in core and no pure-JS sd_notify package exists (ecosystem.md §5), so each
 * message is one short-lived `systemd-notify` child. That is why the units set `NotifyAccess=all`: systemd credits a
 * datagram to the PID that sent it (SCM_CREDENTIALS), and for a non-root service that PID is the systemd-notify
 * child, not the keeper (the unit's main PID). With `NotifyAccess=main` every READY=1 / WATCHDOG=1 would be dropped,
 * the start would time out and the watchdog would fire. systemd-notify v252 follows each message with `BARRIER=1` and
 * waits for it, so the message is attributed before the child exits (the old race of systemd/systemd#2737).
 * The price of `all`: any process of the unit could send notifications, so the job's environment never carries
 * NOTIFY_SOCKET / WATCHDOG_USEC / WATCHDOG_PID (spec §3; the job runner strips them).
 */
export interface Notifier {
  /** False when NOTIFY_SOCKET is unset or empty: every method is then a no-op and nothing is spawned. */
  readonly enabled: boolean;
  /** READY=1: configuration valid and the first poll answered (spec §7). */
  ready(): void;
  /** STATUS=text (newlines become spaces). A pending STATUS not yet sent is replaced: the latest wins. */
  status(text: string): void;
  /** WATCHDOG=1. Call it only while healthy (see watchdog.ts). */
  watchdog(): void;
  /** STOPPING=1: the keeper is draining after SIGTERM/SIGINT. */
  stopping(): void;
  /** EXTEND_TIMEOUT_USEC=usec: the current start/stop timeout gets this much more from now (if already exceeded). */
  extendTimeout(usec: number): void;
  /** Any assignments in one datagram, e.g. `send('READY=1', 'STATUS=up')`. */
  send(...assignments: string[]): void;
  /** Resolves once every message queued so far was delivered or failed. Never rejects. */
  flush(): Promise<void>;
}

export interface NotifierOptions {
  /** Read for NOTIFY_SOCKET and PATH only. */
  env: NodeJS.ProcessEnv;
  /** The helper to spawn; default `systemd-notify` (looked up on PATH). */
  command?: string;
  /** Spawn failures, non-zero exits and rejected messages. Default: ignore. Never called synchronously from a method. */
  onError?: (err: Error) => void;
  /** A child still running after this long is killed (systemd-notify's own barrier timeout is 5 s). Default 10 s. */
  killAfterMs?: number;
}

/** Messages waiting to be spawned; beyond this the oldest is dropped (coalescing keeps it far below in practice). */
const MAX_PENDING = 32;
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const ASSIGNMENT = /^[A-Z_][A-Z0-9_]*=[^\n]*$/;

const disabled: Notifier = {
  enabled: false,
  ready: () => {},
  status: () => {},
  watchdog: () => {},
  stopping: () => {},
  extendTimeout: () => {},
  send: () => {},
  flush: () => Promise.resolve(),
};

/**
 * A notifier for `env`. At most one systemd-notify child runs at a time, so messages arrive in the order sent
 * (READY=1 before STOPPING=1). A new message replaces, in its place in the queue, a pending one that sets exactly
 * the same variables (STATUS, WATCHDOG, EXTEND_TIMEOUT_USEC coalesce; the latest wins). No method ever throws.
 */
export function createNotifier(opts: NotifierOptions): Notifier {
  const socket = opts.env.NOTIFY_SOCKET;
  if (!socket) return disabled;

  const command = opts.command ?? 'systemd-notify';
  const childEnv = { NOTIFY_SOCKET: socket, PATH: opts.env.PATH || DEFAULT_PATH };
  const killAfterMs = opts.killAfterMs ?? 10_000;
  const pending: { key: string; args: string[] }[] = [];
  let inFlight: Promise<void> | null = null;
  let idleWaiters: (() => void)[] = [];

  const report = (err: Error): void => {
    if (!opts.onError) return;
    try {
      opts.onError(err);
    } catch {
      // a failing error hook must not break the caller either
    }
  };

  const enqueue = (args: string[]): void => {
    const bad = args.find((a) => !ASSIGNMENT.test(a));
    if (args.length === 0 || bad !== undefined) {
      queueMicrotask(() => report(new Error(`notify: not a VAR=value assignment: ${JSON.stringify(bad ?? '')}`)));
      return;
    }
    const key = args
      .map((a) => a.slice(0, a.indexOf('=')))
      .sort()
      .join(',');
    // Replace in place: the newest content goes out at the older message's turn (a watchdog ping is not delayed).
    const same = pending.findIndex((p) => p.key === key);
    if (same >= 0) {
      pending[same] = { key, args };
      return;
    }
    if (pending.length >= MAX_PENDING) {
      const dropped = pending.shift();
      queueMicrotask(() => report(new Error(`notify: queue full, dropped ${dropped?.key ?? ''}`)));
    }
    pending.push({ key, args });
    pump();
  };

  const pump = (): void => {
    if (inFlight) return;
    const next = pending.shift();
    if (!next) {
      const waiters = idleWaiters;
      idleWaiters = [];
      for (const w of waiters) w();
      return;
    }
    inFlight = spawnOne(next.args).then(() => {
      inFlight = null;
      pump();
    });
  };

  const spawnOne = (args: string[]): Promise<void> =>
    new Promise<void>((resolve) => {
      let stderr = '';
      let done = false;
      const finish = (err: Error | null): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) report(err);
        resolve();
      };
      let child: ChildProcess;
      try {
        child = spawn(command, args, { env: childEnv, stdio: ['ignore', 'ignore', 'pipe'] });
      } catch (err) {
        // spawn() throws synchronously only for invalid arguments; ENOENT arrives as 'error'.
        done = true;
        report(err instanceof Error ? err : new Error(String(err)));
        resolve();
        return;
      }
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        finish(new Error(`notify: ${command} did not finish within ${killAfterMs} ms`));
      }, killAfterMs);
      timer.unref();
      child.stderr?.setEncoding('utf8');
      child.stderr?.on('data', (chunk: string) => {
        if (stderr.length < 500) stderr += chunk;
      });
      child.on('error', (err) => finish(new Error(`notify: cannot run ${command}: ${err.message}`)));
      child.on('close', (code, signal) => {
        if (code === 0) finish(null);
        else {
          const why = code !== null ? `exit code ${code}` : `signal ${signal ?? '?'}`;
          finish(new Error(`notify: ${command} ${args[0] ?? ''} failed (${why}) ${stderr.trim()}`.trim()));
        }
      });
    });

  return {
    enabled: true,
    ready: () => enqueue(['READY=1']),
    status: (text: string) => enqueue([`STATUS=${String(text).replace(/[\r\n]+/g, ' ')}`]),
    watchdog: () => enqueue(['WATCHDOG=1']),
    stopping: () => enqueue(['STOPPING=1']),
    extendTimeout: (usec: number) => {
      if (!Number.isFinite(usec) || usec <= 0) {
        queueMicrotask(() => report(new Error(`notify: EXTEND_TIMEOUT_USEC must be a positive number, got ${usec}`)));
        return;
      }
      enqueue([`EXTEND_TIMEOUT_USEC=${Math.ceil(usec)}`]);
    },
    send: (...assignments: string[]) => enqueue(assignments.map(String)),
    flush: () =>
      !inFlight && pending.length === 0 ? Promise.resolve() : new Promise<void>((resolve) => idleWaiters.push(resolve)),
  };
}
