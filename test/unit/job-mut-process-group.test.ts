/**
 * ProcessGroup's promises at the edges real jobs rarely reach on their own: a leader whose group is not
 * formed yet, a group proven gone whose id may be reused, members outside the group, a group that cannot
 * be signalled (EPERM), a SIGKILL that does not take at once, and no timer left once the job is gone.
 * The leader is a stand-in (the `spawn` seam): an EventEmitter with the pid of a real `sleep` that leads
 * its own group, or with a pid above pid_max, which no process and no group can ever have. Where the
 * kernel cannot be made to answer (EPERM, a SIGKILL that is not taken), process.kill is stubbed for that
 * group only.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { GroupScan } from '../../src/job/group-members.js';
import { ProcessGroup, SpawnError, type OutsideMembers, type ProcessGroupDeps } from '../../src/job/index.js';
import { suiteEnv } from '../support/processes.js';
import { catchSpawn } from '../support/spawn-error.js';

const PATH_ENV = { PATH: '/usr/bin:/bin', ...suiteEnv() };
/** Above the kernel's largest pid_max (2^22): no process, and so no process group, has this id. */
const NO_GROUP = 2 ** 22 + 4321;

const holders: ChildProcess[] = [];
const groups: { g: ProcessGroup; leader: EventEmitter }[] = [];
const outsides: { now: number[] }[] = [];
const realKill = process.kill.bind(process);

afterEach(async () => {
  vi.useRealTimers();
  vi.restoreAllMocks();
  for (const h of holders.splice(0)) {
    try {
      realKill(-h.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  }
  // A stand-in leader that never "exited" would keep its group's promises pending: report its exit, with
  // nothing left outside the group.
  for (const o of outsides.splice(0)) o.now = [];
  for (const { g, leader } of groups.splice(0)) {
    leader.emit('exit', null, 'SIGKILL');
    await Promise.race([g.empty, sleep(5_000)]);
  }
});

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function within<T>(what: string, p: Promise<T>, ms = 5_000): Promise<T> {
  return Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`timed out: ${what}`)))]);
}

/** A real process leading its own group, standing in for the job's members. */
function holder(): number {
  const h = spawn('/bin/sleep', ['60'], { detached: true, stdio: 'ignore' });
  holders.push(h);
  return h.pid!;
}

type FakeLeader = EventEmitter & { pid: number | undefined; stdout: PassThrough | null; stderr: PassThrough | null };

function fakeLeader(pid: number | undefined, pipes = false): FakeLeader {
  return Object.assign(new EventEmitter(), { pid, stdout: pipes ? new PassThrough() : null, stderr: pipes ? new PassThrough() : null });
}

/** A ProcessGroup whose leader is a stand-in with `pid`; `leader.emit('exit', code, signal)` reports its exit. */
function startFake(pid: number, deps: ProcessGroupDeps = {}): { g: ProcessGroup; leader: FakeLeader } {
  const leader = fakeLeader(pid);
  const g = ProcessGroup.start({ command: ['/bin/true'], env: PATH_ENV }, { setpriv: null, spawn: () => leader as unknown as ChildProcess, ...deps });
  groups.push({ g, leader });
  return { g, leader };
}

/** Members outside the group, as the environment tag finds them. */
function outside(live: number[], delivers = true): OutsideMembers & { live: () => number[]; calls: [string, number | null][]; now: number[] } {
  const o = {
    now: live,
    calls: [] as [string, number | null][],
    signal(signal: NodeJS.Signals, signalled: number | null) {
      o.calls.push([signal, signalled]);
      return delivers;
    },
    live: () => o.now,
  };
  outsides.push(o);
  return o;
}

/** process.kill, except for group `pgid`, where `answer` decides (an Error is thrown, 'ok' pretends delivery, 'real' delivers). */
function stubGroupKill(pgid: number, answer: (signal: string | number | undefined) => Error | 'ok' | 'real'): { calls: { signal: string | number | undefined; atMs: number }[] } {
  const seen = { calls: [] as { signal: string | number | undefined; atMs: number }[] };
  vi.spyOn(process, 'kill').mockImplementation((pid: number, signal?: string | number) => {
    if (pid !== -pgid) return realKill(pid, signal);
    seen.calls.push({ signal, atMs: performance.now() });
    const a = answer(signal);
    if (a instanceof Error) throw a;
    if (a === 'ok') return true;
    return realKill(pid, signal);
  });
  return seen;
}

