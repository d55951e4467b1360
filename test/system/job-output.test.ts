/**
 * Per-job output under a real systemd 252 and its journald (the shipped template unit, LEASE_KEEPER_JOB_OUTPUT
 * left at `auto`): the keeper's stdout is journald's, so each job gets its own two journal streams, and
 * `journalctl -u <unit> -t lease-keeper-job-<work id>` shows that job's lines and nothing else.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { prerequisite } from '../support/prerequisites.js';
import { KeeperGuest, UNIT } from './guest.js';
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

interface Entry {
  MESSAGE: string;
  PRIORITY: string;
  SYSLOG_IDENTIFIER: string;
  _SYSTEMD_UNIT: string;
}

describe.runIf(prerequisite('root, unshare and systemd for a sandboxed systemd', sandboxMissing()))(`${UNIT}: job output`, () => {
  it('auto picks journal: journalctl -u <unit> -t lease-keeper-job-<work id> shows one job, stdout at info, stderr at err', async () => {
    const g = (guest = await KeeperGuest.boot({ env: { LEASE_KEEPER_CONCURRENCY: '2' } }));
    const start = await g.systemctl('start', UNIT);
    expect(start.code, start.stderr).toBe(0);
    const items = await g.queue(2);
    for (const item of items) await g.jobStarted(item.id);

    const starting = (await g.keeperLines()).find((l) => l.msg === 'starting');
    expect(starting?.job_output).toBe('journal');

    for (const item of items) {
      const identifier = `lease-keeper-job-${item.id}`;
      const entries = await g.waitFor(`${identifier} in the journal`, async () => {
        const out = await g.journal('-u', UNIT, '-t', identifier, '-o', 'json');
        const list = out
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as Entry);
        return list.length >= 2 ? list : undefined;
      });
      expect(entries.map((e) => [e.MESSAGE, e.PRIORITY]).sort()).toEqual([
        [`job-stderr ${item.id}`, '3'],
        [`job-stdout ${item.id}`, '6'],
      ]);
      for (const e of entries) {
        expect(e.SYSLOG_IDENTIFIER).toBe(identifier);
        expect(e._SYSTEMD_UNIT).toBe(UNIT);
      }
    }
    // The keeper's own identifier carries none of the jobs' lines.
    const keeperOwn = await g.journal('-u', UNIT, '-t', 'lease-keeper-sys', '-o', 'cat');
    expect(keeperOwn).toContain('"msg":"job_started"');
    expect(keeperOwn).not.toContain('job-stdout');
  });
});
