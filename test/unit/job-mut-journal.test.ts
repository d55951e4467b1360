/**
 * `journal` output mode when journald is slow, half there or goes away: the job then inherits the
 * keeper's stdout/stderr, with one warning naming the socket and what went wrong. The connections that
 * never complete or fail on the header are stood in for by a fake socket (node:net's createConnection is
 * replaced per test; by default it is the real one, talking to a stand-in journald).
 */
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { JobOutput } from '../../src/job/output.js';
import { JournalServer } from '../support/journal-server.js';

/** What the next createConnection calls do, in order; real ones once the list is empty. */
let fakes: Array<(path: string) => Socket> = [];
/** The path of every createConnection call. */
let connected: string[] = [];

vi.mock('node:net', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:net')>();
  return {
    ...real,
    createConnection: (options: { path: string }) => {
      connected.push(options.path);
      const fake = fakes.shift();
      return fake ? fake(options.path) : real.createConnection(options);
    },
  };
});

/** A socket that behaves as told: connects or not, fails the header write or not. */
class FakeSocket extends EventEmitter {
  destroyed = false;
  written: string[] = [];
  constructor(private readonly opts: { connect: boolean; writeError?: Error; error?: unknown }) {
    super();
    setImmediate(() => {
      if (this.opts.error !== undefined) this.emit('error', this.opts.error);
      else if (this.opts.connect) this.emit('connect');
    });
  }
  write(data: string, cb: (err?: Error | null) => void): boolean {
    this.written.push(data);
    setImmediate(() => cb(this.opts.writeError ?? null));
    return true;
  }
  destroy(): this {
    this.destroyed = true;
    return this;
  }
}

function fake(opts: ConstructorParameters<typeof FakeSocket>[0]): { socket: FakeSocket; make: (path: string) => Socket } {
  const socket = new FakeSocket(opts);
  return { socket, make: () => socket as unknown as Socket };
}

let journal: JournalServer | null = null;

beforeEach(() => {
  fakes = [];
  connected = [];
});

afterEach(async () => {
  vi.useRealTimers();
  fakes = [];
  await journal?.close();
  journal = null;
});

function warnings(): { list: { err: Error; socket: string }[]; on: (err: Error, socket: string) => void } {
  const list: { err: Error; socket: string }[] = [];
  return { list, on: (err, socket) => list.push({ err, socket }) };
}

