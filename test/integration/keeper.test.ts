/**
 * The real `bin/lease-keeper run` against the real emulator over loopback. Leases are granted for 2 s
 * (admin override) so a lifecycle takes seconds; tolerances are stated where time matters.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Emulator } from '../../src/emulator/index.js';
import {
  type Keeper,
  TOKEN,
  alive,
  emulator,
  jobStarted,
  readRecords,
  recordingJob,
  removeScratch,
  scratch,
  sleep,
  startKeeper,
} from './support.js';

let emu: Emulator;
let dir: string;
let job: string;
let record: string;
const keepers: Keeper[] = [];

beforeEach(async () => {
  emu = await emulator(2);
  dir = scratch();
  job = recordingJob(dir);
  record = join(dir, 'record');
});

afterEach(async () => {
  try {
    await Promise.all(keepers.splice(0).map((k) => k.end()));
  } finally {
    removeScratch(dir);
    await emu.close();
  }
});

function keeper(opts: Parameters<typeof startKeeper>[1]): Keeper {
  const k = startKeeper(emu, { ...opts, env: { RECORD: record, ...opts.env } });
  keepers.push(k);
  return k;
}

/** The lease deadlines the server granted this item: [accept time, expiry] per accepted heartbeat. */
function leaseWindows(workId: string): { at: number; until: number }[] {
  return emu
    .events()
    .filter((e) => e.type === 'heartbeat_accepted' && e.work_id === workId)
    .map((e) => ({ at: e.t_ms, until: Number(e.lease_expires_at_ms) }));
}

