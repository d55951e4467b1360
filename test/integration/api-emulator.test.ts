/**
 * WorkApi end to end against the real emulator over loopback: every endpoint, the byte-exact
 * last_heartbeat echo chain, 412 after an admin takeover, 409 after a stop, and the emulator's faults.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WorkApi } from '../../src/api/client.js';
import { AuthError, BadRequestError, ConflictError, LeaseLostError, MalformedReplyError, NotFoundError, TransientError } from '../../src/api/errors.js';
import { NO_HEARTBEAT } from '../../src/api/types.js';
import { startEmulator, type Emulator } from '../../src/emulator/index.js';

let emu: Emulator;
let api: WorkApi;

beforeEach(async () => {
  emu = await startEmulator();
  api = new WorkApi({ apiUrl: emu.url, token: emu.token, environmentId: emu.environmentId });
});

afterEach(async () => {
  await emu.close();
  await api.close();
});

/** Queue one item, poll it and ack it as `worker`. */
async function claim(worker = 'worker-1'): Promise<string> {
  const [queued] = emu.queue();
  const polled = await api.poll({ workerId: worker, blockMs: 50 });
  expect(polled.value?.id).toBe(queued?.id);
  const acked = await api.ack(polled.value!.id, { workerId: worker });
  expect(acked.value.state).toBe('starting');
  return acked.value.id;
}

const beat = (id: string, expected: string, key: string) =>
  api.heartbeat(id, { expectedLastHeartbeat: expected, desiredTtlSeconds: 30, idempotencyKey: key });

