/**
 * Bugs the chaos suite found, each replayed deterministically with the real binary.
 *
 * 1. Seeds 108 and 137 (first full run): the first heartbeat's reply came back after the fence's signal
 *    time (a latency spike), so the job was rightly not started; the next beat then failed, and the lease
 *    machine waited for a beat its deadline no longer allowed: no timer, no request, no job. The item
 *    held the keeper's only slot forever, nothing was left on the event loop, and the keeper exited 0
 *    without a log line (which systemd's Restart=on-failure does not restart). Fixed in
 *    src/lease/machine.ts (advance/wakeAt): a lease that runs out before its job was started is lost.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type Emulator, startEmulator } from '../../src/emulator/index.js';
import { type Keeper, sleep, startKeeper } from '../integration/support.js';

let emu: Emulator | undefined;
let keeper: Keeper | undefined;

afterEach(async () => {
  try {
    await keeper?.end();
  } finally {
    await emu?.close();
  }
});

describe('chaos regressions', () => {
  it('a first lease that comes back too late to start the job, then a failed beat: the keeper goes on serving', async () => {
    emu = await startEmulator({ token: 'pt-regression-SECRET-1', environmentId: 'env_regression', ttlOverrideSeconds: 2 });
    const [item] = emu.queue({ data: { id: 'regression-late-first-lease' } });
    // ttl 2 s, grace 1 s: the fence signals at deadline - 250 ms margin - 430 ms grace = 1320 ms after the
    // first beat was sent. A reply 1600 ms late arrives after that (no job), before the deadline (2000 ms);
    // the next beat, as late, is cut off at the deadline.
    emu.injectFault({ endpoint: 'heartbeat', kind: 'latency', latency_ms: 1600, times: 2, work_id: item!.id });
    keeper = startKeeper(emu, {
      command: ['sleep', '0.3'],
      once: false,
      env: { LEASE_KEEPER_STOP_GRACE_SECONDS: '1', LEASE_KEEPER_LOG_LEVEL: 'debug', LEASE_KEEPER_CONCURRENCY: '1' },
    });
    const lost = await keeper.waitFor((l) => l.msg === 'lease_lost' && l.work_id === item!.id, 15_000);
    expect(String(lost.reason)).toMatch(/ran out before the job could be started/);
    // Still serving: once the server's lease expires the item comes back, runs and is stopped.
    const until = Date.now() + 20_000;
    while (Date.now() < until && emu.item(item!.id).state !== 'stopped') await sleep(100);
    expect(emu.item(item!.id).state).toBe('stopped');
    expect(emu.item(item!.id).metadata.outcome).toBe('completed');
    expect(keeper.child.exitCode).toBeNull();
    keeper.kill('SIGTERM');
    expect((await keeper.exit()).code).toBe(0);
  });
});
