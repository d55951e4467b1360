/**
 * LEASE_KEEPER_JOB_OUTPUT with the real `bin/lease-keeper` against the real emulator: journal streams to a
 * stand-in journald socket (LEASE_KEEPER_JOURNAL_SOCKET, the test seam), the fallback to inherit, `auto`
 * deciding from the keeper's real stdout, and `prefix` mode with concurrent jobs, long lines, binary bytes
 * and a reader that stops reading.
 */
import { spawn } from 'node:child_process';
import { chmodSync, closeSync, fstatSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Emulator } from '../../src/emulator/index.js';
import { JournalServer } from '../support/journal-server.js';
import { integrationWorkerId } from '../support/processes.js';
import { BIN, type Keeper, alive, emulator, scratch, startKeeper } from './support.js';

let emu: Emulator;
let dir: string;
let journal: JournalServer | null = null;
const keepers: Keeper[] = [];

beforeEach(async () => {
  emu = await emulator(2);
  dir = scratch();
});

afterEach(async () => {
  for (const k of keepers.splice(0)) k.kill('SIGKILL');
  await journal?.close();
  journal = null;
  await emu.close();
  rmSync(dir, { recursive: true, force: true });
});

function keeper(opts: Parameters<typeof startKeeper>[1]): Keeper {
  const k = startKeeper(emu, opts);
  keepers.push(k);
  return k;
}

/** A job script in the scratch dir. */
function job(name: string, body: string): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/bash\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

/** Everything the keeper writes to stdout, as bytes (the Keeper helper decodes it as UTF-8). */
function rawStdout(k: Keeper): () => Buffer {
  const chunks: Buffer[] = [];
  k.child.stdout!.on('data', (c: Buffer) => chunks.push(c));
  return () => Buffer.concat(chunks);
}

const SPEAKER = `echo "out $LEASE_KEEPER_WORK_ID"
echo "err $LEASE_KEEPER_WORK_ID" >&2
echo "journal-stream \${JOURNAL_STREAM:-unset}"`;

