/**
 * The client's own pool opens at most MAX_CONNECTIONS connections: a burst of calls (many heartbeats due
 * at once after a stall) waits in the pool instead of opening one socket per call, which at 10,000 leases
 * overflowed the server's accept queue and left calls hanging.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, expect, it } from 'vitest';
import { MAX_CONNECTIONS, WorkApi } from '../../src/api/client.js';

let server: Server | null = null;
let api: WorkApi | null = null;
afterEach(async () => {
  await api?.close();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = null;
  api = null;
});

it(`a burst of 300 calls uses at most ${MAX_CONNECTIONS} connections, and every call is answered`, async () => {
  let connections = 0;
  server = createServer((_req, res) => {
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '4' });
      res.end('null');
    }, 20);
  });
  server.on('connection', () => connections++);
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  api = new WorkApi({ apiUrl: `http://127.0.0.1:${port}`, token: 'pt-test-token-0123456789', environmentId: 'env_test' });
  const replies = await Promise.all(Array.from({ length: 300 }, () => api!.poll({ workerId: 'w', blockMs: 1 })));
  expect(replies.every((r) => r.value === null)).toBe(true);
  expect(connections).toBeGreaterThan(1);
  expect(connections).toBeLessThanOrEqual(MAX_CONNECTIONS);
});
