/**
 * Fleet operations, with the real `bin/lease-keeper run` against the real emulator over loopback (leases of
 * 2 s, beats every ~0.66 s): token rotation (a 401 with a rotated token file, SIGHUP, a refused file, an
 * unchanged token) and LEASE_KEEPER_SHUTDOWN=finish (jobs end by themselves; a second signal drains; a lost
 * lease still stops its job).
 */
import { chmodSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Emulator, type EmulatorEvent, tokenFingerprint } from '../../src/emulator/index.js';
import { type NotifyReceiver, startNotifyReceiver } from '../support/notify-receiver.js';
import { type Keeper, TOKEN, emulator, jobStarted, readRecords, recordingJob, removeScratch, scratch, sleep, startKeeper } from './support.js';

/** The rotated-in token: never printed either. */
const NEW_TOKEN = 'pt-rotated-SECRET-5b1e0d';

let emu: Emulator;
let dir: string;
let job: string;
let record: string;
let patFile: string;
let receiver: NotifyReceiver | null = null;
const keepers: Keeper[] = [];

beforeEach(async () => {
  emu = await emulator(2);
  dir = scratch();
  job = recordingJob(dir);
  record = join(dir, 'record');
  patFile = join(dir, 'qoder.pat');
  writeToken(TOKEN);
});

afterEach(async () => {
  try {
    await Promise.all(keepers.splice(0).map((k) => k.end()));
  } finally {
    receiver?.close();
    receiver = null;
    removeScratch(dir);
    await emu.close();
  }
});

/** As the README says: write a new file with its mode, then rename it over the old one. */
function writeToken(token: string, mode = 0o600): void {
  const tmp = `${patFile}.new`;
  writeFileSync(tmp, `${token}\n`);
  chmodSync(tmp, mode);
  renameSync(tmp, patFile);
}

/** A keeper reading its token from QODER_PAT_FILE (the rotatable source). */
function keeper(opts: Parameters<typeof startKeeper>[1]): Keeper {
  const k = startKeeper(emu, { ...opts, env: { RECORD: record, QODER_PAT: undefined, QODER_PAT_FILE: patFile, ...opts.env } });
  keepers.push(k);
  return k;
}

const beatsOf = (workId: string, since = 0): EmulatorEvent[] =>
  emu.events(since).filter((e) => e.type === 'heartbeat_accepted' && e.work_id === workId);

/** Calls the emulator counted for a token (accepted by its token check). */
const callsWith = (token: string): number => emu.tokens().accepted.find((t) => t.fingerprint === tokenFingerprint(token))?.calls ?? 0;

