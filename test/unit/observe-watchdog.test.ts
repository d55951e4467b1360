import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { HealthVerdict } from '../../src/observe/health.js';
import { startWatchdog, watchdogUsecFor } from '../../src/observe/watchdog.js';

const healthyVerdict: HealthVerdict = { healthy: true, reasons: [] };

function fakeNotifier(enabled = true) {
  return { enabled, watchdog: vi.fn() };
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('watchdogUsecFor', () => {
  it('follows sd_watchdog_enabled: WATCHDOG_USEC positive, WATCHDOG_PID unset or ours', () => {
    expect(watchdogUsecFor({}, 42)).toBeNull();
    expect(watchdogUsecFor({ WATCHDOG_USEC: '30000000' }, 42)).toBe(30_000_000);
    expect(watchdogUsecFor({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '42' }, 42)).toBe(30_000_000);
    expect(watchdogUsecFor({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '41' }, 42)).toBeNull();
    expect(watchdogUsecFor({ WATCHDOG_USEC: '0' }, 42)).toBeNull();
    expect(watchdogUsecFor({ WATCHDOG_USEC: '-5' }, 42)).toBeNull();
    expect(watchdogUsecFor({ WATCHDOG_USEC: '30s' }, 42)).toBeNull();
  });
});

describe('startWatchdog', () => {
  it('pings every half of WATCHDOG_USEC while healthy', () => {
    const notifier = fakeNotifier();
    const wd = startWatchdog({ env: { WATCHDOG_USEC: '30000000' }, notifier, health: () => healthyVerdict });
    expect(wd.active).toBe(true);
    expect(wd.intervalMs).toBe(15_000);
    expect(notifier.watchdog).toHaveBeenCalledTimes(1); // at once
    vi.advanceTimersByTime(15_000);
    expect(notifier.watchdog).toHaveBeenCalledTimes(2);
    vi.advanceTimersByTime(45_000);
    expect(notifier.watchdog).toHaveBeenCalledTimes(5);
    wd.stop();
    vi.advanceTimersByTime(60_000);
    expect(notifier.watchdog).toHaveBeenCalledTimes(5);
  });

  it('stops pinging while unhealthy, reports why, and resumes when healthy again', () => {
    const notifier = fakeNotifier();
    let verdict: HealthVerdict = healthyVerdict;
    const skips: string[][] = [];
    const onResume = vi.fn();
    const wd = startWatchdog({
      env: { WATCHDOG_USEC: '2000000' },
      notifier,
      health: () => verdict,
      onSkip: (r) => skips.push(r),
      onResume,
    });
    vi.advanceTimersByTime(1000);
    expect(notifier.watchdog).toHaveBeenCalledTimes(2);

    verdict = { healthy: false, reasons: ['event loop stalled'] };
    vi.advanceTimersByTime(3000);
    expect(notifier.watchdog).toHaveBeenCalledTimes(2);
    expect(skips).toEqual([['event loop stalled'], ['event loop stalled'], ['event loop stalled']]);
    expect(onResume).not.toHaveBeenCalled();

    verdict = healthyVerdict;
    vi.advanceTimersByTime(1000);
    expect(notifier.watchdog).toHaveBeenCalledTimes(3);
    expect(onResume).toHaveBeenCalledTimes(1);
    wd.stop();
  });

  it('treats a throwing health check as unhealthy', () => {
    const notifier = fakeNotifier();
    const skips: string[][] = [];
    const wd = startWatchdog({
      env: { WATCHDOG_USEC: '2000000' },
      notifier,
      health: () => {
        throw new Error('boom');
      },
      onSkip: (r) => skips.push(r),
    });
    expect(notifier.watchdog).not.toHaveBeenCalled();
    expect(skips[0]![0]).toMatch(/boom/);
    wd.stop();
  });

  it('does nothing without WATCHDOG_USEC, for another WATCHDOG_PID, or with a disabled notifier', () => {
    const health = vi.fn(() => healthyVerdict);
    for (const [env, enabled] of [
      [{}, true],
      [{ WATCHDOG_USEC: '2000000', WATCHDOG_PID: String(process.pid + 1) }, true],
      [{ WATCHDOG_USEC: '2000000' }, false],
    ] as const) {
      const notifier = fakeNotifier(enabled);
      const wd = startWatchdog({ env, notifier, health });
      vi.advanceTimersByTime(10_000);
      expect(wd.active).toBe(false);
      expect(notifier.watchdog).not.toHaveBeenCalled();
      wd.stop();
    }
    expect(health).not.toHaveBeenCalled();
  });

  it('accepts injected timer functions', () => {
    const notifier = fakeNotifier();
    let tick: (() => void) | null = null;
    const clear = vi.fn();
    const wd = startWatchdog({
      env: { WATCHDOG_USEC: '1000000', WATCHDOG_PID: '7' },
      pid: 7,
      notifier,
      health: () => healthyVerdict,
      timers: {
        setInterval: ((fn: () => void) => {
          tick = fn;
          return { unref() {} } as unknown as NodeJS.Timeout;
        }) as unknown as typeof setInterval,
        clearInterval: clear as unknown as typeof clearInterval,
      },
    });
    expect(notifier.watchdog).toHaveBeenCalledTimes(1);
    tick!();
    tick!();
    expect(notifier.watchdog).toHaveBeenCalledTimes(3);
    wd.stop();
    wd.stop();
    expect(clear).toHaveBeenCalledTimes(1);
  });
});
