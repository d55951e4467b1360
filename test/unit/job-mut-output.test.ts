/**
 * The job's output modes at the edges the process-level tests (job-output.test.ts) do not reach: how a
 * pipe's end is noticed (EOF, close, read error), what `close()` and `flush()` promise and how long they
 * may take, the keeper's own stream breaking, the defaults, and the exact line cuts. The job's pipes are
 * stood in for by PassThrough streams, so the timing is the test's, not the machine's.
 */
import { fstatSync } from 'node:fs';
import { PassThrough, Readable, Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LineSplitter, pieceEnd } from '../../src/job/output-lines.js';
import { JobOutput, resolveJobOutputMode, stdoutIsJournal, type JobStdio } from '../../src/job/output.js';

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

/** A Writable that keeps what it gets. */
function collector(): PassThrough & { text: () => string } {
  const chunks: Buffer[] = [];
  const s = new PassThrough() as PassThrough & { text: () => string };
  s.on('data', (c: Buffer) => chunks.push(c));
  s.text = () => Buffer.concat(chunks).toString('latin1');
  return s;
}

/** A job pipe: a readable the test writes into. */
function pipe(options: ConstructorParameters<typeof Readable>[0] = {}): Readable {
  return new Readable({ read() {}, ...options });
}

const tick = () => new Promise<void>((r) => setImmediate(r));

async function prefixStdio(workId: string, opts: ConstructorParameters<typeof JobOutput>[0]): Promise<JobStdio> {
  return new JobOutput(opts).open(workId);
}

describe('JOURNAL_STREAM detection (the keeper under systemd)', () => {
  it('is the whole value <dev>:<inode>, nothing before or after it', () => {
    const st = () => ({ dev: 25, ino: 4242 });
    for (const value of ['25:4242x', 'x25:4242', ' 25:4242', '25:4242 ', '25:4242\n1', '25:', ':4242', '25-4242']) {
      expect(stdoutIsJournal({ JOURNAL_STREAM: value }, st), value).toBe(false);
    }
    expect(stdoutIsJournal({ JOURNAL_STREAM: '25:4242' }, st)).toBe(true);
    // Both numbers count: the same inode on another device is another file.
    expect(stdoutIsJournal({ JOURNAL_STREAM: '26:4242' }, st)).toBe(false);
  });

  it("compares against the keeper's real fd 1 by default", () => {
    const st = fstatSync(1);
    expect(stdoutIsJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino}` })).toBe(true);
    expect(stdoutIsJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino + 1}` })).toBe(false);
    expect(resolveJobOutputMode('auto', { JOURNAL_STREAM: `${st.dev}:${st.ino}` })).toBe('journal');
    expect(resolveJobOutputMode('auto', {})).toBe('inherit');
  });
});

describe('LineSplitter and pieceEnd: the exact cuts', () => {
  it('refuses a bound below 4 bytes or not a whole number (a UTF-8 character must fit in a piece)', () => {
    for (const bad of [3, 0, -1, 4.5, Number.NaN]) {
      expect(() => new LineSplitter(bad), String(bad)).toThrow(new RangeError('maxLineBytes must be an integer >= 4'));
    }
    expect(new LineSplitter(4).maxLineBytes).toBe(4);
  });

  it('a line of exactly maxLineBytes is one line, not a piece and an empty line', () => {
    const s = new LineSplitter(5);
    expect(s.push(Buffer.from('abcde\nfghij')).map(String)).toEqual(['abcde']);
    expect(s.pendingBytes).toBe(5);
    expect(s.push(Buffer.from('\n')).map(String)).toEqual(['fghij']);
    expect(s.push(Buffer.from('klmnop\n')).map(String)).toEqual(['klmno', 'p']);
  });

  it('looks back at most 3 bytes for the start of a character, never to the start of the piece', () => {
    // Four continuation bytes before the cut: not UTF-8, so the cut stays at max even though an ASCII byte
    // sits 4 bytes back.
    expect(pieceEnd(Buffer.from([0x61, 0x61, 0x80, 0x80, 0x80, 0x80, 0x62]), 5)).toBe(5);
    // A 4-byte character starting 3 bytes back is moved whole to the next piece.
    expect(pieceEnd(Buffer.from([0x61, 0x61, 0xf0, 0x9f, 0x98, 0x80]), 5)).toBe(2);
    // A piece is never empty: a short bound over continuation bytes cuts at the bound.
    expect(pieceEnd(Buffer.from([0x61, 0x80, 0x80, 0x80]), 2)).toBe(2);
    expect(pieceEnd(Buffer.from([0x61, 0x80, 0x80, 0x80]), 3)).toBe(3);
  });
});

