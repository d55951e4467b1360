import { afterEach, describe, expect, it } from 'vitest';
import { StallGuard } from '../../src/observe/stall.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
function block(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // busy: the event loop cannot run
  }
}
/** Waits until `pred` holds; a loaded CI box has some lag of its own, so "recovered" is checked with patience. */
async function eventually(pred: () => boolean, ms = 8000): Promise<void> {
  const end = performance.now() + ms;
  while (!pred()) {
    if (performance.now() > end) throw new Error('condition not met in time');
    await sleep(50);
  }
}

let guard: StallGuard | null = null;
afterEach(() => {
  guard?.stop();
  guard = null;
});

describe('StallGuard', () => {
  it('sees a blocked event loop, counts the episode, and recovers after the window', async () => {
    const stalls: { lagMs: number; episodes: number }[] = [];
    guard = new StallGuard({ tickMs: 100, windowMs: 600, thresholdMs: 150, onStall: (i) => stalls.push(i) });
    const g = guard;
    await eventually(() => !g.stalled(200));
    const before = g.episodes;

    block(300);
    // even before the guard's own tick runs, the stall in progress shows
    expect(g.lagMs()).toBeGreaterThanOrEqual(190);
    expect(g.stalled(100)).toBe(true);
    await sleep(150);
    expect(g.stalled(100)).toBe(true);
    expect(g.lagMs()).toBeGreaterThanOrEqual(190);
    expect(g.episodes).toBeGreaterThanOrEqual(before + 1);
    expect(stalls.some((s) => s.lagMs >= 190)).toBe(true);
    // a margin the lag fits into is not a stall
    expect(g.stalled(10_000)).toBe(false);

    // recovers once the window has passed
    await eventually(() => !g.stalled(200));
    const between = g.episodes;
    block(300);
    await sleep(150);
    expect(g.episodes).toBeGreaterThanOrEqual(between + 1);
  });

  it('with its default (idle-friendly) tick it sees any stall longer than tick + half the smallest margin', async () => {
    guard = new StallGuard({ windowMs: 2000 });
    const g = guard;
    await eventually(() => !g.stalled(300));
    // 250 ms tick + 125 ms (half of the smallest fence margin, 250 ms) + room for the tick to be early in its period
    block(500);
    await sleep(300);
    expect(g.lagMs()).toBeGreaterThanOrEqual(240); // at least stall - tick
    expect(g.stalled(250)).toBe(true); // the smallest fence margin: 250 ms
    expect(g.episodes).toBeGreaterThanOrEqual(1);
  });

  it('stop() ends measuring and is idempotent', async () => {
    guard = new StallGuard({ windowMs: 300 });
    guard.stop();
    guard.stop();
    block(200);
    expect(guard.lagMs()).toBe(0);
  });
});

/** A guard whose clock and ticks the test drives: `at(t)` sets the clock, `tick(t)` runs the interval at t. */
function manualGuard(opts: { tickMs?: number; windowMs?: number; thresholdMs?: number } = {}) {
  let t = 0;
  let callback: (() => void) | null = null;
  let cleared = false;
  const stalls: { lagMs: number; episodes: number }[] = [];
  const g = new StallGuard({
    ...opts,
    now: () => t,
    onStall: (i) => stalls.push(i),
    timers: {
      setInterval: ((fn: () => void) => {
        callback = fn;
        return { unref() {} };
      }) as unknown as typeof setInterval,
      clearInterval: (() => {
        cleared = true;
      }) as typeof clearInterval,
    },
  });
  return {
    g,
    stalls,
    cleared: () => cleared,
    at: (ms: number) => {
      t = ms;
    },
    tick: (ms: number) => {
      t = ms;
      callback!();
    },
  };
}

describe('StallGuard drift arithmetic (driven by hand)', () => {
  it('an idle loop, ticks on time: no lag', () => {
    const m = manualGuard();
    for (let t = 250; t <= 2500; t += 250) m.tick(t + 1); // 1 ms of timer jitter
    expect(m.g.lagMs()).toBeLessThanOrEqual(1);
    expect(m.g.stalled(250)).toBe(false);
    expect(m.g.episodes).toBe(0);
  });

  it('a stall that starts just as a tick is due counts in full; one that starts just after a tick, less one tick', () => {
    const m = manualGuard({ windowMs: 1000 });
    m.tick(250);
    // blocked from 500 (tick due) to 900: the tick runs at 900
    m.tick(900);
    expect(m.g.lagMs()).toBe(400);
    expect(m.stalls).toEqual([{ lagMs: 400, episodes: 1 }]);
    // back to normal; the sample leaves the window after windowMs
    for (let t = 1150; t <= 2150; t += 250) m.tick(t);
    expect(m.g.lagMs()).toBe(0);
    // blocked from 2150 (just after a tick) to 2550: the tick due at 2400 runs at 2550
    m.tick(2550);
    expect(m.g.lagMs()).toBe(150); // 400 - 250
    expect(m.g.stalled(250)).toBe(true); // > 125
    expect(m.g.stalled(400)).toBe(false);
    expect(m.g.episodes).toBe(1); // 150 is below the 200 ms episode threshold
  });

  it('a stall in progress shows before the late tick runs (another callback asking first)', () => {
    const m = manualGuard();
    m.tick(250);
    m.at(1000); // the loop was blocked since 250; the tick due at 500 has not run yet
    expect(m.g.lagMs()).toBe(500);
    expect(m.g.stalled(1000)).toBe(false);
    expect(m.g.stalled(999)).toBe(true);
  });

  it('one episode per run of samples above the threshold', () => {
    const m = manualGuard({ thresholdMs: 200 });
    m.tick(250);
    m.tick(750); // 250 late
    m.tick(1300); // 300 late: same episode
    m.tick(1550); // on time: episode over
    m.tick(2100); // 300 late: a second episode
    expect(m.stalls.map((s) => s.episodes)).toEqual([1, 2]);
    expect(m.stalls.map((s) => s.lagMs)).toEqual([250, 300]);
  });

  it('stop() clears the interval and the in-progress lag', () => {
    const m = manualGuard();
    m.tick(250);
    m.g.stop();
    expect(m.cleared()).toBe(true);
    m.at(5000);
    expect(m.g.lagMs()).toBe(0);
  });
});
