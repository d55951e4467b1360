import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readStat } from '../../src/job/group-members.js';
import { findSetpriv } from '../../src/job/index.js';
import { prerequisite } from '../support/prerequisites.js';

/*
 * spec §5: "A keeper killed with SIGKILL leaves no job running past its lease (... elsewhere through a
 * parent-death signal)". These tests kill a stand-in keeper with SIGKILL and watch its job. Each has a
 * control without the parent-death signal, where the job must survive, so a pass is not an accident.
 */

const MODES = fileURLToPath(new URL('../fixtures/job-modes.sh', import.meta.url));
const KEEPER = fileURLToPath(new URL('../fixtures/job-keeper.mjs', import.meta.url));
const SRC_JOB = fileURLToPath(new URL('../../src/job/', import.meta.url));
const haveSetpriv = findSetpriv() !== null;

let dir: string;
let built: string;
const groups = new Set<number>();

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'lk-pdeath-'));
  // No tsx here: transpile src/job to plain ESM so a real node process can run the real ProcessGroup.
  built = join(dir, 'job');
  mkdirSync(built);
  writeFileSync(join(built, 'package.json'), '{"type":"module"}');
  for (const name of readdirSync(SRC_JOB).filter((n) => n.endsWith('.ts'))) {
    const { outputText } = ts.transpileModule(readFileSync(join(SRC_JOB, name), 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    });
    writeFileSync(join(built, name.replace(/\.ts$/, '.js')), outputText);
  }
});

afterEach(() => {
  for (const pgid of groups) {
    try {
      if (pgid > 1) process.kill(-pgid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  groups.clear();
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function isLive(pid: number): boolean {
  const st = readStat(pid);
  return st !== null && st.state !== 'Z';
}

async function waitFor(what: string, probe: () => boolean, timeoutMs = 5_000): Promise<void> {
  const until = performance.now() + timeoutMs;
  while (!probe()) {
    if (performance.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

async function readReady(file: string): Promise<string[]> {
  await waitFor(`ready file ${file}`, () => existsSync(file));
  return readFileSync(file, 'utf8').trim().split(' ');
}

/** Starts a stand-in keeper in its own group (so cleanup can reach it) and returns its pid. */
function startKeeper(command: string, args: string[]): number {
  const keeper = spawn(command, args, { detached: true, stdio: 'ignore' });
  keeper.on('error', () => {});
  groups.add(keeper.pid!);
  return keeper.pid!;
}

/** The job has exec'd `sleep` once its cmdline says so; by then setpriv has already called prctl(). */
async function waitForExec(pid: number, program: string): Promise<void> {
  await waitFor(`${pid} to exec ${program}`, () => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]!.endsWith(program);
    } catch {
      return false;
    }
  });
}

describe.runIf(prerequisite('setpriv', haveSetpriv ? null : 'setpriv not found (Debian: util-linux)'))('parent-death signal', () => {
  it('setpriv --pdeathsig SIGKILL: the job dies when its parent is SIGKILLed (mechanism, bash keeper)', async () => {
    const ready = join(dir, 'bash-with');
    const keeper = startKeeper('/bin/bash', [MODES, 'pdeath-keeper', ready, 'with']);
    const job = Number((await readReady(ready))[1]);
    await waitForExec(job, 'sleep');
    process.kill(keeper, 'SIGKILL');
    await waitFor('the job to die with its parent', () => !isLive(job), 3_000);
  });

  it('control: without the parent-death signal the job survives its parent', async () => {
    const ready = join(dir, 'bash-without');
    const keeper = startKeeper('/bin/bash', [MODES, 'pdeath-keeper', ready, 'without']);
    const job = Number((await readReady(ready))[1]);
    await waitForExec(job, 'sleep');
    process.kill(keeper, 'SIGKILL');
    await sleep(500);
    expect(isLive(job)).toBe(true);
  });

  it('a node keeper running ProcessGroup is SIGKILLed: its job leader dies too', async () => {
    const ready = join(dir, 'node-with');
    const url = pathToFileURL(join(built, 'process-group.js')).href;
    const keeper = startKeeper(process.execPath, [KEEPER, url, ready, 'with', 'sleep', '60']);
    const [jobPid, pdeath] = await readReady(ready);
    const job = Number(jobPid);
    groups.add(job);
    expect(pdeath).toBe('true');
    await waitForExec(job, 'sleep');
    process.kill(keeper, 'SIGKILL');
    await waitFor('the job to die with its keeper', () => !isLive(job), 3_000);
  });

  it('control: with parentDeathSignal false the job outlives a SIGKILLed node keeper', async () => {
    const ready = join(dir, 'node-without');
    const url = pathToFileURL(join(built, 'process-group.js')).href;
    const keeper = startKeeper(process.execPath, [KEEPER, url, ready, 'without', 'sleep', '60']);
    const [jobPid, pdeath] = await readReady(ready);
    const job = Number(jobPid);
    groups.add(job);
    expect(pdeath).toBe('false');
    await waitForExec(job, 'sleep');
    process.kill(keeper, 'SIGKILL');
    await sleep(500);
    expect(isLive(job)).toBe(true);
  });
});