describe('prefix mode: the end of a pipe', () => {
  it('takes no JOURNAL_STREAM from the keeper: the variable is named, to be removed from the job environment', async () => {
    const stdio = await prefixStdio('work_e', { mode: 'prefix', stdout: collector(), stderr: collector() });
    expect(Object.entries(stdio.env)).toEqual([['JOURNAL_STREAM', undefined]]);
    expect(stdio.mode).toBe('prefix');
    // stdin stays the keeper's; stdout and stderr are pipes the keeper reads.
    expect(stdio.stdio).toEqual(['inherit', 'pipe', 'pipe']);
  });

  it('a spawn that failed (no pipes): close resolves at once, nothing was cut', async () => {
    const stdio = await prefixStdio('work_n', { mode: 'prefix', stdout: collector(), stderr: collector() });
    stdio.started({ stdout: null, stderr: null });
    expect(await stdio.close()).toBe(false);
  });

  it('close() twice is one close', async () => {
    const stdio = await prefixStdio('work_c', { mode: 'prefix', stdout: collector(), stderr: collector() });
    stdio.started({ stdout: pipe(), stderr: null });
    const first = stdio.close();
    expect(stdio.close()).toBe(first);
  });

  it('writes the unfinished last line at EOF, without waiting for close()', async () => {
    const stdout = collector();
    const stderr = collector();
    const stdio = await prefixStdio('work_eof', { mode: 'prefix', stdout, stderr });
    const [out, err] = [pipe(), pipe()];
    stdio.started({ stdout: out, stderr: err });
    out.push('whole\npart');
    err.push('err-part');
    out.push(null);
    err.push(null);
    await tick();
    await tick();
    expect(stdout.text()).toBe('[work_eof] whole\n[work_eof] part\n');
    expect(stderr.text()).toBe('[work_eof] err-part\n');
    expect(out.destroyed).toBe(true);
    expect(await stdio.close()).toBe(false);
  });

  it("EOF is noticed from 'end' alone (a stream that never emits 'close')", async () => {
    const stdout = collector();
    const stdio = await prefixStdio('work_end', { mode: 'prefix', stdout, stderr: collector(), closeTimeoutMs: 10_000 });
    const out = pipe({ emitClose: false, autoDestroy: false });
    stdio.started({ stdout: out, stderr: null });
    out.push('a\n');
    out.push(null);
    const t0 = performance.now();
    expect(await stdio.close()).toBe(false);
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(stdout.text()).toBe('[work_end] a\n');
  });

  it("EOF is noticed from 'close' alone (a pipe torn down without an end)", async () => {
    const stdout = collector();
    const stdio = await prefixStdio('work_cl', { mode: 'prefix', stdout, stderr: collector(), closeTimeoutMs: 10_000 });
    const out = pipe();
    stdio.started({ stdout: out, stderr: null });
    out.push('a\nb');
    await tick();
    out.destroy();
    const t0 = performance.now();
    expect(await stdio.close()).toBe(false);
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(stdout.text()).toBe('[work_cl] a\n[work_cl] b\n');
  });

  it('a read error ends the copy like EOF, keeping what was read', async () => {
    const stdout = collector();
    const stdio = await prefixStdio('work_rd', { mode: 'prefix', stdout, stderr: collector(), closeTimeoutMs: 10_000 });
    const out = pipe({ emitClose: false, autoDestroy: false });
    stdio.started({ stdout: out, stderr: null });
    out.push('x\ny');
    await tick();
    out.emit('error', new Error('EIO'));
    const t0 = performance.now();
    expect(await stdio.close()).toBe(false);
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(stdout.text()).toBe('[work_rd] x\n[work_rd] y\n');
  });

  it('a pipe held open is cut after 2 s by default: the output so far is written, the pipe let go, no timer left', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const stdout = collector();
    const stdio = await prefixStdio('work_held', { mode: 'prefix', stdout, stderr: collector() });
    const out = pipe();
    stdio.started({ stdout: out, stderr: null });
    out.push('before\nhalf');
    await tick();
    let cut: boolean | null = null;
    void stdio.close().then((c) => (cut = c));
    await vi.advanceTimersByTimeAsync(1_999);
    expect(cut).toBeNull();
    await vi.advanceTimersByTimeAsync(1);
    expect(cut).toBe(true);
    expect(out.destroyed).toBe(true);
    expect(stdout.text()).toBe('[work_held] before\n[work_held] half\n');
    // Data the held pipe still produces is not copied any more.
    out.emit('data', Buffer.from('late\n'));
    expect(stdout.text()).toBe('[work_held] before\n[work_held] half\n');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a pipe that ended leaves no close timer behind (the keeper can exit at once)', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const stdio = await prefixStdio('work_t', { mode: 'prefix', stdout: collector(), stderr: collector(), closeTimeoutMs: 60_000 });
    const out = pipe();
    stdio.started({ stdout: out, stderr: null });
    out.push(null);
    expect(await stdio.close()).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("goes to the keeper's own stdout and stderr by default", async () => {
    const outWrite = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    const errWrite = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const stdio = await prefixStdio('work_own', { mode: 'prefix' });
    const [out, err] = [pipe(), pipe()];
    stdio.started({ stdout: out, stderr: err });
    out.push('to-stdout\n');
    err.push('to-stderr\n');
    out.push(null);
    err.push(null);
    expect(await stdio.close()).toBe(false);
    expect(outWrite.mock.calls.map((c) => String(c[0]))).toEqual(['[work_own] to-stdout\n']);
    expect(errWrite.mock.calls.map((c) => String(c[0]))).toEqual(['[work_own] to-stderr\n']);
  });
});

/** A keeper stream that takes one chunk every `ms` (or never, with Infinity), buffering at most 1 byte. */
function slowStream(ms: number): Writable & { got: string[] } {
  const got: string[] = [];
  const w = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _enc, done) {
      got.push(String(chunk));
      if (Number.isFinite(ms)) setTimeout(done, ms);
    },
  }) as Writable & { got: string[] };
  w.got = got;
  return w;
}