const errno = (code: string) => Object.assign(new Error(`kill ${code}`), { code });

describe('ProcessGroup: who counts as alive', () => {
  it("the leader counts until its exit is reported, even when no process of the group can be found", async () => {
    const { g, leader } = startFake(NO_GROUP);
    expect(g.isAlive()).toBe(true);
    expect(g.where).toEqual({ pgid: NO_GROUP });
    expect(g.accounting()).toBeNull();
    leader.emit('exit', 0, null);
    expect(await g.exited).toEqual({ code: 0, signal: null });
    await within('empty', g.empty);
    expect(g.isAlive()).toBe(false);
  });

  it('members outside the group keep the job alive after its group is gone, and empty it once they are gone', async () => {
    const o = outside([NO_GROUP + 1]);
    const { g, leader } = startFake(NO_GROUP, { outside: o, pollMs: 10 });
    leader.emit('exit', 0, null);
    await sleep(100);
    expect(g.isAlive()).toBe(true);
    o.now = [];
    await within('empty once the outside members are gone', g.empty);
    expect(g.isAlive()).toBe(false);
  });

  it('a member outside the group counts while the group still exists too', async () => {
    const pgid = holder();
    const o = outside([]);
    const { g, leader } = startFake(pgid, { outside: o, pollMs: 10 });
    leader.emit('exit', 0, null);
    await sleep(50);
    realKill(-pgid, 'SIGKILL');
    o.now = [NO_GROUP + 1];
    await sleep(200);
    expect(g.isAlive()).toBe(true);
    o.now = [];
    await within('empty', g.empty);
  });

  it('once empty it stays empty: the id may belong to someone else now, so it is neither asked about nor signalled', async () => {
    // The group "empties" by the scan's word (as with a zombie-only group), while a process still has its id.
    const pgid = holder();
    let members: number[] = [];
    const scan = (): GroupScan => new Map([[pgid, members]]);
    const { g, leader } = startFake(pgid, { scanGroups: scan, pollMs: 10 });
    leader.emit('exit', 0, null);
    await within('empty', g.empty);
    members = [pgid];
    expect(g.isAlive()).toBe(false);
    expect(g.interrupt('SIGTERM')).toBe(false);
    expect(g.kill()).toBe(false);
    expect(g.lastSignal).toBeNull();
    await sleep(50);
    expect(holders[0]!.exitCode === null && holders[0]!.signalCode === null).toBe(true);
  });
});

describe('ProcessGroup: a fresh answer after the leader exited', () => {
  /** A group whose scan names a member that is not there, until `lingering` is cleared; polled once a second. */
  function lingeringGroup(deps: ProcessGroupDeps = {}) {
    const pgid = holder();
    const state = { lingering: true, scans: 0 };
    const scan = (): GroupScan => (state.scans++, new Map(state.lingering ? [[pgid, [NO_GROUP]]] : []));
    const { g, leader } = startFake(pgid, { scanGroups: scan, pollMs: 1_000, ...deps });
    return { g, leader, state };
  }

  // Each twice: the group alone, and with members outside it (a tag scan) that are gone as well.
  const withOutside: [string, () => ProcessGroupDeps][] = [
    ['', () => ({})],
    [', with members outside the group gone as well', () => ({ outside: outside([]) })],
  ];

  it.each(withOutside)('isAlive() looks again: a group whose last member is gone is not alive, even before the poll noticed%s', async (_, deps) => {
    const { g, leader, state } = lingeringGroup(deps());
    leader.emit('exit', 0, null);
    await sleep(30); // the first look, right after the exit
    expect(g.isAlive()).toBe(true);
    state.lingering = false;
    expect(g.isAlive()).toBe(false);
  });

  it.each(withOutside)('a group that went with its leader is empty at once, not a poll later%s', async (_, deps) => {
    const { g, leader } = startFake(NO_GROUP, deps());
    let emptied = false;
    void g.empty.then(() => (emptied = true));
    leader.emit('exit', 0, null);
    await Promise.resolve();
    expect(emptied).toBe(true);
  });

  it('once empty the group is no longer looked at', async () => {
    const { g, leader, state } = lingeringGroup({ pollMs: 10 });
    leader.emit('exit', 0, null);
    await sleep(30);
    state.lingering = false;
    await within('empty', g.empty);
    const scans = state.scans;
    await sleep(100);
    expect(state.scans).toBe(scans);
  });
});

