/** WorkApi with an injected undici Dispatcher (MockAgent): no network, and close() leaves it alone. */
import { MockAgent } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { WorkApi } from '../../src/api/client.js';
import { LeaseLostError, TransientError } from '../../src/api/errors.js';

const ORIGIN = 'https://api.qoder.test';
const ENV = 'env_mock';
const BASE = `/api/v1/cloud/environments/${ENV}/work`;

let agent: MockAgent;

afterEach(async () => {
  agent.assertNoPendingInterceptors();
  await agent.close();
});

describe('WorkApi with an injected dispatcher', () => {
  it('sends through the MockAgent and does not close it', async () => {
    agent = new MockAgent();
    agent.disableNetConnect();
    const pool = agent.get(ORIGIN);
    pool
      .intercept({
        path: `${BASE}/work_1/heartbeat?expected_last_heartbeat=2026-07-01T08%3A15%3A06.120394Z&desired_ttl_seconds=10`,
        method: 'POST',
        headers: { authorization: 'Bearer pt-mock', 'idempotency-key': 'k1' },
      })
      .reply(200, { type: 'work_heartbeat', last_heartbeat: '2026-07-01T08:15:16.000001Z', lease_extended: true, state: 'active', ttl_seconds: 10 }, {
        headers: { 'x-request-id': 'mock-rid' },
      });
    pool.intercept({ path: `${BASE}/work_1/heartbeat?expected_last_heartbeat=2026-07-01T08%3A15%3A16.000001Z&desired_ttl_seconds=10`, method: 'POST' }).reply(
      412,
      { type: 'error', error: { type: 'precondition_failed_error', message: 'another worker has taken over' } },
    );

    const api = new WorkApi({ apiUrl: ORIGIN, token: 'pt-mock', environmentId: ENV, dispatcher: agent });
    const first = await api.heartbeat('work_1', { expectedLastHeartbeat: '2026-07-01T08:15:06.120394Z', desiredTtlSeconds: 10, idempotencyKey: 'k1' });
    expect(first).toMatchObject({ status: 200, requestId: 'mock-rid', value: { last_heartbeat: '2026-07-01T08:15:16.000001Z' } });
    const err = await api
      .heartbeat('work_1', { expectedLastHeartbeat: first.value.last_heartbeat, desiredTtlSeconds: 10, idempotencyKey: 'k2' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LeaseLostError);

    await api.close();
    // Still usable: the client only closes a dispatcher it created.
    pool.intercept({ path: `${BASE}/stats`, method: 'GET' }).reply(200, {
      type: 'work_queue_stats',
      depth: 0,
      pending: 0,
      oldest_queued_at: null,
      workers_polling: 1,
    });
    expect((await api.stats()).value.workers_polling).toBe(1);
  });

  it('an unmatched request (MockNotMatchedError) is an ApiError, not a crash', async () => {
    agent = new MockAgent();
    agent.disableNetConnect();
    const api = new WorkApi({ apiUrl: ORIGIN, token: 'pt-mock', environmentId: ENV, dispatcher: agent });
    const err = await api.stats().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransientError);
  });
});
