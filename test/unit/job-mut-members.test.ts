/**
 * The small parts under every containment: the SIGKILL deadline (only ever brought forward), the shared
 * survivor poll when a look fails, the /proc reading that decides who is still a member, finding setpriv
 * (the parent-death signal), and where a relative job command runs.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { hasProc, liveMembers, parseStat, processIds, readStat, scanGroups } from '../../src/job/group-members.js';
import { ProcessGroup, findSetpriv, SETPRIV_PATH } from '../../src/job/index.js';
import { KillDeadline } from '../../src/job/kill-deadline.js';
import { SurvivorPoll, type SurvivorWatch } from '../../src/job/survivor-poll.js';
import { suiteEnv } from '../support/processes.js';
import { prerequisite } from '../support/prerequisites.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lk-members-'));
});
afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
  rmSync(dir, { recursive: true, force: true });
});

describe('KillDeadline', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
  });

  it('kills at the time set, not before, once', () => {
    const kill = vi.fn();
    const d = new KillDeadline(kill);
    expect(d.atMs).toBe(Infinity);
    const t0 = performance.now();
    d.bringForward(t0 + 100);
    expect(d.atMs).toBe(t0 + 100);
    vi.advanceTimersByTime(99);
    expect(kill).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(kill).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(10_000);
    expect(kill).toHaveBeenCalledTimes(1);
  });

  it('a later time never postpones it; an earlier one brings it forward, with one kill and one timer', () => {
    const kill = vi.fn();
    const d = new KillDeadline(kill);
    const t0 = performance.now();
    d.bringForward(t0 + 100);
    d.bringForward(t0 + 500);
    expect(d.atMs).toBe(t0 + 100);
    d.bringForward(t0 + 40);
    expect(d.atMs).toBe(t0 + 40);
    expect(vi.getTimerCount()).toBe(1);
    vi.advanceTimersByTime(40);
    expect(kill).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(1_000);
    expect(kill).toHaveBeenCalledTimes(1);
  });

  it('a time already past kills at once', () => {
    const kill = vi.fn();
    const d = new KillDeadline(kill);
    d.bringForward(performance.now() - 1_000);
    vi.advanceTimersByTime(0);
    expect(kill).toHaveBeenCalledTimes(1);
  });

  it('cancel: no kill, no timer left', () => {
    const kill = vi.fn();
    const d = new KillDeadline(kill);
    d.bringForward(performance.now() + 100);
    d.cancel();
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(1_000);
    expect(kill).not.toHaveBeenCalled();
  });
});

describe('SurvivorPoll: a look that throws', () => {
  it('the error surfaces on its own, and the other groups are still looked at and polled', () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setImmediate', 'clearImmediate'] });
    const thrown: (() => void)[] = [];
    vi.spyOn(process, 'nextTick').mockImplementation(((fn: () => void) => {
      thrown.push(fn);
    }) as typeof process.nextTick);
    const poll = new SurvivorPoll(20, () => new Map());
    let looks = 0;
    const bad: SurvivorWatch = {
      look: () => {
        throw new Error('look failed');
      },
    };
    const good: SurvivorWatch = { look: () => (looks++, false) };
    poll.add(bad);
    poll.add(good);
    vi.advanceTimersToNextTimer();
    expect(looks).toBe(1);
    expect(thrown).toHaveLength(1);
    expect(() => thrown[0]!()).toThrow('look failed');
    // The failing group is not dropped: it is looked at again with the others.
    expect(poll.size).toBe(2);
    vi.advanceTimersByTime(20);
    expect(looks).toBe(2);
    expect(thrown).toHaveLength(2);
  });

  it('uses the /proc scan by default', () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setImmediate', 'clearImmediate'] });
    const poll = new SurvivorPoll(20);
    let seen: ReturnType<typeof scanGroups> | undefined;
    poll.add({ look: (scan) => ((seen = scan()), true) });
    vi.advanceTimersToNextTimer();
    expect(seen?.get(readStat(process.pid)!.pgrp)).toContain(process.pid);
  });
});

describe('reading /proc', () => {
  it('parseStat refuses what is not a stat line', () => {
    expect(parseStat('x (sh) S 1 2 3')).toBeNull();
    expect(parseStat('12 (sh) S x 2 3')).toBeNull();
    expect(parseStat('12 (sh) S 1 x 3')).toBeNull();
    expect(parseStat('12 sh) S 1 2 3')).toBeNull();
    expect(parseStat('12 (sh S 1 2 3')).toBeNull();
    expect(parseStat('12 (sh) S 1 2 3')).toEqual({ pid: 12, state: 'S', ppid: 1, pgrp: 2, startTime: -1 });
  });

  it('readStat of a process that is not there is null; our own is read', () => {
    expect(readStat(2 ** 22 + 7)).toBeNull();
    expect(readStat(process.pid)).toMatchObject({ pid: process.pid, ppid: process.ppid });
    expect(hasProc()).toBe(true);
  });

  it('processIds lists every process directory of /proc, and nothing else', () => {
    const ids = processIds()!;
    expect(ids.every((id) => Number.isInteger(id) && id > 0)).toBe(true);
    expect(ids).toContain(process.pid);
    expect(ids).toContain(1);
    // /proc/self, /proc/sys and the like are not processes.
    expect(readdirSync('/proc').filter((n) => !/^\d+$/.test(n)).length).toBeGreaterThan(0);
  });

  it('a member found last time that is now in another group no longer counts for this one', () => {
    const holder = spawn('/bin/sleep', ['30'], { detached: true, stdio: 'ignore' });
    try {
      const pgid = holder.pid!;
      let scans = 0;
      const empty = () => (scans++, new Map());
      expect(liveMembers(pgid, [pgid], empty)).toEqual([pgid]);
      expect(scans).toBe(0);
      // Our own pid is live, but in another group: as a "known member" of the holder's group it does not count.
      expect(liveMembers(pgid, [process.pid], empty)).toEqual([]);
      expect(scans).toBe(1);
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('without /proc (the scan gives null) an existing group counts as live through its id', () => {
    const own = readStat(process.pid)!.pgrp;
    expect(liveMembers(own, [], () => null)).toEqual([own]);
  });

  it('without /proc, a group whose member changed user (EPERM) counts as live; another error is thrown', () => {
    let answer = 'EPERM';
    vi.spyOn(process, 'kill').mockImplementation(() => {
      throw Object.assign(new Error(`kill ${answer}`), { code: answer });
    });
    expect(liveMembers(4242, [], () => null)).toEqual([4242]);
    answer = 'EINVAL';
    expect(() => liveMembers(4242, [], () => null)).toThrow('kill EINVAL');
  });

  it('the scan lists every live member of a group', async () => {
    const holder = spawn('/bin/sh', ['-c', '/bin/sleep 30 & exec /bin/sleep 30'], { detached: true, stdio: 'ignore' });
    try {
      const pgid = holder.pid!;
      const until = performance.now() + 5_000;
      while ((scanGroups()!.get(pgid) ?? []).length < 2) {
        if (performance.now() > until) throw new Error('the two sleeps never showed');
        await new Promise((r) => setTimeout(r, 10));
      }
      expect(scanGroups()!.get(pgid)!.length).toBe(2);
      expect(scanGroups()!.get(pgid)).toContain(pgid);
    } finally {
      try {
        process.kill(-holder.pid!, 'SIGKILL');
      } catch {
        // gone
      }
    }
  });

  it('a scan that does not know the group: no members', () => {
    const own = readStat(process.pid)!.pgrp;
    expect(liveMembers(own, [], () => new Map([[own + 1, [1]]]))).toEqual([]);
  });
});

describe('findSetpriv', () => {
  it('an executable file is taken; a missing or non-executable one is not', () => {
    const exe = join(dir, 'setpriv');
    writeFileSync(exe, '#!/bin/sh\n');
    chmodSync(exe, 0o644);
    expect(findSetpriv(exe)).toBeNull();
    chmodSync(exe, 0o755);
    expect(findSetpriv(exe)).toBe(exe);
    expect(findSetpriv(join(dir, 'none'))).toBeNull();
  });

  it.runIf(prerequisite('setpriv', findSetpriv(SETPRIV_PATH) !== null ? null : 'setpriv not found (Debian: util-linux)'))('looks at /usr/bin/setpriv by default', () => {
    expect(SETPRIV_PATH).toBe('/usr/bin/setpriv');
    expect(findSetpriv()).toBe('/usr/bin/setpriv');
  });
});

describe('where the job runs', () => {
  it('a relative command is found from the job working directory and runs there', async () => {
    const out = join(dir, 'pwd');
    writeFileSync(join(dir, 'job.sh'), `#!/bin/sh\npwd > ${out}\n`, { mode: 0o755 });
    const g = ProcessGroup.start({ command: ['./job.sh'], env: { PATH: '/usr/bin:/bin', ...suiteEnv() }, cwd: dir }, { setpriv: null });
    try {
      expect(await g.exited).toEqual({ code: 0, signal: null });
      expect(readFileSync(out, 'utf8').trim()).toBe(dir);
    } finally {
      g.kill();
      await g.empty;
    }
  });
});
