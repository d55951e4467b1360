/**
 * The environment-tag fallback and what every containment shares, with real processes (no root needed):
 * which processes carry a job run's tag, that each is signalled once, that the sweep ends a dead keeper's
 * tagged processes (and never a live keeper's, nor another worker id's), the keeper's identity that rules
 * out pid reuse, and the job's OOM score.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RUN_ID_VARIABLE, keeperAlive, ownIdentity } from '../../src/job/containment.js';
import { readStat } from '../../src/job/group-members.js';
import { jobOomScore, ownOomScoreAdj, raiseOomScore } from '../../src/job/oom-score.js';
import {
  ProcessGroupContainment,
  SharedTagScan,
  TagContainment,
  parseRunId,
  runIdIn,
  scanTags,
  taggedMembers,
  waitUntil,
  type TagScan,
} from '../../src/job/run-tag.js';
import { prerequisite, rootMissing } from '../support/prerequisites.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

let dir: string;
let children: ChildProcess[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lk-muttag-'));
});

afterEach(async () => {
  for (const c of children) {
    try {
      process.kill(c.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  }
  await waitUntil(() => children.every((c) => c.exitCode !== null || c.signalCode !== null), 5_000);
  children = [];
  rmSync(dir, { recursive: true, force: true });
});

/** A sleeper in its own process group (pgid = its pid), with `env` added to ours; it ignores SIGTERM (as a stuck job might). */
function sleeper(env: Record<string, string> = {}): ChildProcess {
  const child = spawn('/bin/sh', ['-c', 'trap "" TERM; exec sleep 60'], { env: { ...process.env, ...env }, stdio: 'ignore', detached: true });
  children.push(child);
  return child;
}

/** Live: not gone and not a zombie. */
function isLive(pid: number): boolean {
  const st = readStat(pid);
  return st !== null && st.state !== 'Z';
}

async function started(child: ChildProcess): Promise<number> {
  await waitUntil(() => readStat(child.pid!) !== null, 5_000);
  return child.pid!;
}

describe('the tag in an environ block', () => {
  it('is found first, in the middle or last (with or without the final NUL), and only under its exact name', () => {
    expect(runIdIn(Buffer.from(`${RUN_ID_VARIABLE}=w/1/2/3`))).toBe('w/1/2/3');
    expect(runIdIn(Buffer.from(`A=1\0${RUN_ID_VARIABLE}=w/1/2/3`))).toBe('w/1/2/3');
    expect(runIdIn(Buffer.from(`A=1\0${RUN_ID_VARIABLE}=w/1/2/3\0B=2`))).toBe('w/1/2/3');
    expect(runIdIn(Buffer.from(`${RUN_ID_VARIABLE}=\0`))).toBe('');
    expect(runIdIn(Buffer.from(''))).toBeNull();
    expect(runIdIn(Buffer.from('A=1\0B=2\0'))).toBeNull();
    expect(runIdIn(Buffer.from(`${RUN_ID_VARIABLE}X=w/1/2/3\0`))).toBeNull();
    expect(runIdIn(Buffer.from(`A=1\0X${RUN_ID_VARIABLE}=w/1/2/3\0`))).toBeNull();
  });

  it('parses as worker id / keeper pid / keeper start time / run number, all of it or nothing', () => {
    expect(parseRunId('w-1/123/45678/910')).toEqual({ workerId: 'w-1', keeperPid: 123, keeperStartTime: 45678, n: 910 });
    for (const text of ['/1/2/3', 'w/1/2', 'w/1/2/3/4', 'a/w/1/2/3', 'w/1/2/3x', 'w/x1/2/3', 'w/1/2x/3', 'w/1/2/ 3']) {
      expect(parseRunId(text), text).toBeNull();
    }
  });
});

