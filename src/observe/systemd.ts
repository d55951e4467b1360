import type { Config } from '../config/types.js';
import { monotonicClock } from '../lease/clock.js';
import { fenceMarginMs } from '../lease/timing.js';
import { assessHealth, statusLine, type HealthAssessment } from './health.js';
import { createNotifier, type Notifier } from './notify.js';
import { type KeeperEvents, type KeeperSnapshot, noEvents } from './snapshot.js';
import { StallGuard } from './stall.js';
import { startWatchdog, type Watchdog } from './watchdog.js';

/**
 * The glue between the worker and systemd: one call wires the notifier, the stall guard, the health-gated watchdog
 * and the STATUS= line to the worker's `snapshot()`. The worker does not call the notifier itself: this module
 * watches the snapshot (every `tickMs` while NOTIFY_SOCKET is set, and at once on `refresh()`) and sends
 * - `READY=1` (with STATUS=) the first time `ready` is true, unless already draining;
 * - `STOPPING=1` + `EXTEND_TIMEOUT_USEC` the first time `draining` is true, then EXTEND_TIMEOUT_USEC again every
 *   `extendEveryMs` while the keeper stays healthy, so a drain that makes progress is not SIGKILLed at
 *   TimeoutStopSec, and a stuck one is (extensions stop, the timeout lapses). systemd only looks at extensions
 *   once the original TimeoutStopSec has run out. Extensions also stop `extendMaxMs` after the drain began, so a
 *   healthy keeper that cannot finish (say, a stop report retried through an outage) cannot hold
 *   `systemctl stop` forever. While the shutdown lets jobs finish by themselves (`finishing`, LEASE_KEEPER_SHUTDOWN=
 *   finish) there are no extensions at all: a job may run for hours, and TimeoutStopSec= is the operator's bound on
 *   that wait. Once finishing turns into a drain (the next SIGTERM), extensions start, counted from then;
 * - `STATUS=` when the line changed, at most every `statusIntervalMs`;
 * - `WATCHDOG=1` every WatchdogSec/2 while healthy (watchdog.ts).
 */

/** The subset of a pino logger used here (pino's Logger fits). */
export interface ObserveLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface SystemdIntegrationOptions {
  env: NodeJS.ProcessEnv;
  snapshot: () => KeeperSnapshot;
  /** The self-fence safety margin in ms; lag above half of it counts as stalled (StallGuard.stalled). */
  marginMs: () => number;
  /** LEASE_KEEPER_CONCURRENCY, for `held/capacity` in STATUS=. */
  capacity?: number;
  log?: ObserveLog;
  /** Default `systemd-notify`. */
  notifyCommand?: string;
  /** How often the snapshot is checked for READY/STOPPING/STATUS changes, ms. Default 1000. No timer without NOTIFY_SOCKET. */
  tickMs?: number;
  /** Minimum time between two STATUS= updates, ms. Default 5000. */
  statusIntervalMs?: number;
  /** How far each EXTEND_TIMEOUT_USEC reaches while draining, ms. Default 30 000. */
  extendTimeoutMs?: number;
  /** How often the extension is renewed while draining and healthy, ms. Default a third of extendTimeoutMs. */
  extendEveryMs?: number;
  /** No more extensions this long after the drain began, ms. Default 10 min. */
  extendMaxMs?: number;
  /** Use this guard instead of creating one (it is then not stopped by close()). */
  stall?: StallGuard;
  /** Snapshot clock. Default monotonicClock.now. */
  now?: () => number;
}

export interface SystemdIntegration {
  notifier: Notifier;
  stall: StallGuard;
  watchdog: Watchdog;
  /** Current liveness + readiness (what the watchdog and /healthz use). */
  health(): HealthAssessment;
  /** Check the snapshot now (call after the first poll answered and on SIGTERM, for a prompt READY/STOPPING). */
  refresh(): void;
  /** Stops the timers and waits for queued notifications (bounded by the notifier's kill timeout). */
  close(): Promise<void>;
}