describe('journal', () => {
  beforeEach(async () => {
    journal = await JournalServer.start();
  });

  it('two concurrent items: each job gets its own stdout (6) and stderr (3) streams named after its work item', async () => {
    const items = emu.queue({ count: 2 });
    const k = keeper({
      command: [job('speaker.sh', `${SPEAKER}\nsleep 0.3`)],
      once: false,
      env: { LEASE_KEEPER_CONCURRENCY: '2', LEASE_KEEPER_JOB_OUTPUT: 'journal', LEASE_KEEPER_JOURNAL_SOCKET: journal!.path },
    });
    for (const item of items) await k.waitFor((l) => l.msg === 'item_finished' && l.work_id === item.id);
    k.child.kill('SIGTERM');
    expect((await k.exit()).code).toBe(0);

    expect(k.lines.find((l) => l.msg === 'starting')?.job_output).toBe('journal');
    await journal!.waitFor('four ended streams', () => journal!.streams.length === 4 && journal!.streams.every((s) => s.ended));
    for (const item of items) {
      const streams = journal!.byIdentifier(`lease-keeper-job-${item.id}`);
      expect(streams.map((s) => s.priority).sort()).toEqual([3, 6]);
      const out = streams.find((s) => s.priority === 6)!;
      const err = streams.find((s) => s.priority === 3)!;
      expect(out.header).toEqual([`lease-keeper-job-${item.id}`, '', '6', '1', '0', '0', '0']);
      expect(out.lines.map(String).slice(0, 1)).toEqual([`out ${item.id}`]);
      expect(out.lines.map(String)[1]).toMatch(/^journal-stream \d+:\d+$/);
      expect(err.lines.map(String)).toEqual([`err ${item.id}`]);
    }
    // No job line passed through the keeper.
    expect(k.stdout).not.toContain('out work_');
    expect(k.stderr).not.toContain('err work_');
  });

  it('falls back to inherit with one warning when the socket cannot be reached', async () => {
    const items = emu.queue({ count: 2 });
    const k = keeper({
      command: [job('speaker.sh', SPEAKER)],
      once: false,
      env: { LEASE_KEEPER_JOB_OUTPUT: 'journal', LEASE_KEEPER_JOURNAL_SOCKET: join(dir, 'no-journald-here') },
    });
    for (const item of items) await k.waitFor((l) => l.msg === 'item_finished' && l.work_id === item.id);
    k.child.kill('SIGTERM');
    expect((await k.exit()).code).toBe(0);

    const warnings = k.lines.filter((l) => l.msg.startsWith('job_output_journal_unavailable'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.level).toBe(40);
    expect(warnings[0]!.socket).toBe(join(dir, 'no-journald-here'));
    // Both jobs ran, with the keeper's own stdout and stderr.
    for (const item of items) {
      expect(k.stdout).toContain(`out ${item.id}\n`);
      expect(k.stderr).toContain(`err ${item.id}\n`);
      expect(k.lines.find((l) => l.msg === 'item_finished' && l.work_id === item.id)?.outcome).toBe('completed');
    }
    expect(journal!.streams).toHaveLength(0);
  });
});

describe('auto', () => {
  beforeEach(async () => {
    journal = await JournalServer.start();
  });

  /** Runs the keeper --once with its stdout redirected to a file, JOURNAL_STREAM set from that file (or off by one). */
  async function runToFile(matching: boolean): Promise<{ out: string; workId: string }> {
    const [item] = emu.queue({ count: 1 });
    const outPath = join(dir, `keeper-${matching}.out`);
    const fd = openSync(outPath, 'w');
    const st = fstatSync(fd);
    const child = spawn(process.execPath, [BIN, 'run', '--once', '--', job('speaker.sh', SPEAKER)], {
      env: {
        PATH: process.env.PATH,
        QODER_API_URL: emu.url,
        QODER_PAT: emu.token,
        QODER_ENVIRONMENT_ID: emu.environmentId,
        LEASE_KEEPER_WORKER_ID: integrationWorkerId(`auto-${matching}`),
        JOURNAL_STREAM: `${st.dev}:${matching ? st.ino : st.ino + 1}`,
        LEASE_KEEPER_JOURNAL_SOCKET: journal!.path,
      },
      stdio: ['ignore', fd, 'ignore'],
    });
    closeSync(fd);
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    clearTimeout(timer);
    expect(code).toBe(0);
    return { out: readFileSync(outPath, 'utf8'), workId: item!.id };
  }

  it("picks journal when JOURNAL_STREAM is the dev:inode of the keeper's stdout", async () => {
    const { out, workId } = await runToFile(true);
    expect(out).toMatch(/"job_output":"journal".*"msg":"starting"/);
    expect(out).not.toContain(`out ${workId}`);
    await journal!.waitFor('the job streams', () => journal!.byIdentifier(`lease-keeper-job-${workId}`).length === 2);
  });

  it('inherits when JOURNAL_STREAM names another file (a stale variable)', async () => {
    const { out, workId } = await runToFile(false);
    expect(out).toMatch(/"job_output":"inherit".*"msg":"starting"/);
    expect(out).toContain(`out ${workId}\n`);
    expect(journal!.streams).toHaveLength(0);
  });
});

describe('prefix', () => {
  it('two concurrent jobs: every line whole, under the right work id, in order; stderr prefixed too', async () => {
    const items = emu.queue({ count: 2 });
    const pad = 'x'.repeat(200);
    const k = keeper({
      command: [job('chatty.sh', `for i in $(seq 1 3000); do echo "line $LEASE_KEEPER_WORK_ID $i ${pad}"; done\necho "oops $LEASE_KEEPER_WORK_ID" >&2`)],
      once: false,
      env: { LEASE_KEEPER_CONCURRENCY: '2', LEASE_KEEPER_JOB_OUTPUT: 'prefix' },
    });
    const raw = rawStdout(k);
    // Both jobs must have overlapped for the test to mean anything: both started before either finished.
    const started = await Promise.all(items.map((item) => k.waitFor((l) => l.msg === 'job_started' && l.work_id === item.id)));
    for (const item of items) await k.waitFor((l) => l.msg === 'item_finished' && l.work_id === item.id);
    const firstFinished = Math.min(...k.lines.filter((l) => l.msg === 'item_finished').map((l) => Date.parse(String(l.time))));
    for (const s of started) expect(Date.parse(String(s.time))).toBeLessThanOrEqual(firstFinished);
    k.child.kill('SIGTERM');
    expect((await k.exit()).code).toBe(0);

    const jobLines = raw()
      .toString('latin1')
      .split('\n')
      .filter((l) => l.startsWith('[work_'));
    expect(jobLines).toHaveLength(6000);
    for (const line of jobLines) expect(line).toMatch(new RegExp(`^\\[(work_[A-Za-z0-9_-]+)\\] line \\1 \\d+ ${pad}$`));
    for (const item of items) {
      const seq = jobLines.filter((l) => l.startsWith(`[${item.id}] `)).map((l) => Number(l.split(' ')[3]));
      expect(seq).toEqual(Array.from({ length: 3000 }, (_, i) => i + 1));
      expect(k.stderr).toContain(`[${item.id}] oops ${item.id}\n`);
    }
    expect(k.lines.find((l) => l.msg === 'starting')?.job_output).toBe('prefix');
  });

  it('a 1 MB line, binary bytes and an unfinished last line', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({
      command: [job('binary.sh', `head -c 1048576 /dev/zero | tr '\\0' 'z'; echo; printf 'bin\\000\\377\\376end\\n'; printf 'no newline'`)],
      env: { LEASE_KEEPER_JOB_OUTPUT: 'prefix' },
    });
    const raw = rawStdout(k);
    expect((await k.exit()).code).toBe(0);
    const id = item!.id;
    const lines = raw()
      .toString('latin1')
      .split('\n')
      .filter((l) => l.startsWith(`[${id}] `));
    expect(lines).toHaveLength(66);
    for (const piece of lines.slice(0, 64)) expect(piece).toBe(`[${id}] ${'z'.repeat(16384)}`);
    expect(Buffer.from(lines[64]!, 'latin1').equals(Buffer.concat([Buffer.from(`[${id}] bin`), Buffer.from([0, 0xff, 0xfe]), Buffer.from('end')]))).toBe(true);
    expect(lines[65]).toBe(`[${id}] no newline`);
    expect(k.lines.find((l) => l.msg === 'item_finished')?.outcome).toBe('completed');
  });

  it('pipes held open by a process that left the job do not hold up the report or the exit', async () => {
    const [item] = emu.queue({ count: 1 });
    const pidFile = join(dir, 'escaped.pid');
    // setsid: the sleep leaves the job's process group but keeps its stdout and stderr (the pipes) open.
    const k = keeper({
      command: [job('escape.sh', `echo before\nsetsid sleep 30 &\necho $! > ${pidFile}\necho after`)],
      env: { LEASE_KEEPER_JOB_OUTPUT: 'prefix' },
    });
    try {
      const exited = await k.waitForMsg('job_exited');
      const finished = await k.waitForMsg('item_finished');
      expect(finished.outcome).toBe('completed');
      // Reported without waiting for EOF on the pipes.
      expect(Date.parse(String(finished.time)) - Date.parse(String(exited.time))).toBeLessThan(1_000);
      const t0 = Date.now();
      expect((await k.exit(10_000)).code).toBe(0);
      // At most the 2 s given to what the pipes still hold, plus the exit.
      expect(Date.now() - t0).toBeLessThan(4_000);
      expect(k.stdout).toContain(`[${item!.id}] before\n[${item!.id}] after\n`);
      // Where containment follows setsid (a cgroup), the sleep is stopped with the job and the pipes end;
      // where it does not, the sleep still holds them and the keeper said it cut them.
      if (alive(Number(readFileSync(pidFile, 'utf8')))) expect(k.lines.some((l) => l.msg.startsWith('job_output_cut'))).toBe(true);
    } finally {
      try {
        process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL');
      } catch {
        // never started, or already gone (a containment that follows setsid)
      }
    }
  });

  it('a reader that stops reading the keeper: the job waits, heartbeats do not, nothing is lost', async () => {
    const [item] = emu.queue({ count: 1 });
    const since = emu.events().at(-1)?.seq ?? 0;
    // 4 MB in 100-byte lines; the keeper's stdout is not read for 4 s (two leases of 2 s).
    const k = keeper({
      command: [job('flood.sh', `head -c 4194304 /dev/zero | tr '\\0' 'y' | fold -w 99`)],
      env: { LEASE_KEEPER_JOB_OUTPUT: 'prefix', LEASE_KEEPER_LOG_LEVEL: 'warn' },
    });
    k.child.stdout!.pause();
    const raw: Buffer[] = [];
    await emu.waitForEvent((e) => e.type === 'heartbeat_accepted' && e.work_id === item!.id, { since, timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 4_000));
    k.child.stdout!.on('data', (c: Buffer) => raw.push(c));
    k.child.stdout!.resume();
    expect((await k.exit()).code).toBe(0);

    const beats = emu
      .events(since)
      .filter((e) => e.type === 'heartbeat_accepted' && e.work_id === item!.id)
      .map((e) => e.t_ms);
    expect(beats.length).toBeGreaterThanOrEqual(6);
    const gaps = beats.slice(1).map((t, i) => t - beats[i]!);
    // Granted ttl 2 s, interval ~0.66 s: a stalled keeper would have lost the lease (gap > 2000).
    expect(Math.max(...gaps)).toBeLessThan(1_500);
    expect(emu.events(since).some((e) => e.type === 'heartbeat_rejected' && e.work_id === item!.id)).toBe(false);
    expect(emu.item(item!.id).metadata).toMatchObject({ exit_code: '0' });
    const lines = Buffer.concat(raw)
      .toString('latin1')
      .split('\n')
      .filter((l) => l.startsWith(`[${item!.id}] `));
    // 4194304 bytes in lines of 99 (fold) = 42367 lines.
    expect(lines).toHaveLength(Math.ceil(4194304 / 99));
  });
});