describe('ProcessGroup: signalling', () => {
  it('a group that a signal found gone after the leader exited is never signalled or probed again', async () => {
    const pgid = holder();
    const o = outside([NO_GROUP + 1]);
    const { g, leader } = startFake(pgid, { outside: o, pollMs: 10 });
    leader.emit('exit', 0, null);
    const gone = new Promise((r) => holders[0]!.once('exit', r));
    realKill(-pgid, 'SIGKILL');
    await gone;
    await sleep(20);
    expect(g.interrupt('SIGTERM')).toBe(true); // the outside member; the group gave ESRCH
    const seen = stubGroupKill(pgid, () => 'ok');
    await sleep(50); // looks
    expect(g.interrupt('SIGTERM')).toBe(true);
    expect(seen.calls).toEqual([]);
    o.now = [];
    await within('empty', g.empty);
  });

  it('a group not formed yet (ESRCH before the leader exited) is tried again on the next signal', async () => {
    let formed = false;
    const seen = stubGroupKill(NO_GROUP, () => (formed ? 'ok' : errno('ESRCH')));
    const { g } = startFake(NO_GROUP);
    expect(g.interrupt('SIGTERM')).toBe(false);
    expect(g.lastSignal).toBeNull();
    formed = true;
    const t0 = performance.now();
    expect(g.interrupt('SIGTERM')).toBe(true);
    expect(seen.calls.map((c) => c.signal)).toEqual(['SIGTERM', 'SIGTERM']);
    expect(g.lastSignal?.signal).toBe('SIGTERM');
    expect(g.lastSignal!.atMs).toBeGreaterThanOrEqual(t0);
  });

  it('a group proven gone after the leader exited is never signalled or probed again; its outside members still are', async () => {
    const o = outside([NO_GROUP + 1]);
    const { g, leader } = startFake(NO_GROUP, { outside: o, pollMs: 10 });
    leader.emit('exit', 0, null);
    // From here on, a kill(-NO_GROUP, ...) would reach whatever reused the id: record any.
    const seen = stubGroupKill(NO_GROUP, () => 'ok');
    await sleep(100); // several looks
    expect(g.interrupt('SIGTERM')).toBe(true);
    expect(o.calls).toEqual([['SIGTERM', null]]);
    expect(g.lastSignal?.signal).toBe('SIGTERM');
    expect(seen.calls).toEqual([]);
    o.now = [];
    await within('empty', g.empty);
  });

  it('a group that got the signal is named to the outside members, so that they skip its members', async () => {
    const pgid = holder();
    const o = outside([], false);
    const { g } = startFake(pgid, { outside: o });
    expect(g.interrupt('SIGCONT')).toBe(true);
    expect(o.calls).toEqual([['SIGCONT', pgid]]);
  });

  it('nothing delivered anywhere: false, and no signal is recorded', async () => {
    const o = outside([NO_GROUP + 1], false);
    const { g, leader } = startFake(NO_GROUP, { outside: o, pollMs: 10 });
    leader.emit('exit', 0, null);
    await sleep(30);
    expect(g.interrupt('SIGTERM')).toBe(false);
    expect(g.lastSignal).toBeNull();
    o.now = [];
    await within('empty', g.empty);
  });

  it('EPERM from the group is thrown, after the outside members got the signal', () => {
    stubGroupKill(NO_GROUP, () => errno('EPERM'));
    const o = outside([NO_GROUP + 1]);
    const { g } = startFake(NO_GROUP, { outside: o });
    expect(() => g.interrupt('SIGTERM')).toThrow('kill EPERM');
    expect(o.calls).toEqual([['SIGTERM', null]]);
    expect(g.lastSignal?.signal).toBe('SIGTERM');
  });
});

