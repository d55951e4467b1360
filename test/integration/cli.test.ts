/** The real binary's commands outside the daemon loop: config, help, version, usage errors. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { suiteEnv } from '../support/processes.js';
import { BIN } from './support.js';

const TOKEN = 'pt-cli-SECRET-0123456789';

function cli(args: string[], env: Record<string, string> = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH!, ...suiteEnv(), ...env }, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('lease-keeper config', () => {
  it('prints the resolved configuration with the token redacted', () => {
    const r = cli(['config'], { QODER_PAT: TOKEN, QODER_ENVIRONMENT_ID: 'env_abc', LEASE_KEEPER_CONCURRENCY: '4' });
    expect(r.code).toBe(0);
    const cfg = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(cfg).toMatchObject({ token: '[REDACTED]', environmentId: 'env_abc', concurrency: 4, ttlSeconds: 60, apiUrl: 'https://api.qoder.com' });
    expect(r.stdout + r.stderr).not.toContain(TOKEN);
  });

  it('with a broken environment lists every problem and exits 78', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lk-cli-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const patFile = join(dir, 'pat');
    writeFileSync(patFile, TOKEN, { mode: 0o644 });
    const r = cli(['config', '--concurrency', 'lots'], {
      QODER_API_URL: 'http://api.example.com',
      QODER_PAT: TOKEN,
      QODER_PAT_FILE: patFile,
      QODER_ENVIRONMENT_ID: 'prod',
      LEASE_KEEPER_TTL_SECONDS: '5',
      LEASE_KEEPER_HEARTBEAT_FRACTION: '0.9',
      LEASE_KEEPER_STOP_SIGNAL: 'SIGFOO',
      LEASE_KEEPER_ON_SHUTDOWN: 'later',
      LEASE_KEEPER_STATUS_ADDR: 'nowhere',
      LEASE_KEEPER_LOG_LEVEL: 'loud',
    });
    expect(r.code).toBe(78);
    for (const name of [
      'QODER_API_URL',
      'QODER_PAT',
      'QODER_ENVIRONMENT_ID',
      'LEASE_KEEPER_TTL_SECONDS',
      'LEASE_KEEPER_HEARTBEAT_FRACTION',
      'LEASE_KEEPER_STOP_SIGNAL',
      'LEASE_KEEPER_CONCURRENCY (--concurrency)',
      'LEASE_KEEPER_ON_SHUTDOWN',
      'LEASE_KEEPER_STATUS_ADDR',
      'LEASE_KEEPER_LOG_LEVEL',
    ]) {
      expect(r.stderr, name).toContain(name);
    }
    expect(r.stderr).toMatch(/\d+ configuration problems/);
    expect(r.stdout + r.stderr).not.toContain(TOKEN);
  });
});

describe('lease-keeper usage', () => {
  it('--help and --version exit 0; an unknown command or option exits 78 with help', () => {
    expect(cli(['--help']).code).toBe(0);
    const v = cli(['--version']);
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    const bad = cli(['frobnicate']);
    expect(bad.code).toBe(78);
    expect(bad.stderr).toMatch(/unknown command/);
    const badOpt = cli(['run', '--bogus', '--', 'true']);
    expect(badOpt.code).toBe(78);
    expect(badOpt.stderr).toMatch(/unknown option/);
  });

  it('run without a job command says how to give one and exits 78', () => {
    const r = cli(['run'], { QODER_PAT: TOKEN, QODER_ENVIRONMENT_ID: 'env_abc' });
    expect(r.code).toBe(78);
    expect(r.stderr).toContain('lease-keeper run [options] -- <command>');
  });
});
