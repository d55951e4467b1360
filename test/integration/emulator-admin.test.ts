/** The admin API over HTTP, the in-process handle's options, and the `lease-keeper emulator` command. */
import { createServer } from 'node:net';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { emulatorCommand } from '../../src/cli/emulator.js';
import type { CliIO } from '../../src/cli/io.js';
import { startEmulator, type Emulator, type EmulatorEvent } from '../../src/emulator/index.js';

async function admin(em: Emulator, method: string, path: string, body?: unknown, raw?: string) {
  const payload = raw ?? (body === undefined ? undefined : JSON.stringify(body));
  const res = await fetch(`${em.adminUrl}${path}`, {
    method,
    ...(payload !== undefined ? { body: payload, headers: { 'content-type': 'application/json' } } : {}),
  });
  return { status: res.status, json: (await res.json()) as any, headers: res.headers };
}

const work = (em: Emulator, path: string, init: RequestInit & { token?: string } = {}) =>
  fetch(`${em.url}/api/v1/cloud/environments/${em.environmentId}/work${path}`, {
    ...init,
    headers: { authorization: `Bearer ${init.token ?? em.token}`, 'worker-id': 'w1', ...(init.headers as Record<string, string>) },
  });

let em: Emulator | undefined;
afterEach(async () => {
  await em?.close();
  em = undefined;
});

