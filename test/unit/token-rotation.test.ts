/**
 * Token rotation below the worker: the re-readable token source (config/token.ts), the API client's retry of
 * a refused call with a rotated token (same path, so the same precondition; same Idempotency-Key), the
 * logger's scrubber following the tokens held, and the job's environment.
 */
import { chmodSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { MockAgent } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WorkApi } from '../../src/api/client.js';
import { AuthError } from '../../src/api/errors.js';
import type { WorkItem } from '../../src/api/types.js';
import { TokenCredential, type TokenReload } from '../../src/config/index.js';
import { createLogger } from '../../src/observe/logger.js';
import { jobEnvironment } from '../../src/worker/job-env.js';

const OLD = 'pt-OLD-token-1111';
const NEW = 'pt-NEW-token-2222';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lk-rotate-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Writes a token file the way the README says: a new file with its mode, then renamed over the old one. */
function writeToken(path: string, text: string, mode = 0o600): void {
  const tmp = `${path}.new`;
  writeFileSync(tmp, text);
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

function credential(path: string) {
  const seen: Array<{ trigger: string; outcome: TokenReload }> = [];
  const c = new TokenCredential(OLD, 'QODER_PAT_FILE', path, { reloaded: (trigger, outcome) => seen.push({ trigger, outcome }) });
  return { c, seen };
}

describe('TokenCredential: re-reading the token source', () => {
  it('a new token in the file becomes current and is added to the tokens held', () => {
    const path = join(dir, 'pat');
    writeToken(path, `${OLD}\n`);
    const { c, seen } = credential(path);
    expect(c.reload('sighup')).toEqual({ result: 'unchanged' });
    writeToken(path, `${NEW}\n`);
    expect(c.reread()).toBe(NEW);
    expect(c.current()).toBe(NEW);
    expect(c.held).toEqual([OLD, NEW]);
    expect(seen.map((s) => [s.trigger, s.outcome.result])).toEqual([
      ['sighup', 'unchanged'],
      ['auth', 'rotated'],
    ]);
  });

  it.each([
    ['readable by group and others (0644)', (p: string) => writeToken(p, NEW, 0o644), /accessible to group or others \(mode 0644\).*chmod 600/],
    ['empty', (p: string) => writeToken(p, '\n'), /is empty; write the token into it/],
    ['missing (unreadable)', (p: string) => rmSync(p), /cannot open it: no such file/],
    ['two tokens on two lines', (p: string) => writeToken(p, `${NEW}\n${OLD}\n`), /whitespace, control or non-ASCII/],
  ])('a new file that is %s is refused, naming the problem, and the old token is kept', (_name, spoil, problem) => {
    const path = join(dir, 'pat');
    writeToken(path, OLD);
    const { c } = credential(path);
    spoil(path);
    const r = c.reload('sighup');
    expect(r.result).toBe('refused');
    const text = (r as { problem: string }).problem;
    expect(text).toMatch(problem);
    expect(text).toContain(path);
    expect(text).toMatch(/the token in use is kept$/);
    expect(text).not.toContain(NEW);
    expect(c.current()).toBe(OLD);
    expect(c.held).toEqual([OLD]);
  });

  it('QODER_PAT cannot change: a re-read says so and keeps the token', () => {
    const c = new TokenCredential(OLD, 'QODER_PAT', null);
    expect(c.reload('sighup')).toMatchObject({ result: 'not_reloadable', problem: expect.stringMatching(/QODER_PAT_FILE or LoadCredential=/) });
    expect(c.reread()).toBe(OLD);
  });
});

describe('WorkApi: a 401/403 with a rotated token', () => {
  const ORIGIN = 'https://api.qoder.test';
  const ENV = 'env_mock';
  const PATH = `/api/v1/cloud/environments/${ENV}/work/work_1/heartbeat?expected_last_heartbeat=2026-07-01T08%3A15%3A06.120394Z&desired_ttl_seconds=10`;
  const BEAT = { type: 'work_heartbeat', last_heartbeat: '2026-07-01T08:15:16.000001Z', lease_extended: true, state: 'active', ttl_seconds: 10 };
  const REFUSED = { type: 'error', error: { type: 'authentication_error', message: 'invalid bearer token' } };
  let agent: MockAgent;

  beforeEach(() => {
    agent = new MockAgent();
    agent.disableNetConnect();
  });
  afterEach(async () => {
    agent.assertNoPendingInterceptors();
    await agent.close();
  });

  const beat = (api: WorkApi) =>
    api.heartbeat('work_1', { expectedLastHeartbeat: '2026-07-01T08:15:06.120394Z', desiredTtlSeconds: 10, idempotencyKey: 'key-1' });

  it.each([401, 403])('%i: re-reads, then sends the same call (same precondition, same Idempotency-Key) with the new token', async (status) => {
    const path = join(dir, 'pat');
    writeToken(path, OLD);
    const { c } = credential(path);
    const pool = agent.get(ORIGIN);
    pool.intercept({ path: PATH, method: 'POST', headers: { authorization: `Bearer ${OLD}`, 'idempotency-key': 'key-1' } }).reply(status, REFUSED);
    pool.intercept({ path: PATH, method: 'POST', headers: { authorization: `Bearer ${NEW}`, 'idempotency-key': 'key-1' } }).reply(200, BEAT);
    const api = new WorkApi({ apiUrl: ORIGIN, token: c, environmentId: ENV, dispatcher: agent });
    writeToken(path, NEW); // the operator rotated; the keeper learns of it from the refusal
    expect((await beat(api)).value.last_heartbeat).toBe(BEAT.last_heartbeat);
    // The next call goes out with the new token straight away.
    pool.intercept({ path: `/api/v1/cloud/environments/${ENV}/work/stats`, method: 'GET', headers: { authorization: `Bearer ${NEW}` } }).reply(200, {
      type: 'work_queue_stats',
      depth: 0,
      pending: 0,
      oldest_queued_at: null,
      workers_polling: 0,
    });
    await api.stats();
  });

  it('an unchanged token is the AuthError it always was: one request, no retry', async () => {
    const path = join(dir, 'pat');
    writeToken(path, OLD);
    const { c } = credential(path);
    agent.get(ORIGIN).intercept({ path: PATH, method: 'POST' }).reply(401, REFUSED); // once: a retry would be unmatched
    const api = new WorkApi({ apiUrl: ORIGIN, token: c, environmentId: ENV, dispatcher: agent });
    const err = await beat(api).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as AuthError).message).not.toContain(OLD);
  });

  it('the new token refused as well: the second refusal is final (no loop), and neither token is in the message', async () => {
    const path = join(dir, 'pat');
    writeToken(path, OLD);
    const { c } = credential(path);
    const pool = agent.get(ORIGIN);
    const echo = (t: string) => ({ type: 'error', error: { type: 'authentication_error', message: `token ${t} is revoked` } });
    pool.intercept({ path: PATH, method: 'POST', headers: { authorization: `Bearer ${OLD}` } }).reply(401, echo(OLD));
    pool.intercept({ path: PATH, method: 'POST', headers: { authorization: `Bearer ${NEW}` } }).reply(401, echo(NEW));
    const api = new WorkApi({ apiUrl: ORIGIN, token: c, environmentId: ENV, dispatcher: agent });
    writeToken(path, NEW);
    const err = (await beat(api).catch((e: unknown) => e)) as AuthError;
    expect(err).toBeInstanceOf(AuthError);
    expect(err.message).toContain('token [REDACTED] is revoked');
    expect(err.message).not.toContain(NEW);
    expect(err.message).not.toContain(OLD);
  });
});

