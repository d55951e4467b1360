/**
 * The job's environment (src/worker/job-env.ts, spec §3): the keeper's own variables pass, the token's
 * sources and systemd's notify channel never do, nor any variable holding a token the keeper has held;
 * the work ids and the item as JSON are added and win over inherited values of the same name.
 */
import { describe, expect, it } from 'vitest';
import type { WorkItem } from '../../src/api/types.js';
import { jobEnvironment } from '../../src/worker/job-env.js';
import { wireItem } from '../support/wire.js';

const item = wireItem({ id: 'work_env1', environment_id: 'env_env1', data: { type: 'session', id: 'sess_env1' }, state: 'starting' }) as unknown as WorkItem;
const TOKEN = 'pt-env-test-token-0123456789';

describe('jobEnvironment', () => {
  it('withholds every token source and every systemd notify variable, one by one', () => {
    for (const name of ['QODER_PAT', 'QODER_PAT_FILE', 'CREDENTIALS_DIRECTORY', 'NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID']) {
      const env = jobEnvironment({ PATH: '/usr/bin', [name]: 'harmless-value' }, item, [TOKEN]);
      expect(Object.keys(env), name).not.toContain(name);
      expect(env.PATH).toBe('/usr/bin');
    }
  });

  it('passes the rest unchanged, leaves out unset (undefined) variables, adds the work ids and the item', () => {
    const env = jobEnvironment({ PATH: '/usr/bin', HOME: '/home/keeper', EMPTY: '', UNSET: undefined }, item, [TOKEN]);
    expect(env).toEqual({
      PATH: '/usr/bin',
      HOME: '/home/keeper',
      EMPTY: '',
      LEASE_KEEPER_WORK_ID: 'work_env1',
      LEASE_KEEPER_ENVIRONMENT_ID: 'env_env1',
      LEASE_KEEPER_SESSION_ID: 'sess_env1',
      LEASE_KEEPER_WORK: JSON.stringify(item),
    });
    expect(Object.keys(env)).not.toContain('UNSET');
    expect(JSON.parse(env.LEASE_KEEPER_WORK!)).toEqual(item);
  });

  it('drops any variable that holds a token anywhere in its value, for every token held', () => {
    const OLD = 'pt-env-old-token-aaaaaaaaaaaa';
    const env = jobEnvironment({ A: `Bearer ${TOKEN}`, B: `x${OLD}x`, C: 'pt-env', D: TOKEN.slice(0, -1) }, item, [OLD, TOKEN]);
    expect(Object.keys(env)).not.toContain('A');
    expect(Object.keys(env)).not.toContain('B');
    // Parts of a token are not the token.
    expect(env.C).toBe('pt-env');
    expect(env.D).toBe(TOKEN.slice(0, -1));
  });

  it('an empty token (none configured yet) withholds nothing else: every string contains ""', () => {
    const env = jobEnvironment({ PATH: '/usr/bin', HOME: '/root' }, item, ['']);
    expect(env.PATH).toBe('/usr/bin');
    expect(env.HOME).toBe('/root');
  });

  it('the keeper sets the LEASE_KEEPER_* work variables: inherited values of those names are replaced', () => {
    const env = jobEnvironment({ LEASE_KEEPER_WORK_ID: 'stale', LEASE_KEEPER_SESSION_ID: 'stale', LEASE_KEEPER_ENVIRONMENT_ID: 'stale', LEASE_KEEPER_WORK: '{}' }, item, []);
    expect(env.LEASE_KEEPER_WORK_ID).toBe('work_env1');
    expect(env.LEASE_KEEPER_SESSION_ID).toBe('sess_env1');
    expect(env.LEASE_KEEPER_ENVIRONMENT_ID).toBe('env_env1');
    expect(env.LEASE_KEEPER_WORK).toBe(JSON.stringify(item));
  });
});
