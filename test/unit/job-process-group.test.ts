import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readStat, scanGroups, type GroupScan, type ProcStat } from '../../src/job/group-members.js';
import { ProcessGroup, SpawnError, type JobSpec, type ProcessGroupDeps } from '../../src/job/index.js';
import { prerequisite } from '../support/prerequisites.js';
import { suiteEnv } from '../support/processes.js';
import { catchSpawn } from '../support/spawn-error.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/job-modes.sh', import.meta.url));
const PATH_ENV = { PATH: '/usr/bin:/bin', ...suiteEnv() };

let dir: string;
let started: ProcessGroup[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lk-job-'));
});

afterEach(async () => {
  for (const g of started) {
    g.kill();
    await Promise.race([g.empty, sleep(5_000)]);
  }
  started = [];
  rmSync(dir, { recursive: true, force: true });
});

function start(args: string[], spec: Partial<JobSpec> = {}, deps?: ProcessGroupDeps): ProcessGroup {
  const g = ProcessGroup.start({ command: ['/bin/bash', FIXTURE, ...args], env: process.env, ...spec }, deps);
  started.push(g);
  return g;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, probe: () => T | null | undefined | false, timeoutMs = 5_000): Promise<T> {
  const until = performance.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== null && v !== undefined && v !== false) return v;
    if (performance.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Waits for the fixture's handshake: the pids it wrote once its traps and children were set up. */
async function readyPids(file: string): Promise<number[]> {
  const text = await waitFor(`ready file ${file}`, () => existsSync(file) && readFileSync(file, 'utf8'));
  return text.trim().split(' ').map(Number);
}

/** Running or sleeping, i.e. neither gone nor a zombie. */
function isLive(pid: number): boolean {
  const st = readStat(pid);
  return st !== null && st.state !== 'Z';
}

function groupStats(pgid: number): ProcStat[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map((n) => readStat(Number(n)))
    .filter((st): st is ProcStat => st !== null && st.pgrp === pgid);
}

/**
 * No live member is left, and the kernel soon agrees: kill(-pgid, 0) gives ESRCH once the dead members
 * are reaped. In this container PID 1 reaps orphans only about once a second, so allow a few seconds.
 */
async function expectGroupGone(pgid: number): Promise<void> {
  expect(groupStats(pgid).filter((st) => st.state !== 'Z')).toEqual([]);
  await waitFor('kill(-pgid, 0) to give ESRCH', () => {
    try {
      process.kill(-pgid, 0);
      return false;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ESRCH';
    }
  });
}

describe('ProcessGroup: exits', () => {
  it('reports exit 0, then the group is empty and every method is a safe no-op', async () => {
    const g = start(['exit', '0']);
    expect(g.pgid).toBe(g.pid);
    expect(await g.exited).toEqual({ code: 0, signal: null });
    await g.empty;
    expect(g.isAlive()).toBe(false);
    expect(g.interrupt('SIGTERM')).toBe(false);
    expect(g.kill()).toBe(false);
    g.escalate();
    g.killAt(0);
    expect(await g.stop({ signal: 'SIGTERM', graceMs: 10 })).toEqual({ code: 0, signal: null });
    expect(g.lastSignal).toBeNull();
    await expectGroupGone(g.pgid);
  });

  it('reports exit 3', async () => {
    const g = start(['exit', '3']);
    expect(await g.exited).toEqual({ code: 3, signal: null });
    await g.empty;
  });

  it('reports the name of the signal that ended the leader', async () => {
    const file = join(dir, 'ready');
    const g = start(['sleep', file]);
    const [leader, child] = await readyPids(file);
    expect(leader).toBe(g.pid);
    expect(g.isAlive()).toBe(true);
    expect(g.interrupt('SIGUSR1')).toBe(true);
    expect(g.lastSignal?.signal).toBe('SIGUSR1');
    expect(await g.exited).toEqual({ code: null, signal: 'SIGUSR1' });
    await g.empty;
    expect(isLive(child!)).toBe(false);
    await expectGroupGone(g.pgid);
  });

  it('kill() SIGKILLs the whole group', async () => {
    const file = join(dir, 'ready');
    const g = start(['ignore-term', file]);
    const [, child] = await readyPids(file);
    expect(g.kill()).toBe(true);
    expect(await g.exited).toEqual({ code: null, signal: 'SIGKILL' });
    await g.empty;
    expect(isLive(child!)).toBe(false);
    await expectGroupGone(g.pgid);
  });
});

describe('ProcessGroup: stop', () => {
  it('stops a job that exits on SIGTERM quickly, with its own exit code', async () => {
    const file = join(dir, 'ready');
    const g = start(['term-exits', file, '7']);
    await readyPids(file);
    const t0 = performance.now();
    expect(await g.stop({ signal: 'SIGTERM', graceMs: 10_000 })).toEqual({ code: 7, signal: null });
    expect(performance.now() - t0).toBeLessThan(3_000);
    expect(g.lastSignal?.signal).toBe('SIGTERM');
    await expectGroupGone(g.pgid);
  });

  it('SIGKILLs the whole group after the grace when leader and grandchild ignore SIGTERM', async () => {
    const file = join(dir, 'ready');
    const g = start(['ignore-term', file]);
    const [leader, grandchild] = await readyPids(file);
    const t0 = performance.now();
    const exit = await g.stop({ signal: 'SIGTERM', graceMs: 300 });
    const took = performance.now() - t0;
    expect(exit).toEqual({ code: null, signal: 'SIGKILL' });
    expect(took).toBeGreaterThanOrEqual(250);
    expect(took).toBeLessThan(3_000);
    expect(g.lastSignal?.signal).toBe('SIGKILL');
    expect(g.lastSignal!.atMs - t0).toBeGreaterThanOrEqual(250);
    expect(isLive(leader!)).toBe(false);
    expect(isLive(grandchild!)).toBe(false);
    expect(g.isAlive()).toBe(false);
    await expectGroupGone(g.pgid);
  });

  it('a grandchild that outlives the leader keeps the group non-empty until stop ends it', async () => {
    const file = join(dir, 'ready');
    const g = start(['orphan', file]);
    const [, grandchild] = await readyPids(file);
    expect(await g.exited).toEqual({ code: 0, signal: null });
    const emptied = await Promise.race([g.empty.then(() => true), sleep(300).then(() => false)]);
    expect(emptied).toBe(false);
    expect(g.isAlive()).toBe(true);
    expect(isLive(grandchild!)).toBe(true);

    const t0 = performance.now();
    expect(await g.stop({ signal: 'SIGTERM', graceMs: 10_000 })).toEqual({ code: 0, signal: null });
    expect(performance.now() - t0).toBeLessThan(3_000);
    expect(g.lastSignal?.signal).toBe('SIGTERM');
    expect(isLive(grandchild!)).toBe(false);
    await expectGroupGone(g.pgid);
  });

  it('SIGKILLs an orphaned grandchild that ignores SIGTERM after the grace', async () => {
    const file = join(dir, 'ready');
    const g = start(['orphan', file, 'ignore']);
    const [, grandchild] = await readyPids(file);
    await g.exited;
    const t0 = performance.now();
    await g.stop({ signal: 'SIGTERM', graceMs: 300 });
    const took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(250);
    expect(took).toBeLessThan(3_000);
    expect(g.lastSignal?.signal).toBe('SIGKILL');
    expect(isLive(grandchild!)).toBe(false);
    await expectGroupGone(g.pgid);
  });

  it('a second stop returns the same promise, and a shorter grace brings the SIGKILL forward', async () => {
    const file = join(dir, 'ready');
    const g = start(['ignore-term', file]);
    await readyPids(file);
    const t0 = performance.now();
    const first = g.stop({ signal: 'SIGTERM', graceMs: 20_000 });
    await sleep(100);
    const second = g.stop({ signal: 'SIGTERM', graceMs: 200 });
    expect(second).toBe(first);
    expect(await first).toEqual({ code: null, signal: 'SIGKILL' });
    const took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(250);
    expect(took).toBeLessThan(3_000);
  });

  it('a later stop with a longer grace does not postpone the SIGKILL', async () => {
    const file = join(dir, 'ready');
    const g = start(['ignore-term', file]);
    await readyPids(file);
    const t0 = performance.now();
    const first = g.stop({ signal: 'SIGTERM', graceMs: 300 });
    g.stop({ signal: 'SIGTERM', graceMs: 20_000 });
    await first;
    expect(performance.now() - t0).toBeLessThan(3_000);
  });

  it('escalate() SIGKILLs at once during a long grace', async () => {
    const file = join(dir, 'ready');
    const g = start(['ignore-term', file]);
    await readyPids(file);
    const stopped = g.stop({ signal: 'SIGTERM', graceMs: 20_000 });
    await sleep(100);
    expect(g.lastSignal?.signal).toBe('SIGTERM');
    const t0 = performance.now();
    g.escalate();
    expect(await stopped).toEqual({ code: null, signal: 'SIGKILL' });
    expect(performance.now() - t0).toBeLessThan(2_000);
    await expectGroupGone(g.pgid);
  });

  it('killAt() schedules a SIGKILL without a stop (a lease fence planned ahead)', async () => {
    const file = join(dir, 'ready');
    const g = start(['sleep', file]);
    await readyPids(file);
    const t0 = performance.now();
    g.killAt(t0 + 200);
    expect(await g.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(150);
    await g.empty;
  });
});

/** A /proc scan that counts its calls, for a group's `scanGroups` dependency. */
function countingScan(): { scans: number; scan: () => GroupScan | null } {
  const c = { scans: 0, scan: () => (c.scans++, scanGroups()) };
  return c;
}

/**
 * A job whose group, once its leader exited, holds only a zombie that stays unreaped: the leader forks P,
 * P forks C, C exits at once, P leaves the group (setsid) and never reaps C. READY gets "P C".
 */
const ZOMBIE_ONLY = `
use POSIX ();
my $ready = shift;
my $p = fork // die "fork: $!";
if ($p == 0) {
  my $c = fork // die "fork: $!";
  POSIX::_exit(0) if $c == 0;
  POSIX::setsid() or die "setsid: $!";
  for (;;) {
    open my $f, '<', "/proc/$c/stat" or die "stat: $!";
    my $st = <$f>;
    close $f;
    last if index($st, ') Z ') >= 0;
    select(undef, undef, undef, 0.01);
  }
  open my $o, '>', "$ready.tmp" or die "ready: $!";
  print $o "$$ $c";
  close $o;
  rename "$ready.tmp", $ready or die "rename: $!";
  sleep 60;
  POSIX::_exit(0);
}
select(undef, undef, undef, 0.01) until -e $ready;
exit 0;
`;

describe('ProcessGroup: looking for survivors', () => {
  it('finds a group that went with its leader empty without a /proc scan (kill(-pgid, 0) gives ESRCH)', async () => {
    const counter = countingScan();
    const g = start(['exit', '0'], {}, { scanGroups: counter.scan });
    await g.exited;
    await g.empty;
    expect(g.isAlive()).toBe(false);
    expect(counter.scans).toBe(0);
  });

  it('a surviving grandchild keeps the group non-empty (one scan, then followed by pid) until it dies', async () => {
    const counter = countingScan();
    const file = join(dir, 'ready');
    const g = start(['orphan', file], {}, { scanGroups: counter.scan, pollMs: 10 });
    const [, grandchild] = await readyPids(file);
    await g.exited;
    const emptied = await Promise.race([g.empty.then(() => true), sleep(200).then(() => false)]);
    expect(emptied).toBe(false);
    expect(g.isAlive()).toBe(true);
    // The first look needed a scan to find the grandchild; the ~20 looks since only checked that pid.
    expect(counter.scans).toBe(1);

    process.kill(grandchild!, 'SIGKILL');
    await Promise.race([g.empty, sleep(5_000).then(() => Promise.reject(new Error('group never found empty')))]);
    expect(isLive(grandchild!)).toBe(false);
    expect(g.isAlive()).toBe(false);
    expect(g.lastSignal).toBeNull();
  });

  it.runIf(prerequisite('perl', existsSync('/usr/bin/perl') ? null : '/usr/bin/perl not found (Debian: perl-base)'))('a group kept in existence only by an unreaped zombie is empty (the scan tells)', async () => {
    const counter = countingScan();
    const file = join(dir, 'ready');
    const g = ProcessGroup.start({ command: ['/usr/bin/perl', '-e', ZOMBIE_ONLY, file], env: process.env }, { scanGroups: counter.scan });
    started.push(g);
    const [holder, zombie] = await readyPids(file);
    try {
      expect(await g.exited).toEqual({ code: 0, signal: null });
      await Promise.race([g.empty, sleep(5_000).then(() => Promise.reject(new Error('group never found empty')))]);
      // The group still exists (kill(-pgid, 0) succeeds), only through the zombie.
      expect(readStat(zombie!)).toMatchObject({ state: 'Z', pgrp: g.pgid, ppid: holder });
      expect(() => process.kill(-g.pgid, 0)).not.toThrow();
      expect(counter.scans).toBeGreaterThanOrEqual(1);
      expect(g.isAlive()).toBe(false);
    } finally {
      process.kill(holder!, 'SIGKILL');
    }
  });

  it('groups whose exits are reported together share one scan for their first look', async () => {
    // Three real groups (a sleep leading each) stand in for jobs whose leaders' exits arrive in one batch.
    const counter = countingScan();
    const holders = [0, 1, 2].map(() => spawn('/bin/sleep', ['60'], { detached: true, stdio: 'ignore' }));
    const leaders: EventEmitter[] = [];
    try {
      const groups = holders.map((holder) =>
        ProcessGroup.start(
          { command: ['/bin/true'], env: PATH_ENV },
          {
            setpriv: null,
            scanGroups: counter.scan,
            pollMs: 10,
            spawn: () => {
              const leader = Object.assign(new EventEmitter(), { pid: holder.pid });
              leaders.push(leader);
              return leader as unknown as ChildProcess;
            },
          },
        ),
      );
      for (const leader of leaders) leader.emit('exit', 0, null);
      await sleep(100);
      expect(counter.scans).toBe(1);
      expect(groups.map((g) => g.isAlive())).toEqual([true, true, true]);
      for (const holder of holders) holder.kill('SIGKILL');
      await Promise.race([Promise.all(groups.map((g) => g.empty)), sleep(5_000).then(() => Promise.reject(new Error('not empty')))]);
      // Known members were followed by pid, then kill(-pgid, 0) found each group gone: no further scan.
      expect(counter.scans).toBe(1);
    } finally {
      for (const holder of holders) holder.kill('SIGKILL');
    }
  });
});

describe('ProcessGroup: start', () => {
  it('throws SpawnError 127 for a command not in PATH, before spawning', () => {
    const err = catchSpawn(() => ProcessGroup.start({ command: ['lk-no-such-command'], env: PATH_ENV }));
    expect(err.code).toBe(127);
    expect(err.message).toBe(
      'job command "lk-no-such-command" not found in PATH (/usr/bin:/bin): install it or give an absolute path',
    );
  });

  it('throws SpawnError 126 for a file that is not executable, and for a directory', () => {
    const file = join(dir, 'job.sh');
    writeFileSync(file, '#!/bin/sh\nexit 0\n', { mode: 0o644 });
    const notExec = catchSpawn(() => ProcessGroup.start({ command: [file], env: PATH_ENV }));
    expect(notExec.code).toBe(126);
    expect(notExec.message).toBe(`job command "${file}" is not executable (chmod +x)`);
    const isDir = catchSpawn(() => ProcessGroup.start({ command: [dir], env: PATH_ENV }));
    expect(isDir.code).toBe(126);
    expect(isDir.message).toContain('is a directory');
  });

  it('throws SpawnError 127 for a script whose #! interpreter is missing', () => {
    const file = join(dir, 'job.sh');
    writeFileSync(file, '#!/usr/bin/lk-no-such-shell -e\nexit 0\n', { mode: 0o755 });
    const err = catchSpawn(() => ProcessGroup.start({ command: [file], env: PATH_ENV }));
    expect(err.code).toBe(127);
    expect(err.message).toContain('/usr/bin/lk-no-such-shell does not exist');
  });

  it('throws SpawnError 126 for a missing working directory', () => {
    const err = catchSpawn(() => ProcessGroup.start({ command: ['/bin/true'], env: PATH_ENV, cwd: join(dir, 'nope') }));
    expect(err.code).toBe(126);
    expect(err.message).toContain('working directory');
  });

  it('throws SpawnError when spawn itself fails after the checks, with no stray error event', async () => {
    const failing: ProcessGroupDeps['spawn'] = (_file, args, options) => spawn('/lk-vanished/job', [...args], options);
    const err = catchSpawn(() => ProcessGroup.start({ command: ['/bin/true'], env: PATH_ENV }, { spawn: failing }));
    expect(err.code).toBe(126);
    await sleep(50); // the 'error' event fires on the next tick; an unhandled one would fail the run
  });

  it('passes the environment exactly as given, through setpriv and without it', async () => {
    for (const setpriv of [undefined, null] as const) {
      const base = { ...process.env, LK_REMOVED: 'secret' };
      const env: NodeJS.ProcessEnv = { ...base, LK_PRESENT: 'a b=c' };
      delete env.LK_REMOVED;
      const out = join(dir, `environ-${String(setpriv)}`);
      const g = start(['environ', out], { env }, { setpriv });
      expect(await g.exited).toEqual({ code: 0, signal: null });
      const seen = Object.fromEntries(
        readFileSync(out, 'utf8')
          .split('\0')
          .filter((kv) => kv.length > 0)
          .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
      );
      expect(seen).toEqual(env);
      expect(seen.LK_REMOVED).toBeUndefined();
    }
  });

  it('launches through setpriv --pdeathsig when present; the leader pid is then the job itself', async () => {
    const file = join(dir, 'ready');
    const g = start(['sleep', file]);
    expect(g.parentDeathSignal).toBe(true);
    expect(g.argv).toEqual(['/usr/bin/setpriv', '--pdeathsig', 'SIGKILL', '--', '/bin/bash', FIXTURE, 'sleep', file]);
    const [leader] = await readyPids(file);
    expect(leader).toBe(g.pid);
    const cmdline = readFileSync(`/proc/${g.pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    expect(cmdline).toEqual(['/bin/bash', FIXTURE, 'sleep', file]);
    expect(readStat(g.pid)?.pgrp).toBe(g.pid);
  });

  it('spawns directly, and says so, without setpriv or when parent-death is turned off', async () => {
    const a = start(['exit', '0'], {}, { setpriv: null });
    expect(a.parentDeathSignal).toBe(false);
    expect(a.argv).toEqual(['/bin/bash', FIXTURE, 'exit', '0']);
    const b = start(['exit', '0'], { parentDeathSignal: false });
    expect(b.parentDeathSignal).toBe(false);
    expect(await a.exited).toEqual({ code: 0, signal: null });
    expect(await b.exited).toEqual({ code: 0, signal: null });
  });
});