describe('lease-keeper run --once', () => {
  it('completion: lease first, job runs, exit code reported in metadata, item stopped, exit = job code', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job], env: { JOB_SECONDS: '3', JOB_EXIT: '7' } });
    const { code } = await k.exit();
    expect(code).toBe(7);
    const final = emu.item(item!.id);
    expect(final.state).toBe('stopped');
    expect(final.metadata).toMatchObject({ outcome: 'failed', exit_code: '7' });
    expect(final.metadata.worker_id).toMatch(/^it-/);
    // The job started only after the first accepted heartbeat.
    const [run] = readRecords(record);
    const firstAccepted = leaseWindows(item!.id)[0]!;
    expect(run!.start).toBeGreaterThanOrEqual(firstAccepted.at);
    // Heartbeats carried each last_heartbeat forward byte for byte: every accepted one after the first.
    const beats = emu.events().filter((e) => e.type === 'heartbeat_accepted' && e.work_id === item!.id);
    expect(beats.length).toBeGreaterThanOrEqual(4);
    for (let i = 1; i < beats.length; i++) expect(beats[i]!.expected).toBe(beats[i - 1]!.last_heartbeat);
    expect(k.msgs()).toEqual(expect.arrayContaining(['claimed', 'lease_acquired', 'heartbeat', 'job_exited', 'stopped']));
    expect(emu.events().filter((e) => e.type === 'heartbeat_rejected')).toEqual([]);
  });

  it('412 (takeover): job stopped at once, no more heartbeats, no stop, exit 75', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job] });
    await jobStarted(record);
    await k.waitForMsg('heartbeat');
    emu.takeover(item!.id);
    const lost = await k.waitForMsg('lease_lost');
    const { code } = await k.exit();
    expect(code).toBe(75);
    const [run] = readRecords(record);
    expect(run!.how).toBe('term');
    // Stopped promptly: SIGTERM within 100 ms of the 412 reaching the keeper (logs are ms-stamped).
    expect(run!.end! - Date.parse(String(lost.time))).toBeLessThan(500);
    const after = emu.events().filter((e) => e.work_id === item!.id && e.t_ms > Date.parse(String(lost.time)));
    expect(after.filter((e) => e.type.startsWith('heartbeat'))).toEqual([]);
    expect(after.filter((e) => e.type === 'stopped' || e.type === 'stop_requested')).toEqual([]);
  });

  it('409 (forced stop): job stopped, no confirmation, exit = job code', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job] });
    await jobStarted(record);
    emu.requestStop(item!.id, { force: true });
    await k.waitForMsg('stopped_by_server');
    const { code } = await k.exit();
    expect(code).toBe(0); // the job exited 0 on SIGTERM
    expect(readRecords(record)[0]!.how).toBe('term');
    expect(emu.item(item!.id).state).toBe('stopped');
    expect(emu.item(item!.id).metadata.outcome).toBeUndefined(); // not ours to write once stopped
  });

  it('state stopping: drain with heartbeats going on, then confirm the stop', async () => {
    const [item] = emu.queue({ count: 1 });
    const slowDrain = join(dir, 'slow-drain.sh');
    await import('node:fs').then((fs) => {
      fs.writeFileSync(slowDrain, `#!/usr/bin/env bash\ntrap 'sleep 2.5; echo "end $LEASE_KEEPER_WORK_ID $(date +%s%3N) term" >> "$RECORD"; exit 0' TERM\necho "start $LEASE_KEEPER_WORK_ID $(date +%s%3N)" >> "$RECORD"\nwhile true; do sleep 0.05 & wait $!; done\n`);
      fs.chmodSync(slowDrain, 0o755);
    });
    const k = keeper({ command: [slowDrain], env: { LEASE_KEEPER_STOP_GRACE_SECONDS: '10' } });
    await jobStarted(record);
    emu.requestStop(item!.id);
    const requested = await k.waitForMsg('stop_requested');
    const { code } = await k.exit();
    expect(code).toBe(0);
    const final = emu.item(item!.id);
    expect(final.state).toBe('stopped');
    expect(final.metadata.outcome).toBe('drained');
    // Heartbeats went on while the job drained for 2.5 s (lease 2 s: without them it would have expired).
    const during = emu
      .events()
      .filter((e) => e.type === 'heartbeat_accepted' && e.work_id === item!.id && e.t_ms > Date.parse(String(requested.time)));
    expect(during.length).toBeGreaterThanOrEqual(2);
    expect(emu.events().filter((e) => e.type === 'lease_expired')).toEqual([]);
  });

  it('lease_extended false: lease lost, exit 75', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job] });
    await jobStarted(record);
    emu.injectFault({ endpoint: 'heartbeat', kind: 'not_extended', work_id: item!.id });
    await k.waitFor((l) => l.msg === 'lease_lost' && String(l.reason).includes('lease_extended'));
    expect((await k.exit()).code).toBe(75);
  });

  it('transient 5xx and 429 bursts: retried with the same precondition, then recovered', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job], env: { JOB_SECONDS: '4' } });
    await jobStarted(record);
    emu.injectFault({ endpoint: 'heartbeat', kind: 'status', status: 503, times: 2 });
    await k.waitForMsg('heartbeat_retry');
    emu.injectFault({ endpoint: 'heartbeat', kind: 'rate_limit', retry_after_s: 0, times: 1 });
    const { code } = await k.exit();
    expect(code).toBe(0);
    expect(emu.item(item!.id).metadata.outcome).toBe('completed');
    const retries = k.lines.filter((l) => l.msg === 'heartbeat_retry');
    expect(retries.length).toBeGreaterThanOrEqual(3);
    // Every retry carried the precondition of the last accepted heartbeat.
    const rejected = emu.events().filter((e) => e.type === 'heartbeat_rejected' && e.status === 412);
    expect(rejected).toEqual([]);
  });

  it('reply dropped after the server applied it: the retry carries the same Idempotency-Key, gets the stored reply, and the lease is kept', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job], env: { JOB_SECONDS: '4' } });
    await jobStarted(record);
    await k.waitForMsg('heartbeat');
    emu.injectFault({ endpoint: 'heartbeat', kind: 'drop_reply', work_id: item!.id });
    await k.waitForMsg('heartbeat_retry');
    expect((await k.exit()).code).toBe(0);
    expect(readRecords(record)[0]!.how).toBe('done');
    expect(emu.item(item!.id).metadata.outcome).toBe('completed');
    // The retry was answered from the stored reply (not applied twice), and nothing was refused.
    const replays = emu.events().filter((e) => e.type === 'replayed' && e.work_id === item!.id);
    expect(replays).toEqual([expect.objectContaining({ endpoint: 'heartbeat', status: 200, replayed: true })]);
    expect(emu.events().filter((e) => e.type === 'heartbeat_rejected')).toEqual([]);
    expect(k.msgs()).not.toContain('lease_lost');
  });

  it('a leader that exits 0 while a member of its job lives on: the item is reported only after that member is gone', async () => {
    const [item] = emu.queue({ count: 1 });
    const leader = join(dir, 'leader.sh');
    writeFileSync(
      leader,
      `#!/usr/bin/env bash
now() { date +%s%3N; }
# The member drains for 0.7 s on SIGTERM (well within the 3 s grace), then records its end.
( trap 'sleep 0.7; echo "member_end $(now)" >> "$RECORD"; exit 0' TERM
  echo "member_start $(now)" >> "$RECORD"
  while true; do sleep 0.05; done ) &
sleep 0.5
echo "leader_exit $(now)" >> "$RECORD"
exit 0
`,
      { mode: 0o755 },
    );
    const k = keeper({ command: [leader], env: { LEASE_KEEPER_STOP_GRACE_SECONDS: '3' } });
    expect((await k.exit()).code).toBe(0);
    const marks = new Map(
      readFileSync(record, 'utf8')
        .trim()
        .split('\n')
        .map((l) => l.split(' ') as [string, string]),
    );
    const [leaderExit, memberEnd] = [Number(marks.get('leader_exit')), Number(marks.get('member_end'))];
    expect(memberEnd).toBeGreaterThan(leaderExit + 500); // the member really outlived its leader
    expect(k.msgs()).toContain('job_left_processes');
    // Nothing was reported (metadata, stop) before the member was gone.
    const reports = emu.events().filter((e) => (e.type === 'metadata_updated' || e.type === 'stop_requested') && e.work_id === item!.id);
    expect(reports.map((e) => e.type)).toEqual(['metadata_updated', 'stop_requested']);
    for (const e of reports) expect(e.t_ms).toBeGreaterThanOrEqual(memberEnd);
    expect(emu.item(item!.id)).toMatchObject({ state: 'stopped', metadata: { outcome: 'completed', exit_code: '0' } });
  });

  it('network hang: self-fenced, the whole group dead before the lease deadline with the margin kept', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job], env: { JOB_MODE: 'ignore-term' } });
    await jobStarted(record);
    await k.waitForMsg('heartbeat');
    emu.injectFault({ endpoint: 'heartbeat', kind: 'hang', times: 0 });
    await k.waitFor((l) => l.msg === 'fenced' && l.step === 'kill');
    const { code } = await k.exit();
    expect(code).toBe(75);
    const gc = Number((await import('node:fs')).readFileSync(`${record}.grandchild`, 'utf8'));
    expect(alive(gc)).toBe(false);
    // The keeper's own deadline is at most the server's: dead before the server's lease expired.
    const exited = k.lines.find((l) => l.msg === 'job_exited')!;
    const windows = leaseWindows(item!.id);
    const serverDeadline = windows[windows.length - 1]!.until;
    const margin = serverDeadline - Date.parse(String(exited.time));
    // ttl 2 s → fence margin 250 ms; allow 50 ms for reaping and logging.
    expect(margin).toBeGreaterThan(200);
  });

  it('a job that ignores SIGTERM, with a grandchild: the whole group is SIGKILLed after the grace', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job], env: { JOB_MODE: 'ignore-term', LEASE_KEEPER_STOP_GRACE_SECONDS: '1' } });
    await jobStarted(record);
    await sleep(200);
    emu.requestStop(item!.id);
    await k.waitForMsg('job_killed');
    const { code } = await k.exit();
    expect(code).toBe(128 + 9);
    const gc = Number((await import('node:fs')).readFileSync(`${record}.grandchild`, 'utf8'));
    expect(alive(gc)).toBe(false);
    expect(emu.item(item!.id).state).toBe('stopped');
    expect(emu.item(item!.id).metadata).toMatchObject({ outcome: 'drained', signal: 'SIGKILL' });
  });

  it('SIGTERM to the keeper mid-job: drains the job with heartbeats, stops the item, exits 0', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job] });
    await jobStarted(record);
    k.child.kill('SIGTERM');
    const { code } = await k.exit();
    expect(code).toBe(0);
    expect(readRecords(record)[0]!.how).toBe('term');
    expect(emu.item(item!.id).state).toBe('stopped');
    expect(emu.item(item!.id).metadata.outcome).toBe('shutdown');
  });

  it('SIGTERM with on-shutdown=release: the item is left to its lease (not stopped)', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job], env: { LEASE_KEEPER_ON_SHUTDOWN: 'release' } });
    await jobStarted(record);
    k.child.kill('SIGTERM');
    expect((await k.exit()).code).toBe(0);
    expect(emu.item(item!.id).state).toBe('active');
  });

  it('a job that can no longer be spawned: spawn_failed outcome, item stopped, exit 127', async () => {
    const doomed = join(dir, 'doomed.sh');
    const fs = await import('node:fs');
    fs.copyFileSync(job, doomed);
    fs.chmodSync(doomed, 0o755);
    const k = keeper({ command: [doomed] });
    await k.waitForMsg('ready');
    fs.rmSync(doomed); // removed after start-up: the claim finds it gone
    const [queued] = emu.queue({ count: 1 });
    const { code } = await k.exit();
    expect(code).toBe(127);
    const final = emu.item(queued!.id);
    expect(final.state).toBe('stopped');
    expect(final.metadata.outcome).toBe('spawn_failed');
    expect(k.lines.find((l) => l.msg === 'spawn_failed')?.error).toMatch(/doomed/);
  });

  it('an unrunnable job command at start-up: exit 78 before any request', async () => {
    const k = keeper({ command: ['/nonexistent/job'] });
    expect((await k.exit()).code).toBe(78);
    expect(k.stderr).toMatch(/\/nonexistent\/job/);
    expect(emu.events()).toEqual([]);
  });

  it('401: exit 77 at once, without a retry loop, token never printed', async () => {
    emu.queue({ count: 1 });
    const k = keeper({ command: [job], env: { QODER_PAT: 'pt-wrong-SECRET-token-1234' } });
    expect((await k.exit(10_000)).code).toBe(77);
    const polls = emu.events().filter((e) => e.type.startsWith('poll'));
    expect(polls.length).toBeLessThanOrEqual(1);
    expect(k.stdout + k.stderr).not.toContain('pt-wrong-SECRET-token-1234');
    expect(k.lines.find((l) => l.msg === 'auth_failed')).toBeDefined();
  });

  it('401 on a heartbeat mid-lease (token unchanged): the job is stopped, exit 77, and the end is logged as fatal auth_failed', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job], once: false });
    await jobStarted(record);
    emu.injectFault({ endpoint: 'heartbeat', kind: 'status', status: 401, times: 0 });
    expect((await k.exit(15_000)).code).toBe(77);
    expect(readRecords(record)[0]?.end).not.toBeNull();
    // The lease loss is a warning of the item; the daemon ending is the error `journalctl -p err` must show.
    const fatal = k.lines.filter((l) => l.msg === 'auth_failed');
    expect(fatal.map((l) => [l.level, l.work_id])).toEqual([[60, item!.id]]);
  });

  it('bad configuration: every problem listed, exit 78, nothing sent', async () => {
    const k = keeper({
      command: [job],
      env: { QODER_ENVIRONMENT_ID: 'nope', LEASE_KEEPER_TTL_SECONDS: '5', LEASE_KEEPER_CONCURRENCY: '0', LEASE_KEEPER_ON_SHUTDOWN: 'maybe' },
    });
    expect((await k.exit()).code).toBe(78);
    for (const v of ['QODER_ENVIRONMENT_ID', 'LEASE_KEEPER_TTL_SECONDS', 'LEASE_KEEPER_CONCURRENCY', 'LEASE_KEEPER_ON_SHUTDOWN']) {
      expect(k.stderr).toContain(v);
    }
    expect(emu.events()).toEqual([]);
  });

  it('the token never reaches the job environment or the logs', async () => {
    emu.queue({ count: 1 });
    const envDump = join(dir, 'env');
    const k = keeper({ command: ['bash', '-c', `env > ${envDump}`], env: { NOTIFY_SOCKET: '/tmp/nope', WATCHDOG_USEC: '1000000' } });
    expect((await k.exit()).code).toBe(0);
    const env = (await import('node:fs')).readFileSync(envDump, 'utf8');
    expect(env).not.toContain(TOKEN);
    expect(env).not.toMatch(/^(QODER_PAT|NOTIFY_SOCKET|WATCHDOG_USEC)=/m);
    expect(env).toMatch(/^LEASE_KEEPER_WORK_ID=work_/m);
    expect(env).toMatch(/^LEASE_KEEPER_SESSION_ID=sess_/m);
    expect(env).toMatch(/^LEASE_KEEPER_WORK=\{/m);
    expect(k.stdout + k.stderr).not.toContain(TOKEN);
  });
});