describe('WorkApi against the emulator', () => {
  it('walks one item through every endpoint: poll, ack, heartbeats, get, metadata, stop, confirm, stats', async () => {
    expect((await api.stats()).value).toMatchObject({ type: 'work_queue_stats', depth: 0 });
    expect((await api.poll({ workerId: 'worker-1', blockMs: 20 })).value).toBeNull();

    const [queued] = emu.queue({ metadata: { origin: 'test' } });
    expect((await api.stats()).value.depth).toBe(1);
    const polled = await api.poll({ workerId: 'worker-1', blockMs: 50 });
    expect(polled.value).toMatchObject({ id: queued?.id, state: 'queued', environment_id: emu.environmentId, metadata: { origin: 'test' } });
    const id = polled.value!.id;

    const acked = await api.ack(id, { workerId: 'worker-1' });
    expect(acked.value).toMatchObject({ id, state: 'starting' });
    expect(acked.value.acknowledged_at).not.toBeNull();

    // The echo chain: each reply's last_heartbeat goes back byte for byte, and is what the server holds.
    const first = await beat(id, NO_HEARTBEAT, 'hb-1');
    expect(first.value).toMatchObject({ type: 'work_heartbeat', lease_extended: true, state: 'active', ttl_seconds: 30 });
    expect(first.value.last_heartbeat).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    expect(emu.item(id).lease?.last_heartbeat).toBe(first.value.last_heartbeat);
    let last = first.value.last_heartbeat;
    for (let i = 2; i <= 4; i++) {
      const next = await beat(id, last, `hb-${i}`);
      expect(next.value.lease_extended).toBe(true);
      expect(next.value.last_heartbeat).not.toBe(last);
      expect(emu.item(id).lease?.last_heartbeat).toBe(next.value.last_heartbeat);
      last = next.value.last_heartbeat;
    }

    const got = await api.get(id);
    expect(got.value).toMatchObject({ id, state: 'active' });
    expect(got.value.started_at).not.toBeNull();

    const meta = await api.updateMetadata(id, { exit_code: '0', worker_id: 'worker-1' });
    expect(meta.value.metadata).toEqual({ origin: 'test', exit_code: '0', worker_id: 'worker-1' });
    expect((await api.updateMetadata(id, { origin: null })).value.metadata).toEqual({ exit_code: '0', worker_id: 'worker-1' });

    const stopping = await api.stop(id);
    expect(stopping.value.state).toBe('stopping');
    expect(stopping.value.stop_requested_at).not.toBeNull();
    const draining = await beat(id, last, 'hb-5');
    expect(draining.value.state).toBe('stopping');
    const stopped = await api.stop(id);
    expect(stopped.value.state).toBe('stopped');
    expect(stopped.value.stopped_at).not.toBeNull();

    // The request id of each call is ours, echoed by the emulator and logged by it.
    const ids = new Set(emu.events().map((e) => e.request_id));
    expect(ids.has(stopped.requestId)).toBe(true);
    expect(stopped.requestId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('412 after an admin takeover', async () => {
    const id = await claim();
    const first = await beat(id, NO_HEARTBEAT, 'a');
    emu.takeover(id, { workerId: 'intruder' });
    const err = await beat(id, first.value.last_heartbeat, 'b').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LeaseLostError);
    expect(err).toMatchObject({ status: 412, errorType: 'precondition_failed_error', operation: 'heartbeat', workId: id });
  });

  it('409 on heartbeat after a forced stop, and on ack of a stopped item', async () => {
    const id = await claim();
    const first = await beat(id, NO_HEARTBEAT, 'a');
    expect((await api.stop(id, { force: true })).value.state).toBe('stopped');
    const err = await beat(id, first.value.last_heartbeat, 'b').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as ConflictError).status).toBe(409);
    expect(await api.ack(id, { workerId: 'worker-1' }).catch((e: unknown) => e)).toBeInstanceOf(ConflictError);
  });

  it('409 on ack with another Worker-ID than the poll', async () => {
    emu.queue();
    const polled = await api.poll({ workerId: 'worker-a', blockMs: 50 });
    const err = await api.ack(polled.value!.id, { workerId: 'worker-b' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as Error).message).toMatch(/drop the item and poll again/);
  });

  it('401 with a wrong token, 404 for another environment or an unknown item, 400 when not self_hosted', async () => {
    const wrongToken = new WorkApi({ apiUrl: emu.url, token: 'pt-wrong', environmentId: emu.environmentId });
    const wrongEnv = new WorkApi({ apiUrl: emu.url, token: emu.token, environmentId: 'env_elsewhere' });
    try {
      const auth = await wrongToken.poll({ workerId: 'w', blockMs: 1 }).catch((e: unknown) => e);
      expect(auth).toBeInstanceOf(AuthError);
      expect((auth as Error).message).toContain('QODER_PAT');
      const env = await wrongEnv.stats().catch((e: unknown) => e);
      expect(env).toBeInstanceOf(NotFoundError);
      expect((env as Error).message).toMatch(/environment env_elsewhere not found/);
    } finally {
      await wrongToken.close();
      await wrongEnv.close();
    }
    const item = await api.get('work_AAAAAAAAAAAAAAAAAAAAAAAA').catch((e: unknown) => e);
    expect(item).toBeInstanceOf(NotFoundError);

    emu.setSettings({ environment_type: 'cloud' });
    const cloud = await api.poll({ workerId: 'w', blockMs: 1 }).catch((e: unknown) => e);
    expect(cloud).toBeInstanceOf(BadRequestError);
    expect((cloud as Error).message).toMatch(/not a self_hosted environment/);
  });

  it('faults: 503, 429 with Retry-After, reset, hang past the deadline, malformed 200', async () => {
    const id = await claim();
    emu.injectFault({ endpoint: 'heartbeat', kind: 'status', status: 503 });
    expect(await beat(id, NO_HEARTBEAT, 'k').catch((e: unknown) => e)).toBeInstanceOf(TransientError);

    emu.injectFault({ endpoint: 'heartbeat', kind: 'rate_limit', retry_after_s: 2 });
    const limited = await beat(id, NO_HEARTBEAT, 'k').catch((e: unknown) => e);
    expect(limited).toBeInstanceOf(TransientError);
    expect((limited as TransientError).retryAfterMs).toBe(2000);

    emu.injectFault({ endpoint: 'heartbeat', kind: 'reset' });
    expect(await beat(id, NO_HEARTBEAT, 'k').catch((e: unknown) => e)).toBeInstanceOf(TransientError);

    emu.injectFault({ endpoint: 'get', kind: 'hang' });
    const started = performance.now();
    const hung = await api.get(id, { timeoutMs: 150 }).catch((e: unknown) => e);
    expect(hung).toBeInstanceOf(TransientError);
    expect(performance.now() - started).toBeLessThan(1000);

    emu.injectFault({ endpoint: 'get', kind: 'malformed', body: '{"type":"work","id":"../admin"}' });
    expect(await api.get(id).catch((e: unknown) => e)).toBeInstanceOf(MalformedReplyError);

    // After all that, the same precondition still takes the lease: none of the failed attempts applied.
    expect((await beat(id, NO_HEARTBEAT, 'k')).value.state).toBe('active');
  });

  it('a dropped heartbeat reply was applied: the retry with the same key gets its reply; a new key with the old precondition gets 412', async () => {
    const id = await claim();
    const first = await beat(id, NO_HEARTBEAT, 'a');
    emu.injectFault({ endpoint: 'heartbeat', kind: 'drop_reply' });
    expect(await beat(id, first.value.last_heartbeat, 'b').catch((e: unknown) => e)).toBeInstanceOf(TransientError);
    const retry = await beat(id, first.value.last_heartbeat, 'b');
    expect(retry.value.last_heartbeat).toBe(emu.item(id).lease!.last_heartbeat);
    expect(await beat(id, first.value.last_heartbeat, 'c').catch((e: unknown) => e)).toBeInstanceOf(LeaseLostError);
  });
});