describe('scanTags: one pass over /proc', () => {
  it('maps each run id under the prefix to the live processes of our user carrying it', async () => {
    const prefix = `ut-scan-${process.pid}-${Math.random().toString(36).slice(2, 8)}/`;
    const a1 = await started(sleeper({ [RUN_ID_VARIABLE]: `${prefix}1/2/1` }));
    const a2 = await started(sleeper({ [RUN_ID_VARIABLE]: `${prefix}1/2/1` }));
    const b = await started(sleeper({ [RUN_ID_VARIABLE]: `${prefix}1/2/2` }));
    await started(sleeper({ [RUN_ID_VARIABLE]: `other-${prefix}1/2/1` }));
    const scan = scanTags(prefix)!;
    expect([...scan.keys()].sort()).toEqual([`${prefix}1/2/1`, `${prefix}1/2/2`]);
    expect([...scan.get(`${prefix}1/2/1`)!].sort()).toEqual([a1, a2].sort());
    expect(scan.get(`${prefix}1/2/2`)).toEqual([b]);
    // Another user's processes are not ours to end.
    expect(scanTags(prefix, (process.getuid?.() ?? 0) + 4242)!.size).toBe(0);
  });
});

describe('SharedTagScan and the tagged members of one run', () => {
  it('reads /proc once per event-loop turn, for every job of the keeper', async () => {
    const prefixes: string[] = [];
    const shared = new SharedTagScan('w/1/2/', (prefix) => {
      prefixes.push(prefix);
      return new Map([['w/1/2/1', [101, 102]]]);
    });
    expect(shared.pids('w/1/2/1')).toEqual([101, 102]);
    expect(shared.pids('w/1/2/2')).toEqual([]);
    expect(prefixes).toEqual(['w/1/2/']);
    await new Promise((r) => setImmediate(r));
    expect(shared.pids('w/1/2/1')).toEqual([101, 102]);
    expect(prefixes).toEqual(['w/1/2/', 'w/1/2/']);
    expect(new SharedTagScan('w/', () => null).pids('w/1/2/1')).toEqual([]);
  });

  it('signals each tagged process except those of the group just signalled; false when it reached none', async () => {
    const inGroup = await started(sleeper());
    const outside = await started(sleeper());
    const tags: TagScan = new Map([['w/1/2/1', [inGroup, outside]]]);
    const members = taggedMembers('w/1/2/1', new SharedTagScan('w/1/2/', () => tags));
    expect(members.live()).toEqual([inGroup, outside]);
    expect(members.signal('SIGKILL', inGroup)).toBe(true);
    await waitUntil(() => !isLive(outside), 5_000);
    expect(isLive(outside)).toBe(false);
    expect(isLive(inGroup)).toBe(true);
    // Only the group's member is left in the list: skipped, so nothing was delivered.
    const onlyGroup = taggedMembers('w/1/2/1', new SharedTagScan('w/1/2/', () => new Map([['w/1/2/1', [inGroup]]])));
    expect(onlyGroup.signal('SIGKILL', inGroup)).toBe(false);
    expect(isLive(inGroup)).toBe(true);
    // A process that is gone: nothing delivered, no throw.
    const gone = taggedMembers('w/1/2/1', new SharedTagScan('w/1/2/', () => new Map([['w/1/2/1', [outside]]])));
    await waitUntil(() => readStat(outside) === null, 5_000);
    expect(gone.signal('SIGTERM', null)).toBe(false);
    expect(gone.signal('SIGTERM', inGroup)).toBe(false); // its group cannot be read any more: still no throw
    expect(onlyGroup.signal('SIGKILL', null)).toBe(true);
    await waitUntil(() => !isLive(inGroup), 5_000);
    expect(isLive(inGroup)).toBe(false);
  });
});

