import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createNotifier } from '../../src/observe/notify.js';
import { startNotifyReceiver } from '../support/notify-receiver.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lk-notify-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A stand-in for systemd-notify that appends its argv (one line) and selected env to files, after `delay` seconds. */
function fakeNotify(delay = 0): { command: string; argsLog: string; envLog: string } {
  const command = join(dir, 'fake-notify');
  const argsLog = join(dir, 'args.log');
  const envLog = join(dir, 'env.log');
  writeFileSync(
    command,
    `#!/bin/sh\nsleep ${delay}\nprintf '%s\\n' "$*" >> '${argsLog}'\nenv >> '${envLog}'\n`,
  );
  chmodSync(command, 0o755);
  return { command, argsLog, envLog };
}

const lines = (file: string): string[] => (existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n') : []);

describe('notify through the real systemd-notify', () => {
  it('delivers READY, STATUS, WATCHDOG, STOPPING and EXTEND_TIMEOUT_USEC to NOTIFY_SOCKET, in order', async () => {
    const rx = await startNotifyReceiver(dir);
    try {
      const errors: Error[] = [];
      const n = createNotifier({ env: { NOTIFY_SOCKET: rx.socketPath, PATH: process.env.PATH }, onError: (e) => errors.push(e) });
      expect(n.enabled).toBe(true);
      n.ready();
      n.status('1/1 items held; work_abc lease 41s left');
      n.watchdog();
      n.stopping();
      n.extendTimeout(30_000_000);
      n.send('STATUS=draining 1 item', 'EXTEND_TIMEOUT_USEC=5000000');
      await n.flush();
      await rx.waitFor(() => rx.messages.length >= 6);
      expect(errors).toEqual([]);
      expect(rx.messages.map((m) => m.msg)).toEqual([
        'READY=1',
        'STATUS=1/1 items held; work_abc lease 41s left',
        'WATCHDOG=1',
        'STOPPING=1',
        'EXTEND_TIMEOUT_USEC=30000000',
        'STATUS=draining 1 item\nEXTEND_TIMEOUT_USEC=5000000',
      ]);
    } finally {
      rx.close();
    }
  });
});

describe('notify without NOTIFY_SOCKET', () => {
  it('is disabled and spawns nothing', async () => {
    const fake = fakeNotify();
    const errors: Error[] = [];
    for (const env of [{ PATH: process.env.PATH }, { NOTIFY_SOCKET: '', PATH: process.env.PATH }]) {
      const n = createNotifier({ env, command: fake.command, onError: (e) => errors.push(e) });
      expect(n.enabled).toBe(false);
      n.ready();
      n.status('x');
      n.watchdog();
      n.stopping();
      n.extendTimeout(1_000_000);
      n.send('FOO=1');
      await n.flush();
    }
    await new Promise((r) => setTimeout(r, 200));
    expect(existsSync(fake.argsLog)).toBe(false);
    expect(errors).toEqual([]);
  });
});

describe('notify queueing (fake systemd-notify)', () => {
  it('runs one child at a time and coalesces pending STATUS updates: the latest wins', async () => {
    const fake = fakeNotify(0.2);
    const n = createNotifier({ env: { NOTIFY_SOCKET: '/nonexistent', PATH: process.env.PATH }, command: fake.command });
    n.status('a'); // spawned at once
    n.status('b'); // pending...
    n.watchdog();
    n.status('c'); // ...replaced by c
    n.watchdog(); // duplicate of a pending WATCHDOG=1: replaced
    await n.flush();
    expect(lines(fake.argsLog)).toEqual(['STATUS=a', 'STATUS=c', 'WATCHDOG=1']);
  });

  it('passes only NOTIFY_SOCKET and PATH to the child', async () => {
    const fake = fakeNotify();
    const n = createNotifier({
      env: { NOTIFY_SOCKET: '/run/test.sock', PATH: process.env.PATH, QODER_PAT: 'pt-secret', WATCHDOG_USEC: '1' },
      command: fake.command,
    });
    n.ready();
    await n.flush();
    const env = readFileSync(fake.envLog, 'utf8');
    expect(env).toContain('NOTIFY_SOCKET=/run/test.sock');
    expect(env).not.toContain('pt-secret');
    expect(env).not.toContain('WATCHDOG_USEC');
  });

  it('turns newlines in STATUS into spaces, so a status cannot smuggle in another assignment', async () => {
    const fake = fakeNotify();
    const n = createNotifier({ env: { NOTIFY_SOCKET: '/x', PATH: process.env.PATH }, command: fake.command });
    n.status('held\nREADY=1');
    await n.flush();
    expect(lines(fake.argsLog)).toEqual(['STATUS=held READY=1']);
  });

  it('rejects malformed assignments and bad timeouts through onError, never by throwing', async () => {
    const fake = fakeNotify();
    const errors: Error[] = [];
    const n = createNotifier({ env: { NOTIFY_SOCKET: '/x', PATH: process.env.PATH }, command: fake.command, onError: (e) => errors.push(e) });
    expect(() => n.send('no equals sign')).not.toThrow();
    expect(() => n.send('STATUS=a\nREADY=1')).not.toThrow();
    expect(() => n.extendTimeout(-1)).not.toThrow();
    expect(() => n.send()).not.toThrow();
    await n.flush();
    await new Promise((r) => setTimeout(r, 10));
    expect(errors).toHaveLength(4);
    expect(existsSync(fake.argsLog)).toBe(false);
  });

  it('reports a missing helper through onError and keeps going', async () => {
    const errors: Error[] = [];
    const n = createNotifier({
      env: { NOTIFY_SOCKET: '/x', PATH: process.env.PATH },
      command: join(dir, 'no-such-notify'),
      onError: (e) => errors.push(e),
    });
    n.ready();
    n.watchdog();
    await n.flush();
    expect(errors).toHaveLength(2);
    expect(errors[0]!.message).toMatch(/cannot run/);
  });

  it('reports a non-zero exit (systemd-notify with an unreachable socket)', async () => {
    const errors: Error[] = [];
    const n = createNotifier({ env: { NOTIFY_SOCKET: join(dir, 'nobody-listens.sock'), PATH: process.env.PATH }, onError: (e) => errors.push(e) });
    n.ready();
    await n.flush();
    expect(errors).toHaveLength(1);
    expect(errors[0]!.message).toMatch(/failed/);
  });
});
