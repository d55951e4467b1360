import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, readSecretFileFromDisk, type ConfigSystem, type LoadConfigResult } from '../../src/config/index.js';

/** A recognisable token: every problem is searched for it. */
const TOKEN = 'pt-SECRET-abc123';
const FAKE_HOST: Partial<ConfigSystem> = { hostname: () => 'host1', machineId: () => null };

type Env = Record<string, string | undefined>;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lk-token-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A real file with an explicit mode (the umask must not decide the test). */
function file(name: string, text: string, mode = 0o600): string {
  const path = join(dir, name);
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
}

function load(env: Env, flags: Record<string, unknown> = {}, system: Partial<ConfigSystem> = {}): LoadConfigResult {
  return loadConfig({ env: { QODER_ENVIRONMENT_ID: 'env_abc', ...env }, flags, requireCommand: false, system: { ...FAKE_HOST, ...system } });
}

function ok(env: Env, flags: Record<string, unknown> = {}) {
  const r = load(env, flags);
  if (!r.ok) throw new Error(r.problems.join('\n'));
  return r.config;
}

function problems(env: Env, flags: Record<string, unknown> = {}, system: Partial<ConfigSystem> = {}): string[] {
  const r = load(env, flags, system);
  if (r.ok) throw new Error('expected problems');
  for (const p of r.problems) expect(p).not.toContain(TOKEN); // never, in any problem
  return r.problems;
}

describe('token sources', () => {
  it('takes QODER_PAT', () => {
    expect(ok({ QODER_PAT: TOKEN })).toMatchObject({ token: TOKEN, tokenSource: 'QODER_PAT' });
  });

  it('takes a 0600 QODER_PAT_FILE and trims its trailing newline', () => {
    const path = file('pat', `${TOKEN}\n`);
    expect(ok({ QODER_PAT_FILE: path })).toMatchObject({ token: TOKEN, tokenSource: 'QODER_PAT_FILE' });
    expect(ok({}, { patFile: file('pat-crlf', `${TOKEN}\r\n`, 0o400) })).toMatchObject({ token: TOKEN });
  });

  it('lets --pat-file replace QODER_PAT_FILE (one source, not two)', () => {
    const good = file('good', TOKEN);
    expect(ok({ QODER_PAT_FILE: join(dir, 'missing') }, { patFile: good })).toMatchObject({ token: TOKEN, tokenSource: 'QODER_PAT_FILE' });
  });

  it('takes the systemd credential qoder-pat when it exists', () => {
    file('creds/qoder-pat', TOKEN, 0o400);
    expect(ok({ CREDENTIALS_DIRECTORY: join(dir, 'creds') })).toMatchObject({ token: TOKEN, tokenSource: 'CREDENTIALS_DIRECTORY' });
  });

  it('ignores a credentials directory without qoder-pat', () => {
    mkdirSync(join(dir, 'creds'));
    expect(ok({ QODER_PAT: TOKEN, CREDENTIALS_DIRECTORY: join(dir, 'creds') })).toMatchObject({ tokenSource: 'QODER_PAT' });
  });

  it('needs one source', () => {
    const [p, ...rest] = problems({ CREDENTIALS_DIRECTORY: join(dir, 'nothing-here') });
    expect(rest).toEqual([]);
    expect(p).toMatch(/^QODER_PAT: no token: set exactly one of QODER_PAT, QODER_PAT_FILE \(--pat-file\), or the systemd credential qoder-pat/);
  });

  it('refuses two sources and names both', () => {
    const path = file('pat', TOKEN);
    const list = problems({ QODER_PAT: TOKEN, QODER_PAT_FILE: path });
    expect(list).toHaveLength(1);
    expect(list[0]).toMatch(/^QODER_PAT and QODER_PAT_FILE \(--pat-file\): 2 token sources are set/);

    file('creds/qoder-pat', TOKEN);
    const [p] = problems({ CREDENTIALS_DIRECTORY: join(dir, 'creds') }, { patFile: path });
    expect(p).toMatch(/^QODER_PAT_FILE \(--pat-file\) and \$CREDENTIALS_DIRECTORY\/qoder-pat: 2 token sources/);

    const [all] = problems({ QODER_PAT: TOKEN, QODER_PAT_FILE: path, CREDENTIALS_DIRECTORY: join(dir, 'creds') });
    expect(all).toMatch(/^QODER_PAT and QODER_PAT_FILE \(--pat-file\) and \$CREDENTIALS_DIRECTORY\/qoder-pat: 3 token sources/);
  });
});