async function waitUntil(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

function expectNoTokenPrinted(k: Keeper): void {
  expect(k.stdout + k.stderr).not.toContain(TOKEN);
  expect(k.stdout + k.stderr).not.toContain(NEW_TOKEN);
}

describe('emulator admin API: tokens', () => {
  const admin = async (method: string, body?: unknown) => {
    const res = await fetch(`${emu.adminUrl}tokens`, {
      method,
      headers: { 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  };
  const stats = (token: string) => fetch(`${emu.url}/api/v1/cloud/environments/${emu.environmentId}/work/stats`, { headers: { authorization: `Bearer ${token}` } });

  it('accepts a new token and revokes the old, shows fingerprints and call counts, never the tokens', async () => {
    expect((await stats(NEW_TOKEN)).status).toBe(401);
    const changed = await admin('POST', { accept: [NEW_TOKEN], revoke: [TOKEN] });
    expect(changed.status).toBe(200);
    expect(changed.json).toEqual({ accepted: [{ fingerprint: tokenFingerprint(NEW_TOKEN), calls: 0, last_used_ms: null }], revoked: [tokenFingerprint(TOKEN)] });
    expect((await stats(NEW_TOKEN)).status).toBe(200);
    const refused = await stats(TOKEN);
    expect(refused.status).toBe(401);
    expect(((await refused.json()) as { error: { message: string } }).error.message).toBe('revoked bearer token');
    expect((await admin('GET')).json.accepted).toMatchObject([{ calls: 1 }]);
    const log = JSON.stringify(emu.events());
    expect(log).toContain('tokens_changed');
    expect(log).not.toContain(NEW_TOKEN);
    expect(log).not.toContain(TOKEN);
    // Reset: the start-up token again, alone.
    await fetch(`${emu.adminUrl}reset`, { method: 'POST' });
    expect((await stats(TOKEN)).status).toBe(200);
    expect((await stats(NEW_TOKEN)).status).toBe(401);
  });

  it('refuses a malformed change with 400', async () => {
    expect((await admin('POST', { accept: 'pt-x' })).status).toBe(400);
    expect((await admin('POST', { accept: ['has space'] })).status).toBe(400);
    expect((await admin('POST', { grant: ['pt-x'] })).status).toBe(400);
    expect((await admin('DELETE')).status).toBe(405);
  });
});

describe('token rotation', () => {
  it('a 401 after the token file was rotated: the same call is retried with the new token, the job never notices', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job], env: { JOB_SECONDS: '4' } });
    await jobStarted(record);
    await waitUntil(() => beatsOf(item!.id).length >= 2, 'two accepted heartbeats');

    writeToken(NEW_TOKEN);
    const rotatedAt = emu.events().at(-1)!.seq;
    emu.changeTokens({ accept: [NEW_TOKEN], revoke: [TOKEN] }); // the old token is refused from now on

    const rotated = await k.waitFor((l) => l.msg === 'token_rotated');
    expect(rotated).toMatchObject({ trigger: 'auth', source: 'QODER_PAT_FILE' });
    const { code } = await k.exit();
    expect(code).toBe(0);

    // The refused heartbeat was sent again at once and accepted: the lease was never lost.
    const rejected = emu.events(rotatedAt).filter((e) => e.type.endsWith('_rejected'));
    expect(rejected.length).toBeGreaterThanOrEqual(1);
    expect(rejected.every((e) => e.status === 401 && e.message === 'revoked bearer token')).toBe(true);
    expect(beatsOf(item!.id, rotatedAt).length).toBeGreaterThanOrEqual(2);
    expect(callsWith(NEW_TOKEN)).toBeGreaterThanOrEqual(beatsOf(item!.id, rotatedAt).length + 2); // beats + metadata + stop
    expect(k.msgs()).not.toContain('lease_lost');
    expect(k.msgs()).not.toContain('job_signaled');
    expect(k.msgs()).not.toContain('auth_failed');
    // The job ran to its own end and was reported as such.
    expect(readRecords(record)).toMatchObject([{ workId: item!.id, how: 'done' }]);
    expect(emu.item(item!.id)).toMatchObject({ state: 'stopped', metadata: { outcome: 'completed', exit_code: '0' } });
    expectNoTokenPrinted(k);
  });

  it('SIGHUP re-reads the token file before any 401: later calls carry the new token, none is refused', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job], env: { JOB_SECONDS: '4' } });
    await jobStarted(record);
    emu.changeTokens({ accept: [NEW_TOKEN] }); // both accepted for the moment
    writeToken(NEW_TOKEN);
    k.child.kill('SIGHUP');
    expect(await k.waitFor((l) => l.msg === 'token_rotated')).toMatchObject({ trigger: 'sighup' });
    const oldCalls = callsWith(TOKEN);
    await waitUntil(() => callsWith(NEW_TOKEN) >= 2, 'two calls with the new token');
    emu.changeTokens({ revoke: [TOKEN] });

    expect((await k.exit()).code).toBe(0);
    expect(oldCalls).toBeGreaterThan(0);
    // Every call after the revocation carried the new token: not one was refused.
    expect(emu.events().filter((e) => e.type.endsWith('_rejected'))).toEqual([]);
    expect(emu.item(item!.id).metadata.outcome).toBe('completed');
    expect(readRecords(record)[0]!.how).toBe('done');
    expectNoTokenPrinted(k);
  });

  it('a new file readable by others (0644) is refused with a log line saying why; the old token stays in use', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job], env: { JOB_SECONDS: '3' } });
    await jobStarted(record);
    emu.changeTokens({ accept: [NEW_TOKEN] });
    writeToken(NEW_TOKEN, 0o644);
    k.child.kill('SIGHUP');
    const refused = await k.waitFor((l) => l.msg === 'token_refused');
    expect(refused).toMatchObject({ trigger: 'sighup', source: 'QODER_PAT_FILE' });
    expect(String(refused.problem)).toMatch(/accessible to group or others \(mode 0644\).*chmod 600.*the token in use is kept/);
    const before = callsWith(TOKEN);
    expect((await k.exit()).code).toBe(0);
    expect(callsWith(TOKEN)).toBeGreaterThan(before); // still the old one
    expect(callsWith(NEW_TOKEN)).toBe(0);
    expect(emu.item(item!.id).metadata.outcome).toBe('completed');
    expectNoTokenPrinted(k);
  });

  it('a 401 with the token file unchanged is still fatal: the lease is given up, the job stopped, exit 77', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job] });
    await jobStarted(record);
    emu.changeTokens({ revoke: [TOKEN] });
    const { code } = await k.exit();
    expect(code).toBe(77);
    expect(readRecords(record)[0]!.how).toBe('term');
    expect(k.msgs()).not.toContain('token_rotated');
    expect(k.lines.find((l) => l.msg === 'lease_lost')).toBeDefined();
    // One refusal ends it: no retry loop against a token the server no longer takes.
    expect(emu.events().filter((e) => e.type === 'heartbeat_rejected' && e.work_id === item!.id)).toHaveLength(1);
    expectNoTokenPrinted(k);
  });
});