export function startSystemdIntegration(opts: SystemdIntegrationOptions): SystemdIntegration {
  const now = opts.now ?? (() => monotonicClock.now());
  const log = opts.log;
  const tickMs = opts.tickMs ?? 1000;
  const statusIntervalMs = opts.statusIntervalMs ?? 5000;
  const extendMs = opts.extendTimeoutMs ?? 30_000;
  const extendUsec = extendMs * 1000;
  const extendEveryMs = opts.extendEveryMs ?? extendMs / 3;
  const extendMaxMs = opts.extendMaxMs ?? 600_000;

  let notifyErrors = 0;
  let lastNotifyErrorLog = -Infinity;
  const notifier = createNotifier({
    env: opts.env,
    ...(opts.notifyCommand !== undefined ? { command: opts.notifyCommand } : {}),
    onError: (err) => {
      // A missing systemd-notify would fail every update: log the first, then at most once a minute.
      notifyErrors += 1;
      const t = now();
      if (t - lastNotifyErrorLog < 60_000) return;
      lastNotifyErrorLog = t;
      log?.warn({ err, failures: notifyErrors }, 'notify_failed');
    },
  });

  const ownStall = opts.stall === undefined;
  const stall =
    opts.stall ??
    new StallGuard({
      onStall: ({ lagMs, episodes }) => log?.warn({ lag_ms: lagMs, episodes }, 'event_loop_stall'),
    });

  const health = (): HealthAssessment => {
    let margin: number;
    try {
      margin = opts.marginMs();
    } catch {
      margin = 1000;
    }
    return assessHealth(opts.snapshot(), stall.stalled(margin), { nowMs: now() });
  };

  const watchdog = startWatchdog({
    env: opts.env,
    notifier,
    health,
    onSkip: (reasons) => log?.warn({ reasons }, 'watchdog_skipped'),
    onResume: () => log?.info({}, 'watchdog_resumed'),
  });

  let readySent = false;
  let stoppingSent = false;
  let lastStatus = '';
  let lastStatusAt = -Infinity;
  let lastExtendAt = -Infinity;
  let drainStartedAt = 0;
  let wasFinishing = false;

  const refresh = (): void => {
    if (!notifier.enabled) return;
    let s: KeeperSnapshot;
    try {
      s = opts.snapshot();
    } catch {
      return;
    }
    const t = now();
    const line = statusLine(s, { nowMs: t, ...(opts.capacity !== undefined ? { capacity: opts.capacity } : {}) });
    if (s.draining) {
      const finishing = s.finishing === true;
      if (!stoppingSent) {
        stoppingSent = true;
        if (finishing) notifier.send('STOPPING=1', `STATUS=${line}`);
        else notifier.send('STOPPING=1', `EXTEND_TIMEOUT_USEC=${extendUsec}`, `STATUS=${line}`);
        lastStatus = line;
        lastStatusAt = t;
        lastExtendAt = t;
        drainStartedAt = t;
        wasFinishing = finishing;
        return;
      }
      if (wasFinishing && !finishing) {
        // finish → drain: the drain's extensions start now, with their own cap, and the phase shows at once.
        wasFinishing = false;
        drainStartedAt = t;
        lastExtendAt = t;
        notifier.send(`EXTEND_TIMEOUT_USEC=${extendUsec}`, `STATUS=${line}`);
        lastStatus = line;
        lastStatusAt = t;
        return;
      }
      // Renew only while healthy: a stuck drain lets the extension lapse, and TimeoutStopSec ends it.
      if (!finishing && t - lastExtendAt >= extendEveryMs && t - drainStartedAt < extendMaxMs && safeHealthy()) {
        notifier.extendTimeout(extendUsec);
        lastExtendAt = t;
      }
    } else if (s.ready && !readySent) {
      readySent = true;
      notifier.send('READY=1', `STATUS=${line}`);
      lastStatus = line;
      lastStatusAt = t;
      return;
    }
    if (line !== lastStatus && t - lastStatusAt >= statusIntervalMs) {
      notifier.status(line);
      lastStatus = line;
      lastStatusAt = t;
    }
  };

  const safeHealthy = (): boolean => {
    try {
      return health().healthy;
    } catch {
      return false;
    }
  };

  // The snapshot is only watched for what it sends (READY/STOPPING/STATUS/EXTEND_TIMEOUT_USEC), so without
  // NOTIFY_SOCKET there is no timer at all: nothing to send (spec), and no wake-up per second for an idle keeper.
  // health() (watchdog, /healthz) and the metrics read the snapshot and the stall guard when asked, not from here.
  let timer: NodeJS.Timeout | null = null;
  if (notifier.enabled) {
    timer = setInterval(refresh, tickMs);
    timer.unref();
    refresh();
  }

  return {
    notifier,
    stall,
    watchdog,
    health,
    refresh,
    close: async () => {
      if (timer) clearInterval(timer);
      timer = null;
      watchdog.stop();
      if (ownStall) stall.stop();
      await notifier.flush();
    },
  };
}