describe("prefix mode: the keeper's own stream", () => {
  it('a full stream pauses the pipe; a broken one (EPIPE) releases it, and the rest is dropped without a crash', async () => {
    const stuck = slowStream(Infinity);
    const stdio = await prefixStdio('work_br', { mode: 'prefix', stdout: stuck, stderr: collector(), closeTimeoutMs: 10_000 });
    const out = pipe();
    stdio.started({ stdout: out, stderr: null });
    out.push('one\ntwo\n');
    await tick();
    expect(out.isPaused()).toBe(true);
    stuck.destroy(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
    await tick();
    expect(out.isPaused()).toBe(false);
    out.push('three\n');
    out.push(null);
    const t0 = performance.now();
    expect(await stdio.close()).toBe(false);
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(stuck.got).toEqual(['[work_br] one\n']);
  });

  it('a stream that errored while still open takes nothing more, and flush() does not wait for it', async () => {
    // autoDestroy off: the stream is errored but not destroyed, and says it still holds bytes.
    const w = new Writable({ highWaterMark: 1, autoDestroy: false, write: () => {} });
    const output = new JobOutput({ mode: 'prefix', stdout: w, stderr: collector() });
    const stdio = await output.open('work_er');
    const out = pipe();
    stdio.started({ stdout: out, stderr: null });
    out.push('one\n');
    await tick();
    expect(out.isPaused()).toBe(true);
    w.emit('error', new Error('write EPIPE'));
    expect(out.isPaused()).toBe(false);
    expect(w.writableLength).toBeGreaterThan(0);
    const writes = vi.spyOn(w, 'write');
    out.push('two\n');
    out.push(null);
    expect(await stdio.close()).toBe(false);
    expect(writes).not.toHaveBeenCalled();
    const t0 = performance.now();
    await output.flush(5_000);
    expect(performance.now() - t0).toBeLessThan(1_000);
  });

  it('a stream that keeps failing (EPIPE on every write) never crashes the keeper', () => {
    const w = new Writable({ autoDestroy: false, write: () => {} });
    new JobOutput({ mode: 'prefix', stdout: w, stderr: collector() });
    for (let i = 0; i < 3; i++) expect(() => w.emit('error', new Error('write EPIPE'))).not.toThrow();
  });

  it("inherit and journal mode leave the keeper's own stdout and stderr alone", () => {
    const before = [process.stdout, process.stderr].map((s) => [s.listenerCount('error'), s.listenerCount('drain')]);
    new JobOutput({ mode: 'inherit' });
    new JobOutput({ mode: 'journal' });
    expect([process.stdout, process.stderr].map((s) => [s.listenerCount('error'), s.listenerCount('drain')])).toEqual(before);
  });

  it('a destroyed stream takes nothing more', async () => {
    const w = slowStream(0);
    const stdio = await prefixStdio('work_d', { mode: 'prefix', stdout: w, stderr: collector() });
    const out = pipe();
    stdio.started({ stdout: out, stderr: null });
    w.destroy();
    const writes = vi.spyOn(w, 'write');
    out.push('x\n');
    out.push(null);
    expect(await stdio.close()).toBe(false);
    expect(writes).not.toHaveBeenCalled();
  });

  it('every pipe waiting for the same full stream resumes on its drain', async () => {
    const slow = slowStream(30);
    const output = new JobOutput({ mode: 'prefix', stdout: slow, stderr: collector(), closeTimeoutMs: 10_000 });
    const [a, b] = await Promise.all([output.open('work_a'), output.open('work_b')]);
    const [pa, pb] = [pipe(), pipe()];
    a.started({ stdout: pa, stderr: null });
    b.started({ stdout: pb, stderr: null });
    pa.push('a1\na2\n');
    pb.push('b1\nb2\n');
    pa.push(null);
    pb.push(null);
    expect(await Promise.all([a.close(), b.close()])).toEqual([false, false]);
    await output.flush(5_000);
    expect([...slow.got].sort()).toEqual(['[work_a] a1\n', '[work_a] a2\n', '[work_b] b1\n', '[work_b] b2\n']);
  });
});

describe('JobOutput.flush', () => {
  it('waits until the stdout stream took what is queued, and no longer', async () => {
    const slow = slowStream(200);
    const output = new JobOutput({ mode: 'prefix', stdout: slow, stderr: collector() });
    const stdio = await output.open('work_q');
    const out = pipe();
    stdio.started({ stdout: out, stderr: null });
    out.push('x\n');
    out.push(null);
    await stdio.close();
    expect(slow.writableLength).toBeGreaterThan(0);
    const t0 = performance.now();
    await output.flush(10_000);
    const took = performance.now() - t0;
    expect(slow.writableLength).toBe(0);
    expect(took).toBeGreaterThanOrEqual(100);
    expect(took).toBeLessThan(3_000);
  });

  it('waits for the stderr stream as well', async () => {
    const slow = slowStream(200);
    const output = new JobOutput({ mode: 'prefix', stdout: collector(), stderr: slow });
    const stdio = await output.open('work_q2');
    const err = pipe();
    stdio.started({ stdout: null, stderr: err });
    err.push('e\n');
    err.push(null);
    await stdio.close();
    expect(slow.writableLength).toBeGreaterThan(0);
    await output.flush(10_000);
    expect(slow.writableLength).toBe(0);
  });

  it('gives up on a stream that never drains after the time given', async () => {
    const stuck = slowStream(Infinity);
    const output = new JobOutput({ mode: 'prefix', stdout: stuck, stderr: collector() });
    const stdio = await output.open('work_s');
    const out = pipe();
    stdio.started({ stdout: out, stderr: null });
    out.push('x\n');
    await tick();
    const t0 = performance.now();
    await output.flush(300);
    const took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(280);
    expect(took).toBeLessThan(2_000);
    stuck.destroy();
    out.destroy();
  });

  it('has nothing to wait for in inherit and journal mode', async () => {
    for (const mode of ['inherit', 'journal'] as const) {
      const t0 = performance.now();
      await new JobOutput({ mode }).flush(2_000);
      expect(performance.now() - t0).toBeLessThan(500);
    }
  });

  it('leaves no timer behind once the closes it waited for are done', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const output = new JobOutput({ mode: 'prefix', stdout: collector(), stderr: collector(), closeTimeoutMs: 60_000 });
    const stdio = await output.open('work_ft');
    const out = pipe();
    stdio.started({ stdout: out, stderr: null });
    void stdio.close();
    out.push(null);
    await output.flush(60_000);
    expect(vi.getTimerCount()).toBe(0);
  });
});
