import { request } from 'node:http';
import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { HealthVerdict } from '../../src/observe/health.js';
import { createMetrics } from '../../src/observe/metrics.js';
import type { KeeperSnapshot } from '../../src/observe/snapshot.js';
import { startStatusServer, type StatusServer } from '../../src/observe/status-server.js';

let server: StatusServer | null = null;
afterEach(async () => {
  await server?.close();
  server = null;
});

const snapshot: KeeperSnapshot = {
  workerId: 'w',
  ready: true,
  draining: false,
  leases: [
    { workId: 'work_a', sessionId: 's', phase: 'held', leaseLeftMs: 30_000, sinceAcceptedMs: 100, intervalMs: 20_000, lastHeartbeatResult: 'accepted' },
  ],
  pollFailingSinceMs: null,
};

async function start(health: () => HealthVerdict): Promise<StatusServer> {
  const metrics = createMetrics({ snapshot: () => snapshot, lagMs: () => 0, defaultMetrics: false });
  server = await startStatusServer({ host: '127.0.0.1', port: 0, metrics, health, snapshot: () => snapshot });
  return server;
}

describe('status server', () => {
  it('GET /healthz: 200 with the lease count while healthy, 503 with reasons when not', async () => {
    let verdict: HealthVerdict = { healthy: true, reasons: [] };
    const s = await start(() => verdict);
    expect(s.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);

    let res = await fetch(`${s.url}/healthz`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await res.json()).toEqual({ status: 'ok', leases: 1 });

    verdict = { healthy: false, reasons: ['event loop stalled', 'polls failing for 90s'] };
    res = await fetch(`${s.url}/healthz?verbose=1`);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ status: 'unhealthy', reasons: ['event loop stalled', 'polls failing for 90s'] });
  });

  it('answers 503 when the health check throws', async () => {
    const s = await start(() => {
      throw new Error('snapshot broke');
    });
    const res = await fetch(`${s.url}/healthz`);
    expect(res.status).toBe(503);
    expect(((await res.json()) as { reasons: string[] }).reasons[0]).toMatch(/snapshot broke/);
  });

  it('GET /metrics: Prometheus text', async () => {
    const s = await start(() => ({ healthy: true, reasons: [] }));
    const res = await fetch(`${s.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toContain('# TYPE lease_keeper_lease_time_left_seconds gauge');
    expect(text).toContain('lease_keeper_lease_time_left_seconds{work_id="work_a"} 30');
  });

  it('404 for other paths, 405 for other methods, never crashes on garbage', async () => {
    const s = await start(() => ({ healthy: true, reasons: [] }));
    expect((await fetch(`${s.url}/`)).status).toBe(404);
    expect((await fetch(`${s.url}/healthz/x`)).status).toBe(404);
    expect((await fetch(`${s.url}/metrics`, { method: 'POST', body: 'x' })).status).toBe(405);
    const head = await fetch(`${s.url}/healthz`, { method: 'HEAD' });
    expect(head.status).toBe(200);

    // a raw, malformed request
    const { port } = new URL(s.url);
    const reply = await new Promise<string>((resolve, reject) => {
      const sock = connect(Number(port), '127.0.0.1', () => sock.write('GARBAGE \x00\x01 nonsense\r\n\r\n'));
      let data = '';
      sock.on('data', (d) => (data += d.toString()));
      sock.on('end', () => resolve(data));
      sock.on('error', reject);
    });
    expect(reply).toMatch(/^HTTP\/1\.1 400/);

    // an absolute-form / odd request target
    const odd = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: Number(port), path: '//[::1', method: 'GET' }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    expect([400, 404]).toContain(odd);

    // still serving
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
  });

  it('close() frees the port and is idempotent; a busy port rejects', async () => {
    const s = await start(() => ({ healthy: true, reasons: [] }));
    const port = Number(new URL(s.url).port);
    const metrics = createMetrics({ snapshot: () => snapshot, lagMs: () => 0, defaultMetrics: false });
    await expect(
      startStatusServer({ host: '127.0.0.1', port, metrics, health: () => ({ healthy: true, reasons: [] }), snapshot: () => snapshot }),
    ).rejects.toThrow(/EADDRINUSE/);
    await s.close();
    await s.close();
    server = await startStatusServer({ host: '127.0.0.1', port, metrics, health: () => ({ healthy: true, reasons: [] }), snapshot: () => snapshot });
    expect(server.url).toBe(`http://127.0.0.1:${port}`);
  });
});
