/**
 * The real `bin/lease-keeper run` as systemd sees it: notify datagrams on a real unix datagram socket,
 * /healthz and /metrics scraped during a run, journald priority prefixes.
 */
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Emulator } from '../../src/emulator/index.js';
import { type NotifyReceiver, startNotifyReceiver } from '../support/notify-receiver.js';
import { type Keeper, emulator, jobStarted, recordingJob, removeScratch, scratch, sleep, startKeeper } from './support.js';

let emu: Emulator;
let dir: string;
let job: string;
let record: string;
let receiver: NotifyReceiver | null = null;
const keepers: Keeper[] = [];

beforeEach(async () => {
  emu = await emulator(6);
  dir = scratch();
  job = recordingJob(dir);
  record = join(dir, 'record');
});

afterEach(async () => {
  try {
    await Promise.all(keepers.splice(0).map((k) => k.end()));
  } finally {
    removeScratch(dir);
    receiver?.close();
    receiver = null;
    await emu.close();
  }
});

function keeper(opts: Parameters<typeof startKeeper>[1]): Keeper {
  const k = startKeeper(emu, { ...opts, env: { RECORD: record, ...opts.env } });
  keepers.push(k);
  return k;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** Value of one series in Prometheus text, or undefined. */
function metric(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('sd_notify from the real keeper', () => {
  it('READY=1, STATUS= updates, WATCHDOG=1 only while heartbeats are accepted, STOPPING=1 on SIGTERM', async () => {
    receiver = await startNotifyReceiver(dir);
    const [item] = emu.queue({ count: 1 });
    // Granted ttl 6 s, fraction 0.1: beats every 0.6 s, unhealthy after 1.2 s without one, fenced at 4.4 s.
    const k = keeper({
      command: [job],
      once: false,
      env: { NOTIFY_SOCKET: receiver.socketPath, WATCHDOG_USEC: '400000', LEASE_KEEPER_HEARTBEAT_FRACTION: '0.1' },
    });
    await receiver.waitFor((a) => a.includes('READY=1'));
    await jobStarted(record);
    await receiver.waitFor((a) => a.some((x) => x.startsWith('STATUS=') && x.includes(item!.id)));
    await receiver.waitFor((a) => a.filter((x) => x === 'WATCHDOG=1').length >= 3);

    // The network hangs: heartbeats stop being accepted, the watchdog must go quiet.
    const hungAt = Date.now();
    emu.injectFault({ endpoint: 'heartbeat', kind: 'hang', times: 0 });
    const fenced = await k.waitFor((l) => l.msg === 'fenced' && l.step === 'signal', 15_000);
    const fencedAt = Date.parse(String(fenced.time));
    // Quiet from (hang + 2 intervals + a ping period) until the fence: no WATCHDOG=1 at all in that window.
    const quietFrom = hungAt + 1200 + 200 + 250;
    expect(fencedAt - quietFrom).toBeGreaterThan(1500);
    const pingsWhileUnhealthy = receiver.messages.filter((m) => m.msg.includes('WATCHDOG=1') && m.at > quietFrom && m.at < fencedAt);
    expect(pingsWhileUnhealthy).toEqual([]);
    const pingsBefore = receiver.messages.filter((m) => m.msg.includes('WATCHDOG=1') && m.at < hungAt);
    expect(pingsBefore.length).toBeGreaterThanOrEqual(3);

    // Once the fenced item is gone, no lease is unhealthy: the pings resume.
    emu.clearFaults();
    await k.waitForMsg('item_finished');
    const resumedAfter = Date.now();
    await receiver.waitFor(() => receiver!.messages.some((m) => m.msg.includes('WATCHDOG=1') && m.at > resumedAfter));

    k.child.kill('SIGTERM');
    await receiver.waitFor((a) => a.includes('STOPPING=1'));
    expect((await k.exit()).code).toBe(0);
  });

  it('sends nothing, and passes nothing to the job, when NOTIFY_SOCKET is unset', async () => {
    emu.queue({ count: 1 });
    const k = keeper({ command: ['bash', '-c', 'env | grep -c "^NOTIFY_SOCKET\\|^WATCHDOG_" || true'], env: { JOB_SECONDS: '0' } });
    expect((await k.exit()).code).toBe(0);
    expect(k.stdout).toMatch(/^0$/m);
    expect(k.lines.find((l) => /notify/i.test(l.msg))).toBeUndefined();
  });
});

describe('/healthz and /metrics during a run', () => {
  it('figures move as the lease does; health turns 503 when heartbeats stop', async () => {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const [item] = emu.queue({ count: 1 });
    const k = keeper({
      command: [job],
      once: false,
      env: { LEASE_KEEPER_STATUS_ADDR: `127.0.0.1:${port}`, LEASE_KEEPER_HEARTBEAT_FRACTION: '0.1' },
    });
    await jobStarted(record);
    await k.waitForMsg('heartbeat');

    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(200);
    const m1 = await (await fetch(`${base}/metrics`)).text();
    expect(metric(m1, 'lease_keeper_leases_held')).toBe(1);
    expect(metric(m1, 'lease_keeper_ready')).toBe(1);
    const left1 = metric(m1, `lease_keeper_lease_time_left_seconds{work_id="${item!.id}"}`);
    expect(left1).toBeGreaterThan(0);
    expect(left1).toBeLessThanOrEqual(6);
    const beats1 = metric(m1, 'lease_keeper_heartbeats_total{result="accepted"}')!;
    expect(metric(m1, 'lease_keeper_polls_total{result="work"}')).toBe(1);

    await sleep(1300); // two more intervals
    const m2 = await (await fetch(`${base}/metrics`)).text();
    expect(metric(m2, 'lease_keeper_heartbeats_total{result="accepted"}')!).toBeGreaterThanOrEqual(beats1 + 2);
    expect(m2).toMatch(/lease_keeper_heartbeat_duration_seconds_count \d+/);

    emu.injectFault({ endpoint: 'heartbeat', kind: 'status', status: 503, times: 0 });
    await sleep(1800);
    const sick = await fetch(`${base}/healthz`);
    expect(sick.status).toBe(503);
    const body = (await sick.json()) as { reasons: string[] };
    expect(body.reasons.join(' ')).toContain(item!.id);
    const m3 = await (await fetch(`${base}/metrics`)).text();
    expect(metric(m3, 'lease_keeper_heartbeats_total{result="transient"}')!).toBeGreaterThan(0);
    const left3 = metric(m3, `lease_keeper_lease_time_left_seconds{work_id="${item!.id}"}`)!;
    expect(left3).toBeLessThan(left1!);

    await k.waitForMsg('item_finished', 15_000);
    const m4 = await (await fetch(`${base}/metrics`)).text();
    expect(metric(m4, 'lease_keeper_outcomes_total{outcome="self_fenced"}')).toBe(1);
    expect(metric(m4, 'lease_keeper_fence_events_total{step="signal"}')).toBe(1);
    expect(metric(m4, 'lease_keeper_leases_held')).toBe(0);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/nope`)).status).toBe(404);
    k.child.kill('SIGTERM');
    expect((await k.exit()).code).toBe(0);
  });
});

describe('journald', () => {
  it('prefixes each line with its syslog priority when JOURNAL_STREAM is set, and not otherwise', async () => {
    emu.queue({ count: 2 });
    const withJournal = keeper({ command: [job], env: { JOURNAL_STREAM: '8:12345', JOB_SECONDS: '0', JOB_EXIT: '0' } });
    expect((await withJournal.exit()).code).toBe(0);
    const journalLines = withJournal.stdout.split('\n').filter((l) => l.includes('"msg"'));
    expect(journalLines.length).toBeGreaterThan(3);
    for (const line of journalLines) expect(line).toMatch(/^<[0-7]>\{/);
    expect(journalLines.find((l) => l.includes('"msg":"claimed"'))).toMatch(/^<6>/);

    const plain = keeper({ command: [job], env: { JOURNAL_STREAM: undefined, JOB_SECONDS: '0' } });
    expect((await plain.exit()).code).toBe(0);
    const plainLines = plain.stdout.split('\n').filter((l) => l.includes('"msg"'));
    expect(plainLines.length).toBeGreaterThan(3);
    for (const line of plainLines) expect(line).toMatch(/^\{/);
  });

  it('errors get priority 3, so journalctl -p err finds them', async () => {
    const k = keeper({ command: [job], env: { JOURNAL_STREAM: '8:1', QODER_PAT: 'pt-wrong-token-xyz' } });
    emu.queue({ count: 1 });
    expect((await k.exit()).code).toBe(77);
    const fatal = k.stdout.split('\n').find((l) => l.includes('"msg":"auth_failed"'));
    expect(fatal).toMatch(/^<[23]>/);
  });
});