describe('redaction follows the tokens held', () => {
  it('the logger scrubs a token rotated in after it was created', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(String(chunk));
        done();
      },
    });
    const path = join(dir, 'pat');
    writeToken(path, OLD);
    const { c } = credential(path);
    const log = createLogger({ level: 'info', format: 'json', journal: false, destination: sink, secrets: c.held });
    writeToken(path, NEW);
    c.reload('sighup');
    log.info({ note: `old ${OLD} new ${NEW}` }, `message with ${NEW}`);
    expect(lines.join('')).not.toContain(NEW);
    expect(lines.join('')).not.toContain(OLD);
    expect(lines.join('')).toContain('old [REDACTED] new [REDACTED]');
  });

  it("the job's environment drops every variable holding any token held", () => {
    const item = { id: 'work_1', environment_id: 'env_x', data: { type: 'session', id: 'sess_1' } } as unknown as WorkItem;
    const env = jobEnvironment({ PATH: '/bin', A: `x${OLD}x`, B: `Bearer ${NEW}`, C: 'fine', QODER_PAT_FILE: '/etc/pat' }, item, [OLD, NEW]);
    expect(Object.keys(env).sort()).toEqual(['C', 'LEASE_KEEPER_ENVIRONMENT_ID', 'LEASE_KEEPER_SESSION_ID', 'LEASE_KEEPER_WORK', 'LEASE_KEEPER_WORK_ID', 'PATH']);
  });
});