describe('ProcessGroup: stop when the group cannot be signalled', () => {
  it('stop() tries SIGKILL at once and rejects with the EPERM, without waiting for the grace', async () => {
    const seen = stubGroupKill(NO_GROUP, () => errno('EPERM'));
    const { g } = startFake(NO_GROUP);
    const t0 = performance.now();
    await expect(within('stop to reject', g.stop({ signal: 'SIGTERM', graceMs: 20_000 }))).rejects.toThrow('kill EPERM');
    expect(performance.now() - t0).toBeLessThan(2_000);
    expect(seen.calls.map((c) => c.signal)).toEqual(['SIGTERM', 'SIGKILL']);
  });

  it('a stop whose SIGKILL at the grace meets EPERM rejects then', async () => {
    const seen = stubGroupKill(NO_GROUP, (signal) => (signal === 'SIGKILL' ? errno('EPERM') : 'ok'));
    const { g } = startFake(NO_GROUP);
    const t0 = performance.now();
    await expect(within('stop to reject', g.stop({ signal: 'SIGTERM', graceMs: 200 }))).rejects.toThrow('kill EPERM');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(150);
    expect(seen.calls.map((c) => c.signal)).toEqual(['SIGTERM', 'SIGKILL']);
  });

  it('a planned SIGKILL (killAt, no stop) that meets EPERM does not crash the keeper', async () => {
    const seen = stubGroupKill(NO_GROUP, () => errno('EPERM'));
    const { g } = startFake(NO_GROUP);
    g.killAt(performance.now() + 20);
    await sleep(150);
    expect(seen.calls.map((c) => c.signal)).toEqual(['SIGKILL']);
  });
});

