import type { HealthVerdict } from './health.js';
import type { Notifier } from './notify.js';

/**
 * The systemd watchdog, gated on health (anchors.md §4 item 6): WATCHDOG=1 every half of WATCHDOG_USEC, but only
 * while `health()` says healthy. When the keeper is stuck (event loop stalled, a lease overdue), the pings stop and
 * systemd kills it after WatchdogSec; KillMode=mixed then SIGKILLs the job too, and Restart=on-failure restarts.
 */
export interface WatchdogOptions {
  /** Read for WATCHDOG_USEC and WATCHDOG_PID (sd_watchdog_enabled(3) rules). */
  env: NodeJS.ProcessEnv;
  notifier: Pick<Notifier, 'enabled' | 'watchdog'>;
  /** Liveness (assessHealth(...) without readiness). A throwing check counts as unhealthy. */
  health: () => HealthVerdict;
  /** Called for every skipped ping (once per interval while unhealthy), with the reasons; for a warn log. */
  onSkip?: (reasons: string[]) => void;
  /** Called on the first ping after one or more skips. */
  onResume?: () => void;
  /** This process's pid, compared with WATCHDOG_PID. Default process.pid. */
  pid?: number;
  /** Timer functions; default the globals (so vi.useFakeTimers() works too). */
  timers?: { setInterval: typeof setInterval; clearInterval: typeof clearInterval };
}

export interface Watchdog {
  /** True when pings are scheduled (systemd asked for a watchdog and the notifier is enabled). */
  readonly active: boolean;
  /** Ping period in ms (half of WATCHDOG_USEC), or null when inactive. */
  readonly intervalMs: number | null;
  /** Stops the pings. Idempotent. */
  stop(): void;
}

/**
 * WATCHDOG_USEC in ms when the watchdog is meant for this process, else null: WATCHDOG_USEC must be a positive
 * integer, and WATCHDOG_PID, when set, must equal `pid` (otherwise the variables were inherited from a parent).
 */
export function watchdogUsecFor(env: NodeJS.ProcessEnv, pid: number): number | null {
  const usecText = env.WATCHDOG_USEC;
  if (!usecText || !/^\d+$/.test(usecText)) return null;
  const usec = Number(usecText);
  if (!Number.isSafeInteger(usec) || usec <= 0) return null;
  const pidText = env.WATCHDOG_PID;
  if (pidText !== undefined && pidText !== '' && Number(pidText) !== pid) return null;
  return usec;
}

export function startWatchdog(opts: WatchdogOptions): Watchdog {
  const usec = watchdogUsecFor(opts.env, opts.pid ?? process.pid);
  if (usec === null || !opts.notifier.enabled) {
    return { active: false, intervalMs: null, stop: () => {} };
  }
  const timers = opts.timers ?? { setInterval: globalThis.setInterval, clearInterval: globalThis.clearInterval };
  const intervalMs = Math.max(1, Math.floor(usec / 2000));
  let skipping = false;

  const tick = (): void => {
    let verdict: HealthVerdict;
    try {
      verdict = opts.health();
    } catch (err) {
      verdict = { healthy: false, reasons: [`health check failed: ${err instanceof Error ? err.message : String(err)}`] };
    }
    if (verdict.healthy) {
      opts.notifier.watchdog();
      if (skipping) {
        skipping = false;
        safely(() => opts.onResume?.());
      }
    } else {
      skipping = true;
      safely(() => opts.onSkip?.(verdict.reasons));
    }
  };

  let timer: ReturnType<typeof setInterval> | null = timers.setInterval(tick, intervalMs);
  // unref: the watchdog never keeps a finished keeper alive.
  (timer as { unref?: () => void }).unref?.();
  // The first ping right away: systemd may have armed the watchdog at exec time.
  tick();

  return {
    active: true,
    intervalMs,
    stop: () => {
      if (timer === null) return;
      timers.clearInterval(timer);
      timer = null;
    },
  };
}

function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    // logging hooks must not stop the watchdog
  }
}
