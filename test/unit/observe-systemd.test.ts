import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { KeeperSnapshot, LeaseView } from '../../src/observe/snapshot.js';
import { StallGuard } from '../../src/observe/stall.js';
import { startObservability, startSystemdIntegration, type ObserveLog } from '../../src/observe/systemd.js';

let dir: string;
let cleanup: (() => Promise<void>)[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lk-systemd-'));
});
afterEach(async () => {
  for (const c of cleanup) await c();
  cleanup = [];
  rmSync(dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A stand-in for systemd-notify: one line per message, assignments joined by `|`. */
function fakeNotify(): { command: string; log: string } {
  const command = join(dir, 'fake-notify');
  const log = join(dir, 'notify.log');
  writeFileSync(command, `#!/bin/sh\nIFS='|'\nprintf '%s\\n' "$*" >> '${log}'\n`);
  chmodSync(command, 0o755);
  return { command, log };
}
const messages = (log: string): string[] => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : []);

async function until(pred: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(20);
  }
}

const held: LeaseView = {
  workId: 'work_abc',
  sessionId: 's',
  phase: 'held',
  leaseLeftMs: 41_000,
  sinceAcceptedMs: 1000,
  intervalMs: 20_000,
  lastHeartbeatResult: 'accepted',
};

function recordingLog(): ObserveLog & { lines: { level: string; msg: string; obj: object }[] } {
  const lines: { level: string; msg: string; obj: object }[] = [];
  return {
    lines,
    info: (obj, msg) => lines.push({ level: 'info', msg, obj }),
    warn: (obj, msg) => lines.push({ level: 'warn', msg, obj }),
  };
}

describe('startSystemdIntegration', () => {
  it('sends READY once ready, STATUS on change, WATCHDOG while healthy, STOPPING + EXTEND_TIMEOUT_USEC while draining', async () => {
    const fake = fakeNotify();
    let s: KeeperSnapshot = { workerId: 'w', ready: false, draining: false, leases: [], pollFailingSinceMs: null };
    const sd = startSystemdIntegration({
      env: { NOTIFY_SOCKET: '/run/fake.sock', WATCHDOG_USEC: '400000', PATH: process.env.PATH },
      snapshot: () => s,
      marginMs: () => 2000,
      capacity: 2,
      notifyCommand: fake.command,
      tickMs: 50,
      statusIntervalMs: 100,
      extendTimeoutMs: 20_000,
      extendEveryMs: 100,
    });
    cleanup.push(() => sd.close());
    expect(sd.watchdog.active).toBe(true);
    expect(sd.watchdog.intervalMs).toBe(200);

    await until(() => messages(fake.log).includes('WATCHDOG=1'));
    expect(messages(fake.log).some((m) => m.startsWith('READY=1'))).toBe(false);

    s = { ...s, ready: true };
    sd.refresh();
    await until(() => messages(fake.log).some((m) => m.startsWith('READY=1')));
    expect(messages(fake.log).find((m) => m.startsWith('READY=1'))).toBe('READY=1|STATUS=0/2 items held; polling');

    s = { ...s, leases: [held] };
    await until(() => messages(fake.log).includes('STATUS=1/2 items held; work_abc lease 41s left, last heartbeat accepted; polling'));

    s = { ...s, draining: true, leases: [{ ...held, phase: 'draining' }] };
    sd.refresh();
    await until(() => messages(fake.log).some((m) => m.startsWith('STOPPING=1')));
    expect(messages(fake.log).find((m) => m.startsWith('STOPPING=1'))).toBe(
      'STOPPING=1|EXTEND_TIMEOUT_USEC=20000000|STATUS=draining 1 item; work_abc draining lease 41s left, last heartbeat accepted',
    );
    // extensions continue while the drain is healthy
    const extensions = () => messages(fake.log).filter((m) => m === 'EXTEND_TIMEOUT_USEC=20000000').length;
    await until(() => extensions() >= 2);

    // an overdue lease: watchdog pings and extensions stop
    s = { ...s, leases: [{ ...held, phase: 'draining', sinceAcceptedMs: 50_000 }] };
    await sleep(150);
    await sd.notifier.flush();
    const before = messages(fake.log).length;
    await sleep(500);
    await sd.notifier.flush();
    const after = messages(fake.log).slice(before);
    expect(after.filter((m) => m === 'WATCHDOG=1' || m.startsWith('EXTEND_TIMEOUT_USEC'))).toEqual([]);
    expect(sd.health().healthy).toBe(false);
    expect(messages(fake.log).filter((m) => m.startsWith('READY=1'))).toHaveLength(1);
    expect(messages(fake.log).filter((m) => m.startsWith('STOPPING=1'))).toHaveLength(1);
  });

  it('stops extending the stop timeout extendMaxMs after the drain began, even while healthy', async () => {
    const fake = fakeNotify();
    const s: KeeperSnapshot = { workerId: 'w', ready: true, draining: true, leases: [{ ...held, phase: 'ending' }], pollFailingSinceMs: null };
    const sd = startSystemdIntegration({
      env: { NOTIFY_SOCKET: '/run/fake.sock', PATH: process.env.PATH },
      snapshot: () => s,
      marginMs: () => 2000,
      notifyCommand: fake.command,
      tickMs: 20,
      extendTimeoutMs: 5000,
      extendEveryMs: 20,
      extendMaxMs: 200,
    });
    cleanup.push(() => sd.close());
    await sleep(250);
    await sd.notifier.flush();
    const count = () => messages(fake.log).filter((m) => m.startsWith('EXTEND_TIMEOUT_USEC=5000000')).length;
    const n = count();
    expect(n).toBeGreaterThanOrEqual(1);
    await sleep(300);
    await sd.notifier.flush();
    expect(count()).toBe(n);
    expect(sd.health().healthy).toBe(true);
  });

  it('finishing (LEASE_KEEPER_SHUTDOWN=finish): STOPPING=1 without extensions; the drain after it extends, its cap counted from the drain', async () => {
    const fake = fakeNotify();
    let s: KeeperSnapshot = { workerId: 'w', ready: true, draining: true, finishing: true, leases: [held], pollFailingSinceMs: null };
    const sd = startSystemdIntegration({
      env: { NOTIFY_SOCKET: '/run/fake.sock', PATH: process.env.PATH },
      snapshot: () => s,
      marginMs: () => 2000,
      notifyCommand: fake.command,
      tickMs: 20,
      statusIntervalMs: 20,
      extendTimeoutMs: 5000,
      extendEveryMs: 20,
      extendMaxMs: 200,
    });
    cleanup.push(() => sd.close());
    const extends_ = () => messages(fake.log).filter((m) => m.includes('EXTEND_TIMEOUT_USEC='));
    await sleep(300); // longer than extendMaxMs: the finish does not use up the drain's extensions
    await sd.notifier.flush();
    expect(messages(fake.log)[0]).toBe('STOPPING=1|STATUS=finishing 1 item; work_abc lease 41s left, last heartbeat accepted');
    expect(extends_()).toEqual([]);

    s = { ...s, finishing: false, leases: [{ ...held, phase: 'draining' }] };
    sd.refresh();
    await until(() => extends_().length >= 3);
    expect(extends_()[0]).toBe('EXTEND_TIMEOUT_USEC=5000000|STATUS=draining 1 item; work_abc draining lease 41s left, last heartbeat accepted');
    expect(messages(fake.log).filter((m) => m.startsWith('STOPPING=1'))).toHaveLength(1);
  });

  it('does nothing without NOTIFY_SOCKET', async () => {
    const fake = fakeNotify();
    const s: KeeperSnapshot = { workerId: 'w', ready: true, draining: true, leases: [held], pollFailingSinceMs: null };
    const sd = startSystemdIntegration({
      env: { WATCHDOG_USEC: '100000', PATH: process.env.PATH },
      snapshot: () => s,
      marginMs: () => 2000,
      notifyCommand: fake.command,
      tickMs: 20,
    });
    cleanup.push(() => sd.close());
    await sleep(200);
    expect(sd.notifier.enabled).toBe(false);
    expect(sd.watchdog.active).toBe(false);
    expect(existsSync(fake.log)).toBe(false);
  });

  it('without NOTIFY_SOCKET runs no timer of its own, and health() still reads the snapshot on demand', async () => {
    const stall = new StallGuard();
    stall.stop(); // its own tick is tested elsewhere; here only the integration's timers count
    let reads = 0;
    const s: KeeperSnapshot = { workerId: 'w', ready: true, draining: false, leases: [held], pollFailingSinceMs: null };
    vi.useFakeTimers();
    try {
      const sd = startSystemdIntegration({
        env: { PATH: process.env.PATH },
        snapshot: () => (reads++, s),
        marginMs: () => 2000,
        tickMs: 20,
        stall,
      });
      expect(vi.getTimerCount()).toBe(0);
      vi.advanceTimersByTime(10_000);
      expect(reads).toBe(0);
      // what /healthz and the watchdog use is computed when asked
      expect(sd.health().readiness).toEqual({ healthy: true, reasons: [] });
      expect(reads).toBe(1);
      sd.refresh(); // run.ts calls it on the first poll and on SIGTERM: a no-op here
      expect(reads).toBe(1);
      await sd.close();
    } finally {
      vi.useRealTimers();
    }
  });

  it('logs watchdog skips and a failing notify helper (rate-limited)', async () => {
    const log = recordingLog();
    const s: KeeperSnapshot = { workerId: 'w', ready: true, draining: false, leases: [{ ...held, leaseLeftMs: -5000 }], pollFailingSinceMs: null };
    const sd = startSystemdIntegration({
      env: { NOTIFY_SOCKET: '/run/fake.sock', WATCHDOG_USEC: '100000', PATH: process.env.PATH },
      snapshot: () => s,
      marginMs: () => 2000,
      notifyCommand: join(dir, 'missing-notify'),
      tickMs: 20,
      statusIntervalMs: 20,
      log,
    });
    cleanup.push(() => sd.close());
    await sleep(300);
    await sd.notifier.flush();
    const skips = log.lines.filter((l) => l.msg === 'watchdog_skipped');
    expect(skips.length).toBeGreaterThan(0);
    expect(skips[0]!.obj).toEqual({ reasons: ['work_abc: lease deadline passed 5s ago (held)'] });
    expect(log.lines.filter((l) => l.msg === 'notify_failed')).toHaveLength(1);
  });
});

describe('startObservability', () => {
  it('serves /healthz and /metrics on statusAddr and feeds events into the metrics', async () => {
    let s: KeeperSnapshot = { workerId: 'w', ready: true, draining: false, leases: [held], pollFailingSinceMs: null };
    const obs = await startObservability({
      env: {},
      config: { statusAddr: { host: '127.0.0.1', port: 0 }, concurrency: 1, fenceMarginMs: null, ttlSeconds: 60, heartbeatFraction: 0.33, stopGraceSeconds: 10 },
      snapshot: () => s,
    });
    cleanup.push(() => obs.close());
    expect(obs.statusUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    obs.events.heartbeat('accepted', 15);
    obs.events.poll('work');

    const metrics = await (await fetch(`${obs.statusUrl}/metrics`)).text();
    expect(metrics).toContain('lease_keeper_heartbeats_total{result="accepted"} 1');
    expect(metrics).toContain('lease_keeper_lease_time_left_seconds{work_id="work_abc"} 41');
    expect(await (await fetch(`${obs.statusUrl}/healthz`)).json()).toEqual({ status: 'ok', leases: 1 });

    // polls failing for a long time: /healthz says so, the watchdog verdict does not
    s = { ...s, pollFailingSinceMs: performance.now() - 120_000 };
    const res = await fetch(`${obs.statusUrl}/healthz`);
    expect(res.status).toBe(503);
    expect(((await res.json()) as { reasons: string[] }).reasons[0]).toMatch(/^polls failing for (2m|1[12]\ds)$/);
    expect(obs.systemd.health().healthy).toBe(true);
  });

  it('without statusAddr starts no listener', async () => {
    const s: KeeperSnapshot = { workerId: 'w', ready: false, draining: false, leases: [], pollFailingSinceMs: null };
    const obs = await startObservability({
      env: {},
      config: { statusAddr: null, concurrency: 1, fenceMarginMs: null, ttlSeconds: 60, heartbeatFraction: 0.33, stopGraceSeconds: 10 },
      snapshot: () => s,
    });
    cleanup.push(() => obs.close());
    expect(obs.statusUrl).toBeNull();
  });
});