describe('ProcessGroup: the SIGKILL', () => {
  it('repeats the SIGKILL every 500 ms while members linger, never more often, and not before the deadline', async () => {
    const pgid = holder();
    let t0 = Infinity;
    // For 1.1 s the SIGKILLs "do not take" (a fork racing the kill); then one is delivered. SIGTERM is ignored.
    const seen = stubGroupKill(pgid, (signal) => {
      if (signal === 'SIGKILL') return performance.now() - t0 < 1_100 ? 'ok' : 'real';
      return signal === 0 ? 'real' : 'ok';
    });
    const { g, leader } = startFake(pgid, { pollMs: 10 });
    leader.emit('exit', 0, null);
    t0 = performance.now();
    const stopped = g.stop({ signal: 'SIGTERM', graceMs: 200 });
    await within('the group to empty', stopped, 10_000);
    const sigkills = seen.calls.filter((c) => c.signal === 'SIGKILL').map((c) => c.atMs - t0);
    expect(sigkills[0]).toBeGreaterThanOrEqual(190);
    // The deadline's own kill, at least one repeat, then the one delivered (after 1.1 s).
    expect(sigkills.length).toBeGreaterThanOrEqual(3);
    expect(sigkills.at(-1)).toBeGreaterThanOrEqual(1_100);
    expect(sigkills.at(-1)).toBeLessThan(5_000);
    // At the deadline the timer and a late look may both send one, within moments; after that never more
    // often than every 500 ms.
    const gaps = sigkills.slice(1).map((ms, i) => ms - sigkills[i]!);
    expect(gaps[0]! < 200 || gaps[0]! >= 490, `gaps ${gaps.join(', ')}`).toBe(true);
    for (const gap of gaps.slice(1)) expect(gap).toBeGreaterThanOrEqual(490);
  });

  it('once the job is gone no SIGKILL timer is left (the keeper can exit at once), and none is set after', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { g, leader } = startFake(NO_GROUP);
    const stopped = g.stop({ signal: 'SIGTERM', graceMs: 30_000 });
    expect(vi.getTimerCount()).toBe(1);
    leader.emit('exit', null, 'SIGTERM');
    expect(await stopped).toEqual({ code: null, signal: 'SIGTERM' });
    expect(vi.getTimerCount()).toBe(0);
    g.killAt(performance.now() + 1_000);
    g.escalate();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('looks for survivors every 20 ms by default', async () => {
    // The scan keeps naming a member the group does not have: every look needs a new scan.
    const pgid = holder();
    let scans = 0;
    let lingering = true;
    const scan = (): GroupScan => (scans++, new Map(lingering ? [[pgid, [NO_GROUP]]] : []));
    const { g, leader } = startFake(pgid, { scanGroups: scan });
    leader.emit('exit', 0, null);
    await sleep(400);
    const seen = scans;
    lingering = false;
    await within('empty', g.empty);
    expect(seen).toBeGreaterThanOrEqual(3);
    expect(seen).toBeLessThanOrEqual(25);
  });
});

describe('starting the leader', () => {
  function capture(pipes = false): { spawn: NonNullable<ProcessGroupDeps['spawn']>; calls: { file: string; args: readonly string[]; options: SpawnOptions }[] } {
    const calls: { file: string; args: readonly string[]; options: SpawnOptions }[] = [];
    return {
      calls,
      spawn: (file, args, options) => {
        calls.push({ file, args, options });
        const leader = fakeLeader(NO_GROUP, pipes);
        queueMicrotask(() => leader.emit('exit', 0, null));
        return leader as unknown as ChildProcess;
      },
    };
  }

  it("spawns detached (its own group) with the job's environment as given, the keeper's cwd and stdio by default", async () => {
    const c = capture();
    const env = { ...PATH_ENV, LK_X: '1' };
    const g = ProcessGroup.start({ command: ['sh', '-c', 'exit 0'], env }, { setpriv: null, spawn: c.spawn });
    expect(c.calls).toHaveLength(1);
    expect(c.calls[0]!.file).toBe('/usr/bin/sh');
    expect(c.calls[0]!.args).toEqual(['-c', 'exit 0']);
    expect(c.calls[0]!.options).toEqual({ detached: true, stdio: 'inherit', env, cwd: process.cwd() });
    expect(c.calls[0]!.options.env).toBe(env);
    expect(g.stdout).toBeNull();
    await within('empty', g.empty);
  });

  it('passes the given cwd and stdio, and hands out the pipes', async () => {
    const c = capture(true);
    const g = ProcessGroup.start({ command: ['/bin/true'], env: PATH_ENV, cwd: '/tmp', stdio: ['inherit', 'pipe', 'pipe'] }, { setpriv: '/usr/bin/setpriv', spawn: c.spawn });
    expect(c.calls[0]!.file).toBe('/usr/bin/setpriv');
    expect(c.calls[0]!.options).toMatchObject({ cwd: '/tmp', stdio: ['inherit', 'pipe', 'pipe'] });
    expect(g.stdout).toBeInstanceOf(PassThrough);
    expect(g.stderr).toBeInstanceOf(PassThrough);
    expect(g.parentDeathSignal).toBe(true);
    await within('empty', g.empty);
  });

  it('an empty command is refused with 127 before anything is spawned', () => {
    const c = capture();
    const err = catchSpawn(() => ProcessGroup.start({ command: [], env: PATH_ENV }, { spawn: c.spawn }));
    expect([err.code, err.message, err.name]).toEqual([127, 'job command is empty', 'SpawnError']);
    expect(err).toBeInstanceOf(Error);
    expect(c.calls).toHaveLength(0);
  });

  it('a working directory that is a file is refused with 126, naming it', () => {
    const c = capture();
    const err = catchSpawn(() => ProcessGroup.start({ command: ['/bin/true'], env: PATH_ENV, cwd: '/bin/true' }, { spawn: c.spawn }));
    expect([err.code, err.message]).toEqual([126, 'job working directory "/bin/true" does not exist or is not a directory']);
    expect(c.calls).toHaveLength(0);
  });

  it('a spawn that fails after the checks: 126 saying what to check, its pipes closed, its late error event absorbed', async () => {
    const leader = fakeLeader(undefined, true);
    const err = catchSpawn(() =>
      ProcessGroup.start({ command: ['true'], env: PATH_ENV, stdio: ['inherit', 'pipe', 'pipe'] }, { setpriv: null, spawn: () => leader as unknown as ChildProcess }),
    );
    expect([err.code, err.message]).toEqual([126, 'job command "true" could not be started (/usr/bin/true changed or was refused by the kernel)']);
    expect([leader.stdout!.destroyed, leader.stderr!.destroyed]).toEqual([true, true]);
    expect(() => leader.emit('error', new Error('spawn EACCES'))).not.toThrow();
  });

  it("an 'error' event on a running leader does not crash the keeper", async () => {
    const { leader } = startFake(NO_GROUP);
    expect(() => leader.emit('error', new Error('kill EPERM'))).not.toThrow();
  });

  it('SpawnError keeps its cause', () => {
    const cause = new Error('EACCES');
    expect(new SpawnError(126, 'm', { cause }).cause).toBe(cause);
  });
});