describe('lease-keeper run (daemon)', () => {
  it('two keepers on one queue with concurrency 3 each: every item runs exactly once, never overlapping', async () => {
    const items = emu.queue({ count: 12 });
    const env = { LEASE_KEEPER_CONCURRENCY: '3', JOB_SECONDS: '1' };
    // Items held per worker as the emulator sees them: from its ack until its stop completed.
    const held = new Map<string, number>();
    const maxHeld = new Map<string, number>();
    const holder = new Map<string, string>();
    const off = emu.onEvent((e) => {
      if (e.type === 'ack' && !e.retry && e.worker_id) holder.set(e.work_id!, e.worker_id);
      else if (!(e.type === 'stopped' && holder.has(e.work_id!))) return;
      const w = holder.get(e.work_id!)!;
      held.set(w, (held.get(w) ?? 0) + (e.type === 'ack' ? 1 : -1));
      maxHeld.set(w, Math.max(maxHeld.get(w) ?? 0, held.get(w)!));
      if (e.type === 'stopped') holder.delete(e.work_id!);
    });
    const a = keeper({ command: [job], once: false, env });
    const b = keeper({ command: [job], once: false, env });
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && items.some((i) => emu.item(i.id).state !== 'stopped')) await sleep(100);
    a.child.kill('SIGTERM');
    b.child.kill('SIGTERM');
    expect((await a.exit()).code).toBe(0);
    expect((await b.exit()).code).toBe(0);
    const runs = readRecords(record);
    for (const i of items) {
      expect(emu.item(i.id).state).toBe('stopped');
      expect(runs.filter((r) => r.workId === i.id)).toHaveLength(1);
    }
    // Both keepers took part, each holding at most 3 at once.
    const byWorker = new Map<string, number>();
    for (const i of items) {
      const w = emu.item(i.id).metadata.worker_id!;
      byWorker.set(w, (byWorker.get(w) ?? 0) + 1);
    }
    expect(byWorker.size).toBe(2);
    expect(runs).toHaveLength(12);
    off();
    expect([...maxHeld.values()].every((n) => n <= 3)).toBe(true);
    expect(Math.max(...maxHeld.values())).toBe(3);
  });
});