describe('the tag containment', () => {
  it('tags each run with this keeper\'s identity and the run number, and looks its members up under that keeper', async () => {
    const workerId = `ut-tagrun-${process.pid}`;
    const prefixes: string[] = [];
    const tag = new TagContainment(workerId, 'why: a test', null, {
      scanTags: (prefix) => {
        prefixes.push(prefix);
        return scanTags(prefix);
      },
    });
    expect(tag.kind).toBe('tag');
    expect(tag.detail).toEqual({ reason: 'why: a test' });
    const out = join(dir, 'tag');
    const me = ownIdentity(workerId);
    for (const n of [1, 2]) {
      const job = tag.start({ command: ['/bin/sh', '-c', `echo "$${RUN_ID_VARIABLE}" > ${out}`], env: process.env });
      await job.empty;
      expect(readFileSync(out, 'utf8').trim()).toBe(`${workerId}/${process.pid}/${me.startTime}/${n}`);
      expect(job.where.pgid).toBe(job.pid);
    }
    expect(prefixes.length).toBeGreaterThan(0);
    expect(new Set(prefixes)).toEqual(new Set([`${workerId}/${process.pid}/${me.startTime}/`]));
  });

  it('sweep: SIGKILLs the tagged processes of dead keepers with our worker id only, and returns once they are dead', async () => {
    const workerId = 'ut-w';
    const liveKeeper = await started(sleeper());
    const liveStart = readStat(liveKeeper)!.startTime;
    const deadA = await started(sleeper({ LEASE_KEEPER_WORK_ID: 'work_a' }));
    const deadA2 = await started(sleeper({ LEASE_KEEPER_WORK_ID: 'work_a' }));
    const reused = await started(sleeper());
    const ofLive = await started(sleeper());
    const foreign = await started(sleeper());
    const malformed = await started(sleeper());
    const asked: string[] = [];
    const tags: TagScan = new Map([
      ['ut-w/999999999/5/1', [deadA, deadA2]],
      [`ut-w/${liveKeeper}/${liveStart + 1}/2`, [reused]], // the pid lives, but it is another process now
      [`ut-w/${liveKeeper}/${liveStart}/3`, [ofLive]],
      ['ut-wx/999999999/5/1', [foreign]], // another worker id (only a scan given to us could say so)
      ['ut-w/999999999/5', [malformed]],
    ]);
    const tag = new TagContainment(workerId, 'test', null, {
      scanTags: (prefix) => {
        asked.push(prefix);
        return tags;
      },
    });
    const t0 = performance.now();
    const swept = await tag.sweep();
    // It waits for what it killed, not for the live keeper's processes (that took the whole 5 s timeout).
    expect(performance.now() - t0).toBeLessThan(3_000);
    expect(asked).toEqual(['ut-w/']);
    expect(swept).toEqual([
      { workId: 'work_a', keeperPid: 999999999, where: `${RUN_ID_VARIABLE}=ut-w/999999999/5/1`, processes: 2 },
      { workId: null, keeperPid: liveKeeper, where: `${RUN_ID_VARIABLE}=ut-w/${liveKeeper}/${liveStart + 1}/2`, processes: 1 },
    ]);
    // Dead by the time the sweep returns (no wait here).
    expect([deadA, deadA2, reused].map(isLive)).toEqual([false, false, false]);
    expect([ofLive, foreign, malformed, liveKeeper].map(isLive)).toEqual([true, true, true, true]);
    expect(await new TagContainment(workerId, 'test', null, { scanTags: () => null }).sweep()).toEqual([]);
  });
});

describe('the process-group containment', () => {
  it('says why it was chosen, leaves nothing to sweep, and raises the OOM score only when asked', async () => {
    const pg = new ProcessGroupContainment('ut-pg');
    expect(pg.kind).toBe('process-group');
    expect(pg.detail).toEqual({ reason: 'LEASE_KEEPER_CONTAINMENT=process-group: the job is its process group; a process that calls setsid escapes' });
    expect(await pg.sweep()).toEqual([]);
    const own = ownOomScoreAdj();
    const out = join(dir, 'oom');
    await pg.start({ command: ['/bin/sh', '-c', `sleep 0.2; cat /proc/self/oom_score_adj > ${out}`], env: process.env }).empty;
    expect(Number(readFileSync(out, 'utf8'))).toBe(own);
    const target = Math.min(1000, own + 1);
    await new ProcessGroupContainment('ut-pg', target).start({ command: ['/bin/sh', '-c', `sleep 0.2; cat /proc/self/oom_score_adj > ${out}`], env: process.env }).empty;
    expect(Number(readFileSync(out, 'utf8'))).toBe(target);
    pg.close();
  });
});