describe('LEASE_KEEPER_SHUTDOWN=finish', () => {
  it('SIGTERM: no stop signal, heartbeats go on, nothing new is claimed, the job ends by itself, exit 0', async () => {
    receiver = await startNotifyReceiver(dir);
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job], once: false, env: { JOB_SECONDS: '3', LEASE_KEEPER_SHUTDOWN: 'finish', NOTIFY_SOCKET: receiver.socketPath } });
    const started = await jobStarted(record);
    await receiver.waitFor((a) => a.includes('READY=1'));
    k.child.kill('SIGTERM');
    expect(await k.waitFor((l) => l.msg === 'shutdown_requested')).toMatchObject({ phase: 'finishing', held: 1 });
    const termSeq = emu.events().at(-1)!.seq;
    const [late] = emu.queue({ count: 1 }); // queued after the SIGTERM: must not be claimed
    await receiver.waitFor((a) => a.some((x) => x.startsWith('STATUS=finishing 1 item')));

    const { code } = await k.exit();
    expect(code).toBe(0);
    const [run] = readRecords(record);
    expect(run).toMatchObject({ workId: item!.id, how: 'done' });
    expect(run!.end! - started.start).toBeGreaterThanOrEqual(2900); // its own 3 s, not cut short
    expect(beatsOf(item!.id, termSeq).length).toBeGreaterThanOrEqual(2);
    expect(k.msgs()).not.toContain('job_signaled');
    expect(emu.item(item!.id)).toMatchObject({ state: 'stopped', metadata: { outcome: 'completed', exit_code: '0' } });
    expect(emu.item(late!.id).state).toBe('queued');
    expect(emu.events().filter((e) => e.type === 'poll_delivered' && e.work_id === late!.id)).toEqual([]);
    // STOPPING=1 at once, but no stop-timeout extension while the jobs finish: TimeoutStopSec= bounds that wait.
    expect(receiver.assignments()).toContain('STOPPING=1');
    expect(receiver.assignments().filter((a) => a.startsWith('EXTEND_TIMEOUT_USEC='))).toEqual([]);
  });

  it('a second SIGTERM turns finish into a drain: the job gets its stop signal, the item ends as shutdown', async () => {
    receiver = await startNotifyReceiver(dir);
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job], once: false, env: { LEASE_KEEPER_SHUTDOWN: 'finish', NOTIFY_SOCKET: receiver.socketPath } });
    await jobStarted(record);
    k.child.kill('SIGTERM');
    await k.waitFor((l) => l.msg === 'shutdown_requested' && l.phase === 'finishing');
    await sleep(1500); // two heartbeat intervals: still running, still beating
    expect(readRecords(record)[0]!.end).toBeNull();
    k.child.kill('SIGTERM');
    expect(await k.waitFor((l) => l.msg === 'shutdown_requested' && l.phase === 'draining')).toMatchObject({ from: 'finishing' });
    expect((await k.exit()).code).toBe(0);
    expect(readRecords(record)[0]!.how).toBe('term');
    expect(emu.item(item!.id)).toMatchObject({ state: 'stopped', metadata: { outcome: 'shutdown' } });
    // The drain's stop-timeout extension begins with the drain.
    expect(receiver.assignments().some((a) => a.startsWith('EXTEND_TIMEOUT_USEC='))).toBe(true);
  });

  it('a lease lost while finishing (takeover) still stops the job at once', async () => {
    const [item] = emu.queue({ count: 1 });
    const k = keeper({ command: [job], once: false, env: { LEASE_KEEPER_SHUTDOWN: 'finish' } });
    await jobStarted(record);
    k.child.kill('SIGTERM');
    await k.waitFor((l) => l.msg === 'shutdown_requested');
    emu.takeover(item!.id);
    const signaled = await k.waitFor((l) => l.msg === 'job_signaled');
    expect(signaled).toMatchObject({ reason: 'lease_lost' });
    expect((await k.exit()).code).toBe(0);
    expect(readRecords(record)[0]!.how).toBe('term');
    expect(k.lines.find((l) => l.msg === 'item_finished')).toMatchObject({ outcome: 'lease_lost' });
  });
});
