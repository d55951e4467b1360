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
    guard = new StallGuard({ resolutionMs: 10, tickMs: 100, windowMs: 600, thresholdMs: 150, onStall: (i) => stalls.push(i) });
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

  it('with its default (idle-friendly) rates it still sees a stall within one tick', async () => {
    guard = new StallGuard({ windowMs: 2000 });
    const g = guard;
    await eventually(() => !g.stalled(300));
    block(400);
    await sleep(300);
    expect(g.lagMs()).toBeGreaterThanOrEqual(300);
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