describe('the keeper\'s identity: pid plus start time', () => {
  it('is this process\'s pid and its start time from /proc', () => {
    expect(ownIdentity('w9')).toEqual({ workerId: 'w9', pid: process.pid, startTime: readStat(process.pid)!.startTime });
    expect(ownIdentity('w9').startTime).toBeGreaterThan(0);
  });

  it('a keeper is alive only with the same pid and start time and not a zombie; this keeper always is', async () => {
    const child = sleeper();
    const pid = await started(child);
    const start = readStat(pid)!.startTime;
    expect(keeperAlive(pid, start)).toBe(true);
    expect(keeperAlive(pid, start + 1)).toBe(false);
    expect(keeperAlive(999999999, start)).toBe(false);
    expect(keeperAlive(process.pid, -12345)).toBe(true);
    // A zombie: a child that exits under a parent that never waits for it.
    const parent = spawn('/bin/sh', ['-c', 'sleep 0 & echo $!; exec sleep 60'], { stdio: ['ignore', 'pipe', 'ignore'] });
    children.push(parent);
    const zombie = Number(await new Promise<string>((r) => parent.stdout!.once('data', (d: Buffer) => r(d.toString()))));
    await waitUntil(() => readStat(zombie)?.state === 'Z', 5_000);
    expect(readStat(zombie)?.state).toBe('Z');
    expect(keeperAlive(zombie, readStat(zombie)!.startTime)).toBe(false);
  });
});

describe('the job\'s OOM score', () => {
  it('is raised from the keeper\'s own, never lowered, at most 1000', () => {
    expect(jobOomScore(1, 0)).toBe(1);
    expect(jobOomScore(999, 2)).toBe(1000);
    expect(jobOomScore(-100, 0)).toBeNull();
    expect(jobOomScore(0, 0)).toBeNull();
    expect(ownOomScoreAdj()).toBe(Number(readFileSync('/proc/self/oom_score_adj', 'utf8')));
    expect(jobOomScore(10)).toBe(Math.min(1000, ownOomScoreAdj() + 10));
  });

  // Lowering it back afterwards needs root (CAP_SYS_RESOURCE).
  it.runIf(prerequisite('root', rootMissing()))('starts from the keeper\'s own score as /proc says it (a unit\'s OOMScoreAdjust=)', () => {
    const file = '/proc/self/oom_score_adj';
    const was = readFileSync(file, 'utf8').trim();
    const own = Math.min(1000, Number(was) + 3);
    try {
      writeFileSync(file, String(own));
      expect(ownOomScoreAdj()).toBe(own);
      expect(jobOomScore(5)).toBe(Math.min(1000, own + 5));
    } finally {
      writeFileSync(file, was); // root may lower it again
    }
  });

  it('is written to the job\'s process; a process that is gone changes nothing', async () => {
    const pid = await started(sleeper());
    const score = Math.min(1000, ownOomScoreAdj() + 7);
    expect(raiseOomScore(pid, score)).toBe(true);
    expect(Number(readFileSync(`/proc/${pid}/oom_score_adj`, 'utf8'))).toBe(score);
    expect(raiseOomScore(999999999, score)).toBe(false);
  });
});

describe('waitUntil', () => {
  it('true as soon as the condition holds, false once the time is up', async () => {
    let n = 0;
    expect(await waitUntil(() => ++n >= 3, 5_000, 1)).toBe(true);
    expect(n).toBe(3);
    const t0 = performance.now();
    expect(await waitUntil(() => false, 60, 10)).toBe(false);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(59);
    await sleep(0);
  });
});
