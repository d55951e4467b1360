/**
 * Containment under a real systemd 252 (the shipped template unit, Delegate=yes): the keeper moves itself
 * into <unit cgroup>/keeper before READY=1, each job runs in a sibling cgroup named after its work id, and a
 * daemon the job leaves behind (setsid) is dead before the item is reported stopped.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { prerequisite } from '../support/prerequisites.js';
import { KeeperGuest, STATE_DIR, UNIT } from './guest.js';
import { leftovers, sandboxMissing } from './sandbox.js';

let guest: KeeperGuest | null = null;
const before = leftovers();

afterEach(async () => {
  const g = guest;
  guest = null;
  await g?.stop();
});

afterAll(() => {
  expect(leftovers().filter((x) => !before.includes(x))).toEqual([]);
});

describe.runIf(prerequisite('root, unshare and systemd for a sandboxed systemd', sandboxMissing()))(`${UNIT}: job containment`, () => {
  it('the keeper sits in <unit>/keeper, the job in <unit>/job-<work id>-…, and the job\'s setsid daemon dies before the item is reported', async () => {
    const g = (guest = await KeeperGuest.boot({ env: { JOB_DAEMON: '1', LEASE_KEEPER_STOP_GRACE_SECONDS: '1' } }));
    const start = await g.systemctl('start', UNIT);
    expect(start.code, start.stderr).toBe(0);
    const [item] = await g.queue();
    const id = item!.id;
    await g.jobStarted(id);

    const lines = await g.keeperLines();
    const starting = lines.find((l) => l.msg === 'starting');
    expect(starting, JSON.stringify(lines.slice(0, 5))).toMatchObject({ containment: 'cgroup' });
    const unitCgroup = String(starting!.cgroup_parent);
    expect(unitCgroup).toMatch(/lease-keeper@sys\.service$/);

    const mainPid = (await g.show('MainPID')).MainPID!;
    expect(await g.cat(`/proc/${mainPid}/cgroup`)).toMatch(/^0::.*\/lease-keeper@sys\.service\/keeper$/m);
    const jobCgroup = (await g.cat(`${STATE_DIR}/${id}.cgroup`)) ?? '';
    expect(jobCgroup).toMatch(new RegExp(`^0::.*/lease-keeper@sys\\.service/job-${id}-k\\d+-\\d+-1$`, 'm'));
    const cgls = await g.sb.exec(['systemd-cgls', '--no-pager', '-u', UNIT]);
    expect(cgls.stdout).toContain(`job-${id}-`);

    const daemon = Number((await g.cat(`${STATE_DIR}/${id}.daemon`))?.trim());
    expect(await g.running(daemon)).toBe(true);
    // A graceful stop from the server: the job drains and exits 0, its daemon (sleep, default SIGTERM) goes too.
    await g.admin('POST', `/items/${id}/stop`, {});
    await g.until('the item is stopped', async () => (await g.item(id)).state === 'stopped', 30_000);
    expect(await g.running(daemon)).toBe(false);
    // The job's cgroup is removed once empty.
    await g.until('the job cgroup is removed', async () => !(await g.sb.exec(['systemd-cgls', '--no-pager', '-u', UNIT])).stdout.includes(`job-${id}-`), 5_000);
  });
});
