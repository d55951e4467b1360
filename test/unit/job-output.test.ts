import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  JOB_STDERR_PRIORITY,
  JOB_STDOUT_PRIORITY,
  JobOutput,
  journalIdentifier,
  journalStreamHeader,
  resolveJobOutputMode,
  stdoutIsJournal,
  type JobStdio,
} from '../../src/job/output.js';
import { JournalServer } from '../support/journal-server.js';

const children: ChildProcess[] = [];
let journal: JournalServer | null = null;

afterEach(async () => {
  // Each job leads its own group (as under the keeper): kill the group, escaped background sleeps included.
  for (const c of children.splice(0)) {
    try {
      process.kill(-c.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await journal?.close();
  journal = null;
});

/** Runs `script` under sh with the job's stdio, as the worker does; resolves once it exited. */
function run(stdio: JobStdio, script: string): { child: ChildProcess; exited: Promise<void> } {
  const child = spawn('/bin/sh', ['-c', script], { stdio: stdio.stdio, detached: true, env: { PATH: '/usr/bin:/bin', ...stdio.env } });
  children.push(child);
  stdio.started({ stdout: child.stdout, stderr: child.stderr });
  return { child, exited: new Promise((resolve) => child.once('exit', () => resolve())) };
}

/** A Writable that keeps what it gets. */
function collector(): PassThrough & { text: () => string; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const s = new PassThrough() as PassThrough & { text: () => string; bytes: () => Buffer };
  s.on('data', (c: Buffer) => chunks.push(c));
  s.text = () => Buffer.concat(chunks).toString('latin1');
  s.bytes = () => Buffer.concat(chunks);
  return s;
}

describe('journal header and detection', () => {
  it('the stream header has the seven fields of sd_journal_stream_fd, unit id empty', () => {
    expect(journalStreamHeader('lease-keeper-job-work_1', 3)).toBe('lease-keeper-job-work_1\n\n3\n1\n0\n0\n0\n');
    expect(journalIdentifier('work_abc')).toBe('lease-keeper-job-work_abc');
    expect(JOB_STDERR_PRIORITY).toBeLessThan(JOB_STDOUT_PRIORITY);
  });

  it('stdout is journald only when JOURNAL_STREAM names the dev:inode of fd 1', () => {
    const st = { dev: 25, ino: 4242 };
    expect(stdoutIsJournal({ JOURNAL_STREAM: '25:4242' }, () => st)).toBe(true);
    expect(stdoutIsJournal({ JOURNAL_STREAM: '25:4243' }, () => st)).toBe(false);
    expect(stdoutIsJournal({ JOURNAL_STREAM: '8:12345' }, () => st)).toBe(false);
    expect(stdoutIsJournal({ JOURNAL_STREAM: 'junk' }, () => st)).toBe(false);
    expect(stdoutIsJournal({}, () => st)).toBe(false);
    expect(
      stdoutIsJournal({ JOURNAL_STREAM: '25:4242' }, () => {
        throw new Error('EBADF');
      }),
    ).toBe(false);
  });

  it('auto resolves to journal or inherit; explicit modes stay', () => {
    const st = () => ({ dev: 1, ino: 2 });
    expect(resolveJobOutputMode('auto', { JOURNAL_STREAM: '1:2' }, st)).toBe('journal');
    expect(resolveJobOutputMode('auto', { JOURNAL_STREAM: '1:3' }, st)).toBe('inherit');
    expect(resolveJobOutputMode('prefix', { JOURNAL_STREAM: '1:2' }, st)).toBe('prefix');
    expect(resolveJobOutputMode('journal', {}, st)).toBe('journal');
  });
});

describe('journal mode', () => {
  beforeEach(async () => {
    journal = await JournalServer.start();
  });

  it("gives the job two streams of its own, stdout at 6 and stderr at 3, with the work item's identifier", async () => {
    const output = new JobOutput({ mode: 'journal', journalSocket: journal!.path });
    const stdio = await output.open('work_j1');
    expect(stdio.mode).toBe('journal');
    const { exited } = run(stdio, 'echo out-1; echo err-1 >&2; echo out-2; printf "<4>warned\\n"; printf partial');
    await exited;
    await journal!.waitFor('both streams to end', () => journal!.streams.length === 2 && journal!.streams.every((s) => s.ended));
    const [out, err] = [6, 3].map((p) => journal!.streams.find((s) => s.priority === p)!);
    for (const s of [out!, err!]) {
      expect(s.identifier).toBe('lease-keeper-job-work_j1');
      expect(s.unitId).toBe('');
      expect(s.levelPrefix).toBe(true);
      expect(s.forward).toEqual({ syslog: false, kmsg: false, console: false });
    }
    expect(out!.lines.map(String)).toEqual(['out-1', 'out-2', '<4>warned']);
    expect(err!.lines.map(String)).toEqual(['err-1']);
  });

  it("sets the job's JOURNAL_STREAM to its own stderr stream (dev:inode), which the job sees on its fd 2", async () => {
    const output = new JobOutput({ mode: 'journal', journalSocket: journal!.path });
    const stdio = await output.open('work_j2');
    expect(stdio.env.JOURNAL_STREAM).toMatch(/^\d+:\d+$/);
    // stat -L /dev/stderr inside the job: the device and inode of its fd 2, in the same decimal form.
    const { exited } = run(stdio, 'echo "$JOURNAL_STREAM"; stat -L -c "%d:%i" /proc/self/fd/2');
    await exited;
    await journal!.waitFor('the stdout stream', () => journal!.streams.some((s) => s.priority === 6 && s.lines.length === 2));
    const [announced, actual] = journal!.streams.find((s) => s.priority === 6)!.lines.map(String);
    expect(announced).toBe(stdio.env.JOURNAL_STREAM);
    expect(actual).toBe(announced);
  });

  it('closes the keeper copies right after the spawn: the streams end when the job ends', async () => {
    const output = new JobOutput({ mode: 'journal', journalSocket: journal!.path });
    const stdio = await output.open('work_j3');
    const { exited } = run(stdio, 'echo bye');
    await exited;
    await journal!.waitFor('EOF on both streams', () => journal!.streams.length === 2 && journal!.streams.every((s) => s.ended), 5_000);
  });

  it('falls back to inherit with one warning when the socket cannot be reached', async () => {
    const warnings: { err: Error; socket: string }[] = [];
    const missing = join(journal!.dir, 'missing');
    const output = new JobOutput({ mode: 'journal', journalSocket: missing, onJournalUnavailable: (err, socket) => warnings.push({ err, socket }) });
    const a = await output.open('work_a');
    const b = await output.open('work_b');
    expect(a.mode).toBe('inherit');
    expect(a.stdio).toBe('inherit');
    expect(b.mode).toBe('inherit');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.socket).toBe(missing);
    expect(warnings[0]!.err.message).toMatch(/ENOENT/);
  });
});

describe('prefix mode', () => {
  it('writes each line with the work id in front, stdout and stderr apart, the unfinished last line included', async () => {
    const stdout = collector();
    const stderr = collector();
    const output = new JobOutput({ mode: 'prefix', stdout, stderr });
    const stdio = await output.open('work_p1');
    expect(stdio.env).toEqual({ JOURNAL_STREAM: undefined });
    const { exited } = run(stdio, 'echo one; echo problem >&2; echo; printf tail');
    await exited;
    expect(await stdio.close()).toBe(false);
    expect(stdout.text()).toBe('[work_p1] one\n[work_p1] \n[work_p1] tail\n');
    expect(stderr.text()).toBe('[work_p1] problem\n');
  });

  it('two concurrent jobs: every line whole and under its own work id', async () => {
    const stdout = collector();
    const output = new JobOutput({ mode: 'prefix', stdout, stderr: collector() });
    const script = (tag: string) => `i=0; while [ $i -lt 2000 ]; do echo "${tag}-$i-${'x'.repeat(300)}"; i=$((i+1)); done`;
    const [a, b] = await Promise.all([output.open('work_A'), output.open('work_B')]);
    const ja = run(a, script('A'));
    const jb = run(b, script('B'));
    await Promise.all([ja.exited, jb.exited]);
    await Promise.all([a.close(), b.close()]);
    const lines = stdout.text().split('\n').slice(0, -1);
    expect(lines).toHaveLength(4000);
    for (const line of lines) expect(line).toMatch(/^\[work_(A)\] A-\d+-x{300}$|^\[work_(B)\] B-\d+-x{300}$/);
    // Each job's lines in its own order.
    for (const tag of ['A', 'B']) {
      const seq = lines.filter((l) => l.startsWith(`[work_${tag}]`)).map((l) => Number(l.split('-')[1]));
      expect(seq).toEqual([...Array(2000).keys()]);
    }
  });

  it('a 1 MB line comes out whole, in 16 KiB pieces each with the prefix', async () => {
    const stdout = collector();
    const output = new JobOutput({ mode: 'prefix', stdout, stderr: collector() });
    const stdio = await output.open('work_big');
    const { exited } = run(stdio, "head -c 1048576 /dev/zero | tr '\\0' 'z'; echo; echo after");
    await exited;
    await stdio.close();
    const lines = stdout.text().split('\n').slice(0, -1);
    expect(lines.at(-1)).toBe('[work_big] after');
    const pieces = lines.slice(0, -1);
    expect(pieces).toHaveLength(64);
    for (const p of pieces) expect(p).toMatch(/^\[work_big\] z{16384}$/);
  });

  it('binary output passes through byte for byte', async () => {
    const stdout = collector();
    const output = new JobOutput({ mode: 'prefix', stdout, stderr: collector() });
    const stdio = await output.open('work_bin');
    const { exited } = run(stdio, "printf 'a\\000b\\377\\376c\\n\\303\\050\\n'");
    await exited;
    await stdio.close();
    const expected = Buffer.concat([
      Buffer.from('[work_bin] a'),
      Buffer.from([0x00]),
      Buffer.from('b'),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('c\n[work_bin] '),
      Buffer.from([0xc3, 0x28]),
      Buffer.from('\n'),
    ]);
    expect(stdout.bytes().equals(expected)).toBe(true);
  });

  it('a slow destination pauses the job (backpressure) without blocking the event loop, and loses nothing', async () => {
    let written = 0;
    // Takes 16 KiB every 20 ms: a 2 MB burst needs ~2.5 s to get through.
    const slow = new Writable({
      highWaterMark: 16 * 1024,
      write(chunk: Buffer, _enc, done) {
        written += chunk.length;
        setTimeout(done, chunk.length >= 1024 ? 20 : 0);
      },
    });
    const output = new JobOutput({ mode: 'prefix', stdout: slow, stderr: collector() });
    const stdio = await output.open('work_slow');
    const { exited } = run(stdio, "head -c 2097152 /dev/zero | tr '\\0' 'q'; echo");
    let maxLagMs = 0;
    let last = performance.now();
    const tick = setInterval(() => {
      const now = performance.now();
      maxLagMs = Math.max(maxLagMs, now - last - 10);
      last = now;
    }, 10);
    await exited;
    clearInterval(tick);
    await stdio.close();
    await output.flush(10_000);
    // 128 pieces of 16 KiB, each with its 12-byte prefix and newline.
    expect(written).toBe(128 * (16384 + '[work_slow] '.length + 1));
    // The loop kept turning all along (generous bound for a loaded 2-core machine).
    expect(maxLagMs).toBeLessThan(200);
  });

  it('a pipe held open by a process outside the job is cut after closeTimeoutMs, with the output so far', async () => {
    const stdout = collector();
    const output = new JobOutput({ mode: 'prefix', stdout, stderr: collector(), closeTimeoutMs: 300 });
    const stdio = await output.open('work_held');
    // The leader exits at once; the background sleep keeps both pipes open (an escaped daemon).
    const { exited } = run(stdio, 'echo before; sleep 30 & exit 0');
    await exited;
    const t0 = performance.now();
    expect(await stdio.close()).toBe(true);
    expect(performance.now() - t0).toBeLessThan(2_000);
    expect(stdout.text()).toBe('[work_held] before\n');
  });

  it('flush() returns at once with nothing pending, and waits for a pending close no longer than asked', async () => {
    const output = new JobOutput({ mode: 'prefix', stdout: collector(), stderr: collector(), closeTimeoutMs: 10_000 });
    let t0 = performance.now();
    await output.flush(2_000);
    expect(performance.now() - t0).toBeLessThan(200);

    const stdio = await output.open('work_f');
    const { exited } = run(stdio, 'echo x; sleep 30 & exit 0');
    await exited;
    void stdio.close(); // the background sleep holds the pipes: this close would take its full 10 s
    t0 = performance.now();
    await output.flush(300);
    const took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(280);
    expect(took).toBeLessThan(2_000);
  });

  it('inherit mode hands out the keeper streams and has nothing to close', async () => {
    const output = new JobOutput({ mode: 'inherit' });
    const stdio = await output.open('work_i');
    expect(stdio.stdio).toBe('inherit');
    expect(stdio.env).toEqual({});
    expect(await stdio.close()).toBe(false);
  });
});

