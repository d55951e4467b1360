/**
 * The units of systemd/ under a real systemd (the machine's own, 252 here) booted as PID 1 in a throwaway
 * sandbox (sandbox.ts): each test boots its own guest, installs the template unit as an operator would
 * (guest.ts), drives the emulator inside it, and reads what systemd and the journal say.
 * Root only: elsewhere `npm run test:system` skips with the reason, and fails under LEASE_KEEPER_TEST_STRICT=1.
 * LEASE_KEEPER_SYSTEM_BREAK="KillMode=process" adds a throwaway drop-in to every test (docs/systemd.md, 10).
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { prerequisite } from '../support/prerequisites.js';
import { KeeperGuest, STATE_DIR, UNIT, type GuestOptions } from './guest.js';
import { leftovers, sandboxMissing } from './sandbox.js';

let guest: KeeperGuest | null = null;
const before = leftovers();

async function boot(opts: GuestOptions = {}): Promise<KeeperGuest> {
  guest = await KeeperGuest.boot(opts);
  return guest;
}

/** Boots, starts the unit (which must succeed), queues one item and waits for its job. */
async function holding(opts: GuestOptions = {}): Promise<{ g: KeeperGuest; id: string }> {
  const g = await boot(opts);
  const start = await g.systemctl('start', UNIT);
  expect(start.code, `systemctl start: ${start.stderr}\n${await g.journal('-u', UNIT, '-n', '15', '-o', 'cat')}`).toBe(0);
  const [item] = await g.queue();
  await g.jobStarted(item!.id);
  return { g, id: item!.id };
}

afterEach(async (ctx) => {
  const g = guest;
  guest = null;
  // A failed test shows what systemd and the keeper said: the guest's journal is gone after stop().
  if (g && ctx.task.result?.state === 'fail') {
    console.log(`journal of the failed test (${ctx.task.name}):\n${await g.journal('-o', 'short-precise', '-n', '60').catch(String)}`);
  }
  await g?.stop();
});

afterAll(() => {
  // Every sandbox is gone: no cgroup, temp dir or mount of this suite is left on the host.
  expect(leftovers().filter((x) => !before.includes(x))).toEqual([]);
});