describe('emulator admin API', () => {
  it('queues items (count, data, metadata) and shows them with lease, delivery and acked_by', async () => {
    em = await startEmulator();
    const r = await admin(em, 'POST', 'items', { count: 2, data: { type: 'session', id: 'sess_fixed', extra: 1 }, metadata: { team: 'a' } });
    expect(r.status).toBe(200);
    expect(r.json.items).toHaveLength(2);
    expect(r.json.items[0]).toMatchObject({ state: 'queued', data: { type: 'session', id: 'sess_fixed', extra: 1 }, metadata: { team: 'a' } });
    const one = (await admin(em, 'POST', 'items')).json.items;
    expect(one).toHaveLength(1);
    expect(one[0].data.id).toMatch(/^sess_/);
    const id = r.json.items[0].id as string;
    await work(em, '/poll');
    await work(em, `/${id}/ack`, { method: 'POST' });
    await work(em, `/${id}/heartbeat?expected_last_heartbeat=NO_HEARTBEAT&desired_ttl_seconds=15`, { method: 'POST' });
    const all = (await admin(em, 'GET', 'items')).json.items;
    expect(all.map((i: { id: string }) => i.id)).toEqual([id, r.json.items[1].id, one[0].id]);
    const view = (await admin(em, 'GET', `items/${id}`)).json;
    expect(view).toMatchObject({ state: 'active', acked_by: 'w1', delivery: null, lease: { holder_worker_id: 'w1', epoch: 1, ttl_seconds: 15, heartbeats: 1 } });
    expect(view.lease.last_heartbeat).toBe(view.latest_heartbeat_at);
    expect(view.lease.expires_at_ms).toBeGreaterThan(Date.now() + 10_000);
    for (const bad of [{ count: 0 }, { count: 1001 }, { count: 'x' }, { data: 'x' }, { data: { id: 3 } }, { metadata: { k: 1 } }]) {
      expect((await admin(em, 'POST', 'items', bad)).status, JSON.stringify(bad)).toBe(400);
    }
    expect((await admin(em, 'POST', 'items', undefined, '{')).status).toBe(400);
    const missing = await admin(em, 'GET', 'items/work_AAAAAAAAAAAAAAAAAAAAAAAA');
    expect(missing.status).toBe(404);
    expect(missing.json).toMatchObject({ type: 'error', error: { type: 'not_found_error' } });
  });

  it('stop (graceful and forced), settings, faults, events, reset', async () => {
    em = await startEmulator();
    const [a, b] = em.queue({ count: 2 });
    await work(em, `/${a!.id}/ack`, { method: 'POST' });
    expect((await admin(em, 'POST', `items/${a!.id}/stop`, {})).json.state).toBe('stopping');
    expect((await admin(em, 'POST', `items/${a!.id}/stop`, { force: true })).json.state).toBe('stopped');
    expect((await admin(em, 'POST', `items/${b!.id}/stop`)).json.state).toBe('stopped');
    expect((await admin(em, 'POST', `items/${b!.id}/stop`, { force: 'yes' })).status).toBe(400);
    const stopEvents = em.events().filter((e) => e.type === 'stop_requested' || e.type === 'stopped');
    expect(stopEvents.map((e) => [e.type, e.by, e.force])).toEqual([
      ['stop_requested', 'admin', false],
      ['stopped', 'admin', true],
      ['stopped', 'admin', false],
    ]);

    const settings = await admin(em, 'POST', 'settings', { ttl_override_seconds: 2, reclaim_default_ms: 100, starting_timeout_ms: 5000, environment_type: 'self_hosted' });
    expect(settings.json).toEqual({ ttl_override_seconds: 2, reclaim_default_ms: 100, starting_timeout_ms: 5000, environment_type: 'self_hosted', default_ttl_seconds: 60, idempotency_ttl_ms: 86_400_000, idempotency_max_keys: 10_000 });
    expect((await admin(em, 'GET', 'settings')).json).toEqual(settings.json);
    for (const bad of [{ ttl_override_seconds: 0 }, { reclaim_default_ms: -1 }, { environment_type: 'aws' }, { unknown: 1 }, { idempotency_ttl_ms: 0 }, { idempotency_max_keys: 1.5 }]) {
      expect((await admin(em, 'POST', 'settings', bad)).status).toBe(400);
    }

    const f = await admin(em, 'POST', 'faults', { endpoint: 'stats', kind: 'status', status: 503, times: 0 });
    expect(f.json.id).toMatch(/^fault_\d+$/);
    expect((await admin(em, 'GET', 'faults')).json.faults).toHaveLength(1);
    expect((await work(em, '/stats')).status).toBe(503);
    expect((await admin(em, 'POST', 'faults', { endpoint: 'nope', kind: 'reset' })).status).toBe(400);
    expect((await admin(em, 'DELETE', `faults/${f.json.id}`)).status).toBe(200);
    expect((await admin(em, 'DELETE', `faults/${f.json.id}`)).status).toBe(404);
    await admin(em, 'POST', 'faults', { endpoint: 'poll', kind: 'reset', times: 0 });
    expect((await admin(em, 'DELETE', 'faults')).json).toEqual({ cleared: 1 });
    expect((await work(em, '/stats')).status).toBe(200);

    const events = (await admin(em, 'GET', 'events')).json;
    const types = events.events.map((e: EmulatorEvent) => e.type);
    for (const t of ['queued', 'ack', 'stop_requested', 'stopped', 'settings_changed', 'fault_added', 'fault_injected', 'faults_cleared', 'stats']) {
      expect(types, t).toContain(t);
    }
    expect((await admin(em, 'GET', 'events?since=x')).status).toBe(400);
    const last = events.last_seq as number;

    expect((await admin(em, 'POST', 'reset')).json).toEqual({ reset: true });
    expect((await admin(em, 'GET', 'items')).json.items).toEqual([]);
    expect((await admin(em, 'GET', 'settings')).json.ttl_override_seconds).toBeNull();
    const after = (await admin(em, 'GET', 'events')).json.events;
    expect(after).toEqual([expect.objectContaining({ type: 'reset', seq: last + 1 })]);

    expect((await admin(em, 'GET', '')).json.endpoints.length).toBeGreaterThan(5);
    expect((await admin(em, 'GET', 'nope')).status).toBe(404);
    expect((await admin(em, 'PUT', 'items')).status).toBe(405);
  });

  it('startEmulator options: token, environment id, ttl override, log lines; the token is required on the work API only', async () => {
    const lines: string[] = [];
    em = await startEmulator({ token: 'pt-secret', environmentId: 'env_custom', ttlOverrideSeconds: 2, log: (l) => lines.push(l) });
    expect(em.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(em.adminUrl).toBe(`${em.url}/_admin/`);
    expect(em.environmentId).toBe('env_custom');
    expect((await work(em, '/stats', { token: 'pt-emulator' })).status).toBe(401);
    expect((await work(em, '/stats')).status).toBe(200);
    expect(em.settings().ttl_override_seconds).toBe(2);
    expect(lines.map((l) => (JSON.parse(l) as EmulatorEvent).type)).toEqual(['stats_rejected', 'stats']);
    expect(lines.join('\n')).not.toContain('pt-secret');
    await expect(startEmulator({ environmentId: 'nope' })).rejects.toThrow(/env_/);
    await expect(startEmulator({ ttlOverrideSeconds: 0 })).rejects.toThrow(/ttl_override_seconds/);
    await expect(startEmulator({ port: Number(new URL(em.url).port) })).rejects.toThrow(/EADDRINUSE/);
  });
});

function fakeIO(env: NodeJS.ProcessEnv = {}) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d: Buffer) => (out += d.toString()));
  stderr.on('data', (d: Buffer) => (err += d.toString()));
  const io: CliIO = { stdout, stderr, env };
  return { io, out: () => out, err: () => err };
}

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('lease-keeper emulator (command)', () => {
  it('prints one JSON line (with the default token), serves, and exits 0 when stopped', async () => {
    const f = fakeIO();
    const stop = new AbortController();
    const done = emulatorCommand({ host: '127.0.0.1', port: '0', environmentId: 'env_cli', ttlOverride: '2' }, f.io, stop.signal);
    await waitFor(() => f.out().includes('\n'));
    const line = JSON.parse(f.out().trim()) as Record<string, string>;
    expect(line).toEqual({ event: 'emulator_listening', url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/), environment_id: 'env_cli', admin: `${line.url}/_admin/`, token: 'pt-emulator' });
    const queued = await fetch(`${line.admin}items`, { method: 'POST' });
    const id = ((await queued.json()) as { items: { id: string }[] }).items[0]!.id;
    const headers = { authorization: 'Bearer pt-emulator' };
    const hb = async () => {
      await fetch(`${line.url}/api/v1/cloud/environments/env_cli/work/${id}/ack`, { method: 'POST', headers });
      const r = await fetch(`${line.url}/api/v1/cloud/environments/env_cli/work/${id}/heartbeat?expected_last_heartbeat=NO_HEARTBEAT&desired_ttl_seconds=60`, { method: 'POST', headers });
      return (await r.json()) as { ttl_seconds: number };
    };
    expect((await hb()).ttl_seconds).toBe(2);
    await fetch(`${line.url}/api/v1/cloud/environments/env_cli/work/poll`, { headers }); // poll_empty is not logged
    stop.abort();
    expect(await done).toBe(0);
    expect(f.out().trim().split('\n')).toHaveLength(1);
    const logged = f.err().trim().split('\n').map((l) => (JSON.parse(l) as EmulatorEvent).type);
    expect(logged).toEqual(['queued', 'ack', 'heartbeat_accepted']);
    await expect(fetch(`${line.url}/_admin/items`)).rejects.toThrow();
  });

  it('takes the token from QODER_PAT and then does not print it; stops on SIGTERM', async () => {
    const f = fakeIO({ QODER_PAT: 'pt-from-env' });
    const before = process.listenerCount('SIGTERM');
    const beforeInt = process.listenerCount('SIGINT');
    const done = emulatorCommand({ port: '0' }, f.io);
    await waitFor(() => f.out().includes('\n'));
    expect(f.out()).not.toContain('pt-from-env');
    const line = JSON.parse(f.out()) as { url: string; environment_id: string };
    expect(line.environment_id).toBe('env_emulator');
    const r = await fetch(`${line.url}/api/v1/cloud/environments/env_emulator/work/stats`, { headers: { authorization: 'Bearer pt-from-env' } });
    expect(r.status).toBe(200);
    expect(process.listenerCount('SIGTERM')).toBe(before + 1);
    // Deliver SIGTERM to our listener only (emitting on the process would reach the test runner's too).
    const ours = process.listeners('SIGTERM').at(-1)!;
    (ours as (s: NodeJS.Signals) => void)('SIGTERM');
    expect(await done).toBe(0);
    expect(process.listenerCount('SIGTERM')).toBe(before);
    expect(process.listenerCount('SIGINT')).toBe(beforeInt);
  });

  it('--token wins over QODER_PAT', async () => {
    const f = fakeIO({ QODER_PAT: 'pt-from-env' });
    const stop = new AbortController();
    const done = emulatorCommand({ port: '0', token: 'pt-flag' }, f.io, stop.signal);
    await waitFor(() => f.out().includes('\n'));
    const line = JSON.parse(f.out()) as { url: string };
    const r = await fetch(`${line.url}/api/v1/cloud/environments/env_emulator/work/stats`, { headers: { authorization: 'Bearer pt-flag' } });
    expect(r.status).toBe(200);
    stop.abort();
    expect(await done).toBe(0);
  });

  it('bad flags: a message on stderr and 78, nothing on stdout', async () => {
    const bad: Record<string, unknown>[] = [
      { port: '65536' },
      { port: '-1' },
      { port: 'http' },
      { port: '80.5' },
      { port: '0', ttlOverride: '0' },
      { port: '0', ttlOverride: '1.5' },
      { port: '0', ttlOverride: 'fast' },
      { port: '0', ttlOverride: '601' },
      { port: '0', environmentId: 'emulator' },
    ];
    for (const flags of bad) {
      const f = fakeIO();
      expect(await emulatorCommand(flags, f.io), JSON.stringify(flags)).toBe(78);
      expect(f.err()).toMatch(/^lease-keeper emulator: --(port|ttl-override|environment-id)/);
      expect(f.out()).toBe('');
    }
  });

  it('a port already in use: exit 1 with a message', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as { port: number }).port;
    try {
      const f = fakeIO();
      expect(await emulatorCommand({ port: String(port) }, f.io)).toBe(1);
      expect(f.err()).toMatch(/cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/);
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  });
});
