import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { groupGone, liveMembers, parseStat, readStat, scanGroups, signalGroup, type GroupScan, type ProcStat } from '../../src/job/group-members.js';
import { planLaunch } from '../../src/job/launch.js';
import { resolveCommand } from '../../src/job/resolve.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lk-resolve-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Every process whose parent is `ppid`, zombies included. */
function childrenOf(ppid: number): ProcStat[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map((n) => readStat(Number(n)))
    .filter((st): st is ProcStat => st !== null && st.ppid === ppid);
}

async function waitForValue<T>(what: string, get: () => T | undefined, timeoutMs = 5000): Promise<T> {
  for (const until = Date.now() + timeoutMs; ; ) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function file(path: string, mode: number, text = '#!/bin/sh\nexit 0\n'): string {
  writeFileSync(path, text, { mode });
  return path;
}

describe('resolveCommand', () => {
  it('finds a command in the job PATH, skipping empty entries and missing dirs', () => {
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    file(join(bin, 'job'), 0o755);
    expect(resolveCommand('job', { PATH: `::${join(dir, 'none')}:${bin}` })).toEqual({ ok: true, path: join(bin, 'job') });
  });

  it('takes the first executable match; a non-executable earlier match does not stop the search', () => {
    const [a, b] = [join(dir, 'a'), join(dir, 'b')];
    mkdirSync(a);
    mkdirSync(b);
    file(join(a, 'job'), 0o644);
    file(join(b, 'job'), 0o755);
    expect(resolveCommand('job', { PATH: `${a}:${b}` })).toEqual({ ok: true, path: join(b, 'job') });
  });

  it('reports 126 when the only match is not executable', () => {
    file(join(dir, 'job'), 0o644);
    expect(resolveCommand('job', { PATH: dir })).toEqual({
      ok: false,
      code: 126,
      message: `job command "job" found at ${join(dir, 'job')} but it is not executable (chmod +x)`,
    });
  });

  it('reports 127 with the PATH searched, and falls back to /usr/bin:/bin without PATH', () => {
    expect(resolveCommand('lk-none', { PATH: '/nowhere' })).toEqual({
      ok: false,
      code: 127,
      message: 'job command "lk-none" not found in PATH (/nowhere): install it or give an absolute path',
    });
    const noPath = resolveCommand('lk-none', {});
    expect(noPath.ok === false && noPath.message).toContain('(/usr/bin:/bin)');
    expect(resolveCommand('sh', {}).ok).toBe(true);
  });

  it('resolves a relative path against cwd, not PATH', () => {
    file(join(dir, 'job.sh'), 0o755);
    expect(resolveCommand('./job.sh', { PATH: '/nowhere' }, dir)).toEqual({ ok: true, path: join(dir, 'job.sh') });
    expect(resolveCommand('./job.sh', { PATH: dir }, '/')).toMatchObject({ ok: false, code: 127 });
  });

  it('rejects directories, missing files, dangling symlinks and an empty command', () => {
    expect(resolveCommand(dir, {})).toMatchObject({ ok: false, code: 126, message: `job command "${dir}" is a directory, not an executable file` });
    expect(resolveCommand(join(dir, 'x'), {})).toMatchObject({ ok: false, code: 127 });
    symlinkSync(join(dir, 'gone'), join(dir, 'link'));
    expect(resolveCommand(join(dir, 'link'), {})).toMatchObject({ ok: false, code: 127 });
    expect(resolveCommand('', {})).toMatchObject({ ok: false, code: 127 });
    expect(resolveCommand('/dev/null', {})).toMatchObject({ ok: false, code: 126, message: 'job command "/dev/null" is not a regular file' });
  });

  it('checks the #! interpreter of a script', () => {
    const ok = file(join(dir, 'ok.sh'), 0o755, '#!/bin/sh -e\nexit 0\n');
    expect(resolveCommand(ok, {})).toEqual({ ok: true, path: ok });
    const bad = file(join(dir, 'bad.sh'), 0o755, '#! /opt/lk-none/bin/python3\n');
    expect(resolveCommand(bad, {})).toEqual({
      ok: false,
      code: 127,
      message: `job command "${bad}" starts with "#!/opt/lk-none/bin/python3", and /opt/lk-none/bin/python3 does not exist`,
    });
    const viaEnv = file(join(dir, 'env.sh'), 0o755, '#!/usr/bin/env lk-none\n');
    expect(resolveCommand(viaEnv, {}).ok).toBe(true); // env's own lookup happens at run time
  });
});

describe('group-members and launch helpers', () => {
  it('parses /proc/<pid>/stat even when the command name has spaces and parentheses', () => {
    expect(parseStat('4242 (a) b (c)) S 1 4240 4240 0 -1 4194560 0 0')).toEqual({ pid: 4242, state: 'S', ppid: 1, pgrp: 4240, startTime: -1 });
    const full = '4242 (a) b (c)) S 1 4240 4240 0 -1 4194560 0 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200';
    expect(parseStat(full)?.startTime).toBe(987654);
    expect(parseStat('garbage')).toBeNull();
  });

  it('sees our own process group as live and refuses to signal groups 0 and 1', () => {
    const ownGroup = readStat(process.pid)!.pgrp;
    expect(liveMembers(ownGroup)).toContain(process.pid);
    // Signal 0 only: were the guard ever broken (a mutant), kill(-1, SIGKILL) as root would end every process on the machine.
    expect(() => signalGroup(0, 0)).toThrow(new RangeError('refusing to signal process group 0'));
    expect(() => signalGroup(1, 0)).toThrow(new RangeError('refusing to signal process group 1'));
    expect(() => signalGroup(4242.5, 0)).toThrow(new RangeError('refusing to signal process group 4242.5'));
    expect(liveMembers(2 ** 22 + 12345)).toEqual([]);
  });

  it('asks kill(-pgid, 0) before scanning: a group that does not exist costs no /proc scan', () => {
    let scans = 0;
    const counting = (): GroupScan | null => (scans++, scanGroups());
    expect(groupGone(2 ** 22 + 12345)).toBe(true);
    expect(liveMembers(2 ** 22 + 12345, [], counting)).toEqual([]);
    expect(liveMembers(2 ** 22 + 12345, [process.pid], counting)).toEqual([]);
    expect(scans).toBe(0);

    const ownGroup = readStat(process.pid)!.pgrp;
    if (ownGroup > 1) expect(groupGone(ownGroup)).toBe(false);
    expect(liveMembers(ownGroup, [process.pid], counting)).toEqual([process.pid]); // a known member still there
    expect(scans).toBe(0);
    expect(liveMembers(ownGroup, [], counting)).toContain(process.pid);
    expect(scans).toBe(1);
    // 0 and 1 are never probed (kill(-0) is our own group, kill(-1) every process), so never "gone".
    expect(groupGone(0)).toBe(false);
    expect(groupGone(1)).toBe(false);
  });

  it('counts a group as existing on EPERM (a member changed user) and lets the scan decide', () => {
    const ownGroup = readStat(process.pid)!.pgrp;
    const kill = vi.spyOn(process, 'kill').mockImplementation(() => {
      throw Object.assign(new Error('kill EPERM'), { code: 'EPERM' });
    });
    try {
      expect(groupGone(4242)).toBe(false);
      expect(liveMembers(4242, [], () => new Map([[4242, [4243]]]))).toEqual([4243]);
      expect(liveMembers(4242, [], () => new Map())).toEqual([]);
      expect(liveMembers(ownGroup, [], scanGroups)).toContain(process.pid);
    } finally {
      kill.mockRestore();
    }
  });

  it('scans every group at once: live members by pgid; a zombie left out, unless it is our own unreaped child', async () => {
    // A group of our own making, so that what other processes on the machine do cannot matter: sh starts a
    // child that exits at once, then becomes a sleep that never reaps it. That child is a zombie whose
    // parent is not us.
    const holder = spawn('/bin/sh', ['-c', '/bin/true & exec /bin/sleep 30'], { detached: true, stdio: 'ignore' });
    const pgid = holder.pid!;
    try {
      const zombie = await waitForValue('the unreaped child to be a zombie', () =>
        childrenOf(pgid).find((st) => st.state === 'Z' && st.pgrp === pgid),
      );
      expect(zombie.ppid).toBe(pgid);
      const groups = scanGroups()!;
      expect(groups.get(pgid)).toEqual([pgid]); // the sleep, not its zombie
      expect(groups.get(readStat(process.pid)!.pgrp)).toContain(process.pid);

      // Our own child, dead but not yet reaped by Node (it cannot reap while this test runs synchronously),
      // still counts: its exit has not been reported to us yet.
      process.kill(pgid, 'SIGKILL');
      const until = Date.now() + 5000;
      while (readStat(pgid)?.state !== 'Z') if (Date.now() > until) throw new Error('the holder never became a zombie');
      expect(scanGroups()!.get(pgid)).toEqual([pgid]);
    } finally {
      try {
        process.kill(-pgid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  });

  it('plans setpriv --pdeathsig SIGKILL -- path args, or a direct spawn', () => {
    expect(planLaunch('/bin/job', ['a'], '/usr/bin/setpriv')).toEqual({
      file: '/usr/bin/setpriv',
      args: ['--pdeathsig', 'SIGKILL', '--', '/bin/job', 'a'],
      parentDeathSignal: true,
    });
    expect(planLaunch('/bin/job', ['a'], null)).toEqual({ file: '/bin/job', args: ['a'], parentDeathSignal: false });
  });
});