describe('journal mode: journald slow or half there', () => {
  it('gives up connecting after connectTimeoutMs, says so, and lets go of both attempts', async () => {
    const [a, b] = [fake({ connect: false }), fake({ connect: false })];
    fakes = [a.make, b.make];
    const w = warnings();
    const output = new JobOutput({ mode: 'journal', journalSocket: '/lk/journal', connectTimeoutMs: 50, onJournalUnavailable: w.on });
    const t0 = performance.now();
    const stdio = await output.open('work_slow');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(40);
    expect(stdio.mode).toBe('inherit');
    expect(stdio.stdio).toBe('inherit');
    expect(w.list).toEqual([{ err: new Error('no connection to /lk/journal within 50 ms'), socket: '/lk/journal' }]);
    expect([a.socket.destroyed, b.socket.destroyed]).toEqual([true, true]);
  });

  it('waits 1 s for journald by default', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    fakes = [fake({ connect: false }).make, fake({ connect: false }).make];
    const w = warnings();
    const output = new JobOutput({ mode: 'journal', journalSocket: '/lk/journal', onJournalUnavailable: w.on });
    let mode: string | null = null;
    void output.open('work_d').then((s) => (mode = s.mode));
    await vi.advanceTimersByTimeAsync(999);
    expect(mode).toBeNull();
    await vi.advanceTimersByTimeAsync(1);
    expect(mode).toBe('inherit');
    expect(w.list[0]!.err.message).toBe('no connection to /lk/journal within 1000 ms');
  });

  it('a connection that did come up is closed when the other failed (stdout failing)', async () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED /lk/journal'), { code: 'ECONNREFUSED' });
    const [out, err] = [fake({ connect: true, error: refused }), fake({ connect: true })];
    fakes = [out.make, err.make];
    const w = warnings();
    const stdio = await new JobOutput({ mode: 'journal', journalSocket: '/lk/journal', onJournalUnavailable: w.on }).open('work_h');
    expect(stdio.mode).toBe('inherit');
    expect(err.socket.destroyed).toBe(true);
    expect(err.socket.written).toEqual(['lease-keeper-job-work_h\n\n3\n1\n0\n0\n0\n']);
    expect(w.list).toEqual([{ err: refused, socket: '/lk/journal' }]);
  });

  it('a connection that did come up is closed when the other failed (stderr failing)', async () => {
    const refused = Object.assign(new Error('connect EAGAIN /lk/journal'), { code: 'EAGAIN' });
    const [out, err] = [fake({ connect: true }), fake({ connect: true, error: refused })];
    fakes = [out.make, err.make];
    const w = warnings();
    const stdio = await new JobOutput({ mode: 'journal', journalSocket: '/lk/journal', onJournalUnavailable: w.on }).open('work_h2');
    expect(stdio.mode).toBe('inherit');
    expect(out.socket.destroyed).toBe(true);
    expect(out.socket.written).toEqual(['lease-keeper-job-work_h2\n\n6\n1\n0\n0\n0\n']);
    expect(w.list).toEqual([{ err: refused, socket: '/lk/journal' }]);
  });

  it('a stream header that cannot be written counts as journald unreachable', async () => {
    const reset = new Error('write EPIPE');
    const [out, err] = [fake({ connect: true, writeError: reset }), fake({ connect: true, writeError: reset })];
    fakes = [out.make, err.make];
    const w = warnings();
    const stdio = await new JobOutput({ mode: 'journal', journalSocket: '/lk/journal', onJournalUnavailable: w.on }).open('work_w');
    expect(stdio.mode).toBe('inherit');
    expect(w.list.map((x) => x.err)).toEqual([reset]);
    expect([out.socket.destroyed, err.socket.destroyed]).toEqual([true, true]);
  });

  it('a failure that is not an Error still gives the warning an Error', async () => {
    fakes = [fake({ connect: false, error: 'gone' }).make, fake({ connect: false, error: 'gone' }).make];
    const w = warnings();
    await new JobOutput({ mode: 'journal', journalSocket: '/lk/journal', onJournalUnavailable: w.on }).open('work_s');
    expect(w.list).toHaveLength(1);
    expect(w.list[0]!.err).toBeInstanceOf(Error);
    expect(w.list[0]!.err.message).toBe('gone');
  });

  it("connects to journald's stdout socket by default", async () => {
    fakes = [fake({ connect: false }).make, fake({ connect: false }).make];
    const w = warnings();
    await new JobOutput({ mode: 'journal', connectTimeoutMs: 10, onJournalUnavailable: w.on }).open('work_def');
    expect(connected).toEqual(['/run/systemd/journal/stdout', '/run/systemd/journal/stdout']);
    expect(w.list.map((x) => x.socket)).toEqual(['/run/systemd/journal/stdout']);
  });

  it('inherit mode connects to nothing', async () => {
    const w = warnings();
    const stdio = await new JobOutput({ mode: 'inherit', journalSocket: '/lk/journal', onJournalUnavailable: w.on }).open('work_i');
    expect(stdio.mode).toBe('inherit');
    expect(connected).toEqual([]);
    expect(w.list).toEqual([]);
  });

  it('with nobody to warn, an unreachable journald still gives inherit', async () => {
    const output = new JobOutput({ mode: 'journal', journalSocket: join('/nonexistent-lk', 'stdout') });
    expect((await output.open('work_q')).mode).toBe('inherit');
  });
});

describe('journal mode: the streams once connected', () => {
  beforeEach(async () => {
    journal = await JournalServer.start();
  });

  it("an error on the keeper's copy of a stream after the hand-over does not crash the keeper", async () => {
    const stdio = await new JobOutput({ mode: 'journal', journalSocket: journal!.path }).open('work_e');
    expect(stdio.mode).toBe('journal');
    const [, out, err] = stdio.stdio as [unknown, net.Socket, net.Socket];
    expect(() => out.emit('error', new Error('read ECONNRESET'))).not.toThrow();
    expect(() => err.emit('error', new Error('read ECONNRESET'))).not.toThrow();
    // The streams are still there to be handed to the job.
    expect([out.destroyed, err.destroyed]).toEqual([false, false]);
    stdio.started({ stdout: null, stderr: null });
  });

  it('close() without a start (the spawn failed) ends both streams', async () => {
    const stdio = await new JobOutput({ mode: 'journal', journalSocket: journal!.path }).open('work_x');
    expect(await stdio.close()).toBe(false);
    await journal!.waitFor('both streams to end', () => journal!.streams.length === 2 && journal!.streams.every((s) => s.ended), 5_000);
  });
});
