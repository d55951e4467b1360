import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { GroupScan } from '../../src/job/group-members.js';
import { SurvivorPoll, type SurvivorWatch } from '../../src/job/survivor-poll.js';

/** A watch that asks for the tick's scan while `needsScan`, and is done once `done` is set. */
interface FakeWatch extends SurvivorWatch {
  looks: number;
  needsScan: boolean;
  done: boolean;
  seen: (GroupScan | null)[];
}

function fakeWatch(needsScan: boolean): FakeWatch {
  const w: FakeWatch = {
    looks: 0,
    needsScan,
    done: false,
    seen: [],
    look(scan) {
      w.looks++;
      if (w.needsScan) w.seen.push(scan());
      return w.done;
    },
  };
  return w;
}

let scans: number;
const scan = (): GroupScan => {
  scans++;
  return new Map([[scans, [scans]]]);
};

beforeEach(() => {
  scans = 0;
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setImmediate', 'clearImmediate'] });
});

afterEach(() => {
  vi.useRealTimers();
});

describe('SurvivorPoll', () => {
  it('looks at the groups added in one phase together, right after it, with one scan for all', () => {
    const poll = new SurvivorPoll(20, scan);
    const a = fakeWatch(true);
    const b = fakeWatch(false);
    const c = fakeWatch(true);
    for (const w of [a, b, c]) poll.add(w);
    expect(a.looks).toBe(0); // not within the phase that added them
    vi.advanceTimersToNextTimer(); // the setImmediate
    expect([a.looks, b.looks, c.looks]).toEqual([1, 1, 1]);
    expect(scans).toBe(1);
    expect(c.seen[0]).toBe(a.seen[0]);
    expect(poll.size).toBe(3);
  });

  it('takes no scan when no look asks for one', () => {
    const poll = new SurvivorPoll(20, scan);
    const a = fakeWatch(false);
    poll.add(a);
    vi.advanceTimersByTime(100);
    expect(a.looks).toBeGreaterThan(1);
    expect(scans).toBe(0);
  });

  it('looks again every pollMs on one timer, one scan per tick, until each group is done', () => {
    const poll = new SurvivorPoll(20, scan);
    const a = fakeWatch(true);
    const b = fakeWatch(true);
    poll.add(a);
    poll.add(b);
    vi.advanceTimersToNextTimer();
    expect(scans).toBe(1);
    expect(vi.getTimerCount()).toBe(1);

    vi.advanceTimersByTime(19);
    expect(a.looks).toBe(1);
    vi.advanceTimersByTime(1);
    expect([a.looks, b.looks, scans]).toEqual([2, 2, 2]);
    vi.advanceTimersByTime(40);
    expect([a.looks, b.looks, scans]).toEqual([4, 4, 4]);

    a.done = true;
    vi.advanceTimersByTime(20);
    expect([a.looks, b.looks]).toEqual([5, 5]);
    vi.advanceTimersByTime(20);
    expect([a.looks, b.looks]).toEqual([5, 6]);
    expect(poll.size).toBe(1);

    b.done = true;
    vi.advanceTimersByTime(20);
    expect(poll.size).toBe(0);
    expect(vi.getTimerCount()).toBe(0); // nothing keeps the event loop alive once every group is done
    vi.advanceTimersByTime(100);
    expect([a.looks, b.looks, scans]).toEqual([5, 7, 7]);
  });

  it('a group added while others are polled joins the shared tick after its first look', () => {
    const poll = new SurvivorPoll(20, scan);
    const a = fakeWatch(true);
    poll.add(a);
    vi.advanceTimersToNextTimer();
    vi.advanceTimersByTime(5);
    const b = fakeWatch(true);
    poll.add(b);
    vi.advanceTimersToNextTimer(); // b's first look, alone
    expect([a.looks, b.looks, scans]).toEqual([1, 1, 2]);
    vi.advanceTimersByTime(15); // a's tick, now b's as well
    expect([a.looks, b.looks, scans]).toEqual([2, 2, 3]);
    expect(vi.getTimerCount()).toBe(1);
  });

  it('a group done at its first look never gets a timer', () => {
    const poll = new SurvivorPoll(20, scan);
    const a = fakeWatch(true);
    a.done = true;
    poll.add(a);
    vi.advanceTimersToNextTimer();
    expect(a.looks).toBe(1);
    expect(poll.size).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });
});