export interface ObservabilityOptions {
  env: NodeJS.ProcessEnv;
  config: Pick<Config, 'statusAddr' | 'concurrency' | 'fenceMarginMs' | 'ttlSeconds' | 'heartbeatFraction' | 'stopGraceSeconds'>;
  snapshot: () => KeeperSnapshot;
  log?: ObserveLog;
  /** Overrides the margin derived from the config and the leases' intervals. */
  marginMs?: () => number;
  notifyCommand?: string;
}

export interface Observability {
  /** Hand these to the worker: counters and the heartbeat histogram. */
  events: KeeperEvents;
  systemd: SystemdIntegration;
  /** The status listener's url, or null when LEASE_KEEPER_STATUS_ADDR is unset. */
  statusUrl: string | null;
  /** Stops the status server, then the systemd integration. */
  close(): Promise<void>;
}

/**
 * Everything observability for `run`: systemd integration, metrics, and the /healthz + /metrics listener when
 * `config.statusAddr` is set. Rejects only when the status listener cannot bind (e.g. EADDRINUSE).
 */
export async function startObservability(opts: ObservabilityOptions): Promise<Observability> {
  const { config } = opts;
  // The tightest lease decides: granted ttl ≈ interval / fraction; before any lease, the desired ttl.
  const derivedMargin = (): number => {
    let ttlMs = config.ttlSeconds * 1000;
    for (const l of opts.snapshot().leases) {
      if (l.intervalMs !== null && config.heartbeatFraction > 0) ttlMs = Math.min(ttlMs, l.intervalMs / config.heartbeatFraction);
    }
    return fenceMarginMs(ttlMs, config.fenceMarginMs);
  };
  const systemd = startSystemdIntegration({
    env: opts.env,
    snapshot: opts.snapshot,
    marginMs: opts.marginMs ?? derivedMargin,
    capacity: config.concurrency,
    // the drain's grace plus two minutes for the stop report
    extendMaxMs: (config.stopGraceSeconds + 120) * 1000,
    ...(opts.log ? { log: opts.log } : {}),
    ...(opts.notifyCommand !== undefined ? { notifyCommand: opts.notifyCommand } : {}),
  });
  // Metrics exist to be scraped: without a status listener, prom-client (and its own event-loop monitor)
  // is not even loaded. That keeps ~10 MB and a timer per 10 ms out of the default daemon.
  let events: KeeperEvents = noEvents;
  let server: { url: string; close(): Promise<void> } | null = null;
  if (config.statusAddr) {
    try {
      const [{ createMetrics }, { startStatusServer }] = await Promise.all([import('./metrics.js'), import('./status-server.js')]);
      const metrics = createMetrics({
        snapshot: opts.snapshot,
        lagMs: () => systemd.stall.lagMs(),
        stallEpisodes: () => systemd.stall.episodes,
      });
      events = metrics;
      server = await startStatusServer({
        host: config.statusAddr.host,
        port: config.statusAddr.port,
        metrics,
        health: () => systemd.health().readiness,
        snapshot: opts.snapshot,
      });
    } catch (err) {
      await systemd.close();
      throw err;
    }
  }
  return {
    events,
    systemd,
    statusUrl: server?.url ?? null,
    close: async () => {
      await server?.close();
      await systemd.close();
    },
  };
}