describe.runIf(prerequisite('root, unshare and systemd for a sandboxed systemd', sandboxMissing()))(`${UNIT} under a real systemd`, () => {
  it('systemctl start returns only after READY=1 (first poll answered), the unit is active, and status shows the STATUS= line with the item held', async () => {
    const g = await boot();
    // The first poll is answered only after 1.5 s: a start that did not wait for READY=1 would return sooner.
    await g.admin('POST', '/faults', { endpoint: 'poll', kind: 'latency', latency_ms: 1500, times: 1 });
    const t0 = Date.now();
    const start = await g.systemctl('start', UNIT);
    const took = Date.now() - t0;
    expect(start.code, start.stderr).toBe(0);
    expect(took).toBeGreaterThanOrEqual(1400);
    expect(await g.show('ActiveState', 'SubState')).toEqual({ ActiveState: 'active', SubState: 'running' });
    expect((await g.keeperLines()).map((l) => l.msg)).toContain('ready');

    const [item] = await g.queue();
    await g.jobStarted(item!.id);
    // STATUS= is refreshed at most every 5 s.
    await g.until('STATUS= names the item', async () => (await g.show('StatusText')).StatusText!.includes(item!.id), 15_000);
    const status = await g.systemctl('status', UNIT);
    expect(status.stdout).toMatch(new RegExp(`Status: "1/1 items held; ${item!.id} lease \\d+s left, last heartbeat accepted"`));
    expect(status.stdout).toMatch(/Active: active \(running\)/);
  });

  it('the token arrives through LoadCredential= only: not in the unit, the environment, the job or the journal', async () => {
    const { g, id } = await holding();
    // The keeper authenticated (it holds the item) with a token that exists only in /etc/lease-keeper/sys.pat.
    expect((await g.item(id)).state).toBe('active');
    const unitText = (await g.systemctl('cat', UNIT)).stdout;
    expect(unitText).toContain(`LoadCredential=qoder-pat:/etc/lease-keeper/%i.pat`);
    const settings = unitText.split('\n').filter((l) => !l.startsWith('#'));
    expect(settings.filter((l) => /QODER_PAT/.test(l))).toEqual([]);
    expect((await g.show('Environment')).Environment).not.toMatch(/QODER_PAT/);

    const { MainPID } = await g.show('MainPID');
    const environ = ((await g.cat(`/proc/${MainPID}/environ`)) ?? '').split('\0');
    const credDir = environ.find((v) => v.startsWith('CREDENTIALS_DIRECTORY='))?.split('=')[1];
    expect(credDir).toBe(`/run/credentials/${UNIT}`);
    expect(environ.filter((v) => /^QODER_PAT(_FILE)?=/.test(v))).toEqual([]);
    expect((await g.cat(`${credDir}/qoder-pat`))?.trim()).toBe(g.token);

    const jobEnv = (await g.cat(`${STATE_DIR}/${id}.env`)) ?? '';
    expect(jobEnv).toContain(`LEASE_KEEPER_WORK_ID=${id}`);
    expect(jobEnv).not.toMatch(/QODER_PAT|CREDENTIALS_DIRECTORY|NOTIFY_SOCKET|WATCHDOG_/);
    expect(jobEnv).not.toContain(g.token);

    expect((await g.systemctl('stop', UNIT)).code).toBe(0);
    // Every field of every journal entry, all units (the stop report included).
    const journal = await g.journal('-o', 'export');
    expect(journal.length).toBeGreaterThan(1000);
    expect(journal).toContain(id);
    expect(journal).not.toContain(g.token);
  });

  it('journalctl -p err shows the auth error (a 401 mid-lease, token unchanged: exit 77) and not the routine lines', async () => {
    const { g, id } = await holding();
    await g.until('a heartbeat was accepted after the first', async () => ((await g.item(id)).lease?.heartbeats ?? 0) >= 2, 10_000);
    await g.admin('POST', '/faults', { endpoint: 'heartbeat', kind: 'status', status: 401, times: 0 });
    await g.until('the unit failed', async () => (await g.show('ActiveState')).ActiveState === 'failed', 20_000);
    expect((await g.show('ExecMainStatus')).ExecMainStatus).toBe('77');

    const all = await g.journal('-u', UNIT, '-o', 'cat');
    const errors = await g.journal('-u', UNIT, '-o', 'cat', '-p', 'err');
    // The routine lines are in the journal, at lower priorities.
    for (const routine of ['"msg":"starting"', '"msg":"ready"', '"msg":"claimed"', '"msg":"lease_acquired"', '"msg":"heartbeat"']) {
      expect(all).toContain(routine);
      expect(errors).not.toContain(routine);
    }
    expect(errors).toContain('"msg":"auth_failed"');
    expect(errors).not.toContain(g.token);
  });

  it('systemctl stop: the job gets the stop signal once, heartbeats go on while it drains, the item ends stopped, the unit inactive within TimeoutStopSec=', async () => {
    const { g, id } = await holding({ env: { JOB_DRAIN_MS: '4000' } });
    const t0 = Date.now();
    const stop = await g.systemctl('stop', UNIT);
    const took = Date.now() - t0;
    expect(stop.code, stop.stderr).toBe(0);

    const job = await g.job(id);
    expect(job.signals.map((s) => s.name)).toEqual(['TERM']);
    expect(job.end?.how).toBe('drained');
    const drainFrom = job.signals[0]!.ms;
    const drainTo = job.end!.ms;
    expect(drainTo - drainFrom).toBeGreaterThanOrEqual(3900);
    // Heartbeats every ~2 s (granted ttl 6 s x 0.33): at least one lands inside a 4 s drain.
    const beats = (await g.events()).filter((e) => e.type === 'heartbeat_accepted' && e.work_id === id && e.t_ms > drainFrom && e.t_ms < drainTo);
    expect(beats.length).toBeGreaterThanOrEqual(1);
    expect((await g.item(id)).state).toBe('stopped');
    expect(await g.show('ActiveState', 'Result')).toEqual({ ActiveState: 'inactive', Result: 'success' });
    // The unit's TimeoutStopSec= is 20 s in the test drop-in; no timeout was involved.
    expect(took).toBeLessThan(20_000);
    expect(await g.journal('-u', UNIT, '-o', 'cat')).not.toMatch(/timed out|Killing process/i);
  });

  it('a drain longer than TimeoutStopSec= that makes progress is not cut off (EXTEND_TIMEOUT_USEC)', async () => {
    const { g, id } = await holding({ env: { JOB_DRAIN_MS: '6000' }, unit: ['TimeoutStopSec=3s'] });
    const t0 = Date.now();
    expect((await g.systemctl('stop', UNIT)).code).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(5500);
    const job = await g.job(id);
    expect(job.signals.map((s) => s.name)).toEqual(['TERM']);
    expect(job.end?.how).toBe('drained');
    expect((await g.item(id)).state).toBe('stopped');
    expect(await g.show('ActiveState', 'Result')).toEqual({ ActiveState: 'inactive', Result: 'success' });
  });

  it('systemctl reload re-reads QODER_PAT_FILE (README, "Rotating the token"): the old token revoked, leases and job carry on', async () => {
    // The README's drop-in: no credential, the keeper reads the file itself (owned by its user, mode 0600).
    const g = await boot({ unit: ['LoadCredential=', `Environment=QODER_PAT_FILE=/etc/lease-keeper/sys.pat`] });
    await g.sb.sh('chown lease-keeper: /etc/lease-keeper/sys.pat');
    expect((await g.systemctl('start', UNIT)).code).toBe(0);
    const [item] = await g.queue();
    const id = item!.id;
    await g.jobStarted(id);
    const { MainPID } = await g.show('MainPID');

    const next = `pt-system-ROTATED-${Date.now().toString(36)}`;
    await g.admin('POST', '/tokens', { accept: [next] });
    await g.sb.sh(
      'umask 077; cat > /etc/lease-keeper/sys.pat.new && chown lease-keeper: /etc/lease-keeper/sys.pat.new && mv /etc/lease-keeper/sys.pat.new /etc/lease-keeper/sys.pat',
      { input: `${next}\n` },
    );
    expect((await g.systemctl('reload', UNIT)).code).toBe(0);
    await g.until('the keeper rotated', async () => (await g.keeperLines()).some((l) => l.msg === 'token_rotated' && l.trigger === 'sighup'), 10_000);
    await g.admin('POST', '/tokens', { revoke: [g.token] });

    // Two more heartbeats (every ~2 s) with the new token: no 401, no lease lost, the job never signalled.
    const beats = (await g.item(id)).lease!.heartbeats;
    await g.until('two more heartbeats', async () => ((await g.item(id)).lease?.heartbeats ?? 0) >= beats + 2, 10_000);
    expect(await g.show('ActiveState', 'MainPID', 'NRestarts')).toEqual({ ActiveState: 'active', MainPID, NRestarts: '0' });
    expect((await g.job(id)).signals).toEqual([]);
    expect((await g.events()).filter((e) => e.type.endsWith('_rejected'))).toEqual([]);
    const journal = await g.journal('-o', 'export');
    expect(journal).not.toContain(next);
    expect(journal).not.toContain(g.token);
  });

  it('with LoadCredential= a reload on systemd 252 keeps the copy made at start (token_unchanged); a restart takes the new file', async () => {
    const { g, id } = await holding();
    const next = `pt-system-ROTATED-${Date.now().toString(36)}`;
    await g.admin('POST', '/tokens', { accept: [next] });
    await g.sb.write('/etc/lease-keeper/sys.pat', `${next}\n`, '0600');
    expect((await g.systemctl('reload', UNIT)).code).toBe(0);
    await g.until('the keeper re-read the credential', async () => (await g.keeperLines()).some((l) => l.msg === 'token_unchanged' && l.trigger === 'sighup'), 10_000);
    expect((await g.cat(`/run/credentials/${UNIT}/qoder-pat`))?.trim()).toBe(g.token);

    expect((await g.systemctl('restart', UNIT)).code).toBe(0);
    expect((await g.cat(`/run/credentials/${UNIT}/qoder-pat`))?.trim()).toBe(next);
    await g.admin('POST', '/tokens', { revoke: [g.token] });
    // The restarted keeper works with the new token: it claims a new item.
    const [second] = await g.queue();
    await g.jobStarted(second!.id);
    expect((await g.job(id)).signals.map((s) => s.name)).toEqual(['TERM']);
  });

  it('systemctl kill -s KILL the keeper: KillMode=mixed leaves no job process, Restart=on-failure brings it back and it claims the item again', async () => {
    // The unit's own RestartSec=5s: for that long nothing but systemd can kill what the keeper left (the
    // restarted keeper would sweep it). The daemon has left the job's group, so no parent-death signal reaches it.
    const { g, id } = await holding({ env: { JOB_DAEMON: '1' }, unit: ['RestartSec=5s'] });
    const first = await g.job(id);
    const daemon = Number((await g.cat(`${STATE_DIR}/${id}.daemon`))?.trim());
    expect(await g.running(daemon)).toBe(true);
    const { MainPID: oldPid } = await g.show('MainPID');
    expect((await g.systemctl('kill', '-s', 'KILL', '--kill-who=main', UNIT)).code).toBe(0);

    // The job and its daemon are SIGKILLed with the rest of the cgroup as soon as the keeper is gone.
    await g.until('the job and its daemon are gone', async () => !(await g.running(first.start!.pid)) && !(await g.running(daemon)), 3000, 50);
    expect((await g.show('NRestarts')).NRestarts).toBe('0');
    await g.until('the keeper is back', async () => {
      const s = await g.show('ActiveState', 'NRestarts', 'MainPID');
      return s.ActiveState === 'active' && s.NRestarts === '1' && s.MainPID !== oldPid && s.MainPID !== '0';
    }, 15_000);
    // The lease of the dead keeper expires (ttl 6 s), the item is queued again and the new keeper claims it.
    const again = await g.waitFor('the job runs again', async () => {
      const r = await g.job(id);
      return r.starts.length >= 2 ? r : undefined;
    }, 30_000);
    expect(again.starts[1]!.pid).not.toBe(first.start!.pid);
    // The first run got no signal to drain: it was killed outright with its keeper.
    expect(again.signals).toEqual([]);
  });

  it('a clean exit is not restarted (Restart=on-failure): systemctl kill -s TERM drains the job, the keeper exits 0, the unit stays inactive', async () => {
    const { g, id } = await holding({ env: { JOB_DRAIN_MS: '500' } });
    expect((await g.systemctl('kill', '-s', 'TERM', '--kill-who=main', UNIT)).code).toBe(0);
    await g.until('the keeper exited', async () => (await g.show('ActiveState')).ActiveState !== 'active', 15_000);
    // Three times RestartSec=1s: a restart would have happened by now.
    await new Promise((r) => setTimeout(r, 3000));
    expect(await g.show('ActiveState', 'Result', 'ExecMainStatus', 'NRestarts')).toEqual({
      ActiveState: 'inactive',
      Result: 'success',
      ExecMainStatus: '0',
      NRestarts: '0',
    });
    expect((await g.job(id)).signals.map((s) => s.name)).toEqual(['TERM']);
    expect((await g.item(id)).state).toBe('stopped');
  });

  it('a token the emulator rejects: the unit ends failed with status 77 and is not restarted', async () => {
    const g = await boot({ wrongToken: true });
    const start = await g.systemctl('start', UNIT);
    expect(start.code).not.toBe(0);
    await g.until('the unit failed', async () => (await g.show('ActiveState')).ActiveState === 'failed', 15_000);
    // Three times RestartSec=1s: a restart would have happened by now.
    await new Promise((r) => setTimeout(r, 3000));
    expect(await g.show('ActiveState', 'Result', 'ExecMainStatus', 'NRestarts')).toEqual({
      ActiveState: 'failed',
      Result: 'exit-code',
      ExecMainStatus: '77',
      NRestarts: '0',
    });
    expect(await g.journal('-u', UNIT, '-o', 'cat', '-p', 'err')).toMatch(/auth/i);
  });

  it('a bad configuration: the unit ends failed with status 78, the journal names the variable, not restarted', async () => {
    const g = await boot({ env: { LEASE_KEEPER_TTL_SECONDS: '5' } });
    const start = await g.systemctl('start', UNIT);
    expect(start.code).not.toBe(0);
    await g.until('the unit failed', async () => (await g.show('ActiveState')).ActiveState === 'failed', 15_000);
    await new Promise((r) => setTimeout(r, 3000));
    expect(await g.show('ActiveState', 'Result', 'ExecMainStatus', 'NRestarts')).toEqual({
      ActiveState: 'failed',
      Result: 'exit-code',
      ExecMainStatus: '78',
      NRestarts: '0',
    });
    expect(await g.journal('-u', UNIT, '-o', 'cat')).toContain('LEASE_KEEPER_TTL_SECONDS');
  });

  it('a keeper frozen with SIGSTOP is killed by WatchdogSec= and restarted; a healthy one is not', async () => {
    // TimeoutAbortSec: a stopped process cannot act on the watchdog's SIGABRT, so the SIGKILL comes after it.
    const { g, id } = await holding({ unit: ['WatchdogSec=4s', 'TimeoutAbortSec=2s'] });
    const first = await g.job(id);
    // Healthy for longer than WatchdogSec=: its pings (from systemd-notify children) are accepted.
    await new Promise((r) => setTimeout(r, 6000));
    const { MainPID: oldPid, NRestarts } = await g.show('MainPID', 'NRestarts');
    expect(NRestarts).toBe('0');
    await g.sb.sh(`kill -STOP ${oldPid}`);
    await g.until('the keeper is back', async () => {
      const s = await g.show('ActiveState', 'NRestarts', 'MainPID');
      return s.ActiveState === 'active' && s.NRestarts === '1' && s.MainPID !== oldPid;
    }, 20_000);
    expect(await g.journal('-u', UNIT, '-o', 'cat')).toMatch(/Watchdog timeout/);
    expect(await g.running(first.start!.pid)).toBe(false);
    await g.waitFor('the job runs again', async () => ((await g.job(id)).starts.length >= 2 ? true : undefined), 30_000);
  });
});