describe('token files', () => {
  it.each([0o644, 0o640, 0o604, 0o620, 0o660])('refuses mode %o and says chmod 600', (mode) => {
    const path = file('pat', `${TOKEN}\n`, mode);
    const list = problems({ QODER_PAT_FILE: path });
    expect(list).toEqual([
      `QODER_PAT_FILE (--pat-file) = "${path}": the token file is accessible to group or others ` +
        `(mode 0${mode.toString(8)}); it must be readable by its owner only: chmod 600 ${path}`,
    ]);
  });

  it('applies the same rule to the credential file', () => {
    file('creds/qoder-pat', TOKEN, 0o644);
    const [p] = problems({ CREDENTIALS_DIRECTORY: join(dir, 'creds') });
    expect(p).toMatch(/^\$CREDENTIALS_DIRECTORY\/qoder-pat = ".*\/creds\/qoder-pat": .*mode 0644.*chmod 600/);
  });

  it('reports a missing file', () => {
    const path = join(dir, 'nope');
    expect(problems({ QODER_PAT_FILE: path })).toEqual([
      `QODER_PAT_FILE (--pat-file) = "${path}": cannot open it: no such file; it must be a readable file holding the token`,
    ]);
  });

  it('reports a directory', () => {
    expect(problems({ QODER_PAT_FILE: dir })[0]).toContain('not a regular file');
  });

  it('reports an unreadable file (EACCES, faked: the tests may run as root)', () => {
    const [p] = problems({ QODER_PAT_FILE: '/secret/pat' }, {}, { readSecretFile: () => ({ ok: false, reason: 'cannot open it: permission denied' }) });
    expect(p).toBe('QODER_PAT_FILE (--pat-file) = "/secret/pat": cannot open it: permission denied; it must be a readable file holding the token');
  });

  it('reports an empty file, or one holding only a newline', () => {
    for (const text of ['', '\n', '  \n']) {
      const path = file('pat', text);
      expect(problems({ QODER_PAT_FILE: path })).toEqual([
        `QODER_PAT_FILE (--pat-file) = "${path}": the token in the file is empty; write the token into it`,
      ]);
    }
  });

  it('refuses a token with whitespace or control characters inside', () => {
    for (const text of [`${TOKEN} extra\n`, `${TOKEN}\n${TOKEN}\n`, `pt-\x01${TOKEN}`, `${TOKEN}\tx`, `${TOKEN}é`]) {
      const path = file('pat', text);
      const [p] = problems({ QODER_PAT_FILE: path });
      expect(p).toBe(
        `QODER_PAT_FILE (--pat-file) = "${path}": the token in the file contains whitespace, control or non-ASCII characters; it must be the token alone, on one line`,
      );
    }
    expect(problems({ QODER_PAT: `${TOKEN} ${TOKEN}` })).toEqual([
      'QODER_PAT: the token contains whitespace, control or non-ASCII characters; it must be the token alone, on one line',
    ]);
  });

  it('refuses a file too large to be a token', () => {
    const path = file('big', 'x'.repeat(70 * 1024));
    expect(problems({ QODER_PAT_FILE: path })[0]).toContain('larger than 64 KiB');
  });

  it('reads the mode and text of a real file', () => {
    const path = file('pat', TOKEN, 0o600);
    expect(readSecretFileFromDisk(path)).toEqual({ ok: true, mode: 0o600, text: TOKEN });
  });
});

describe('the token never appears in a problem', () => {
  it('is scrubbed even where a variable would echo it', () => {
    const list = problems({
      QODER_PAT: TOKEN,
      QODER_ENVIRONMENT_ID: TOKEN,
      LEASE_KEEPER_WORKER_ID: `${TOKEN} x`,
      LEASE_KEEPER_LOG_LEVEL: TOKEN,
      QODER_API_URL: `https://${TOKEN}@api.qoder.com`,
    });
    expect(list).toHaveLength(4);
    expect(list.join('\n')).toContain('[REDACTED]');
  });

  it('is scrubbed when the file holding it is refused', () => {
    const path = file('pat', `${TOKEN}\n`, 0o644);
    const list = problems({ QODER_PAT_FILE: path, LEASE_KEEPER_STATUS_ADDR: TOKEN, QODER_ENVIRONMENT_ID: `env_${TOKEN}!` });
    expect(list).toHaveLength(3);
  });
});
