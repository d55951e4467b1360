/**
 * ItemLease (src/worker/item-lease.ts) with real small jobs and no containment passed (tests and
 * embedders): the default is the process group, one per worker id, so every job of a keeper gets a run id
 * of its own (README: "Every job gets LEASE_KEEPER_RUN_ID in its environment in every mode"), and the
 * job's own exit code reaches the outcome. Real clock, the fake control plane; jobs of a few ms.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { WorkItem } from '../../src/api/types.js';
import { monotonicClock } from '../../src/lease/clock.js';
import { noEvents } from '../../src/observe/snapshot.js';
import { ItemLease } from '../../src/worker/item-lease.js';
import { FakeApi, settings, silentLog } from '../support/fake-worker.js';
import { wireItem } from '../support/wire.js';

let dir: string | null = null;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = null;
});

function run(workId: string, workerId: string, script: string, out: string) {
  const item = wireItem({ id: workId, state: 'starting' }) as unknown as WorkItem;
  const lease = new ItemLease(item, {
    api: new FakeApi().asApi(),
    settings: settings({ workerId }),
    command: ['/bin/sh', '-c', script],
    tokens: ['pt-real-job-token-0123456789'],
    baseEnv: { PATH: process.env.PATH, OUT: out },
    log: silentLog(),
    clock: monotonicClock,
    events: noEvents,
  });
  return lease.start();
}

describe('ItemLease with the default containment (real jobs)', () => {
  it('each job of one worker id gets its own LEASE_KEEPER_RUN_ID; the job\'s exit code is the item\'s', async () => {
    dir = mkdtempSync(join(tmpdir(), 'lk-mut-real-job-'));
    const workerId = `w-mut-real-${process.pid}`;
    const script = 'printf %s "$LEASE_KEEPER_RUN_ID" > "$OUT"; exit 3';
    const first = await run('work_real1', workerId, script, join(dir, 'one'));
    const second = await run('work_real2', workerId, script, join(dir, 'two'));
    expect(first).toMatchObject({ outcome: 'failed', exitCode: 3, exit: { code: 3, signal: null } });
    expect(second).toMatchObject({ outcome: 'failed', exitCode: 3 });
    const one = readFileSync(join(dir, 'one'), 'utf8');
    const two = readFileSync(join(dir, 'two'), 'utf8');
    expect(one).toMatch(new RegExp(`^${workerId}/\\d+/\\d+/\\d+$`));
    expect(two).toMatch(new RegExp(`^${workerId}/\\d+/\\d+/\\d+$`));
    expect(two).not.toBe(one);
  });
});
