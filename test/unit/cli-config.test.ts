import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { configCommand } from '../../src/cli/config.js';
import type { CliIO } from '../../src/cli/io.js';
import { Command, CommanderError } from 'commander';
import { addConfigOptions } from '../../src/config/index.js';

const TOKEN = 'pt-SECRET-abc123';

function sink(): Writable & { text: () => string } {
  const chunks: string[] = [];
  const w = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  return Object.assign(w, { text: () => chunks.join('') });
}

function io(env: NodeJS.ProcessEnv) {
  const stdout = sink();
  const stderr = sink();
  const cli: CliIO = { stdout, stderr, env };
  return { cli, out: () => stdout.text(), err: () => stderr.text() };
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lk-cli-config-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function tokenFile(mode: number): string {
  const path = join(dir, 'pat');
  writeFileSync(path, `${TOKEN}\n`);
  chmodSync(path, mode);
  return path;
}

describe('lease-keeper config', () => {
  it('prints the resolved configuration with the token redacted, exit 0', async () => {
    const t = io({ QODER_PAT: TOKEN, QODER_ENVIRONMENT_ID: 'env_abc', LEASE_KEEPER_TTL_SECONDS: '30' });
    expect(await configCommand({ concurrency: '3' }, t.cli)).toBe(0);
    expect(t.err()).toBe('');
    const printed = JSON.parse(t.out()) as Record<string, unknown>;
    expect(printed).toMatchObject({
      apiUrl: 'https://api.qoder.com',
      token: '[REDACTED]',
      tokenSource: 'QODER_PAT',
      environmentId: 'env_abc',
      ttlSeconds: 30,
      concurrency: 3,
    });
    expect(t.out()).toMatch(/^\{\n {2}"apiUrl"/); // pretty JSON
    expect(t.out() + t.err()).not.toContain(TOKEN);
  });

  it('lists every problem on stderr and exits 78, without the token', async () => {
    const t = io({ QODER_PAT: TOKEN, QODER_PAT_FILE: tokenFile(0o600), LEASE_KEEPER_TTL_SECONDS: '5', QODER_ENVIRONMENT_ID: TOKEN });
    expect(await configCommand({}, t.cli)).toBe(78);
    expect(t.out()).toBe('');
    expect(t.err()).toMatch(/^lease-keeper: 3 configuration problems:\n/);
    expect(t.err()).toContain('  - QODER_PAT and QODER_PAT_FILE (--pat-file): 2 token sources are set');
    expect(t.err()).toContain('  - LEASE_KEEPER_TTL_SECONDS (--ttl-seconds) = "5": must be an integer from 10 to 600');
    expect(t.err()).toContain('  - QODER_ENVIRONMENT_ID (--environment-id) = "[REDACTED]"');
    expect(t.err()).toMatch(/Nothing was sent to the control plane\. See `lease-keeper run --help`\.\n$/);
    expect(t.out() + t.err()).not.toContain(TOKEN);
  });

  it('refuses a token file readable by others and accepts it after chmod 600', async () => {
    const path = tokenFile(0o644);
    const bad = io({ QODER_PAT_FILE: path, QODER_ENVIRONMENT_ID: 'env_abc' });
    expect(await configCommand({}, bad.cli)).toBe(78);
    expect(bad.err()).toContain(`chmod 600 ${path}`);
    expect(bad.err()).not.toContain(TOKEN);

    chmodSync(path, 0o600);
    const good = io({ QODER_PAT_FILE: path, QODER_ENVIRONMENT_ID: 'env_abc' });
    expect(await configCommand({}, good.cli)).toBe(0);
    expect(JSON.parse(good.out())).toMatchObject({ tokenSource: 'QODER_PAT_FILE', token: '[REDACTED]' });
    expect(good.out()).not.toContain(TOKEN);
  });
});

/**
 * The `config` subcommand wired as src/cli/main.ts wires it (addConfigOptions, then configCommand with
 * commander's options), without main() itself so that this file tests only the config code.
 */
async function main(argv: string[], cli: CliIO): Promise<number> {
  let result: Promise<number> = Promise.resolve(0);
  const program = new Command('lease-keeper')
    .configureOutput({ writeOut: (s) => cli.stdout.write(s), writeErr: (s) => cli.stderr.write(s) })
    .exitOverride();
  addConfigOptions(program.command('config')).action((flags: Record<string, unknown>) => {
    result = configCommand(flags, cli);
  });
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 78;
    throw err;
  }
  return result;
}

describe('lease-keeper config through commander', () => {
  it('applies flags over the environment', async () => {
    const t = io({ QODER_PAT: TOKEN, QODER_ENVIRONMENT_ID: 'env_abc', LEASE_KEEPER_LOG_LEVEL: 'debug' });
    const code = await main(['node', 'lease-keeper', 'config', '--log-level', 'warn', '--once', '--status-addr', '[::1]:9100'], t.cli);
    expect(code).toBe(0);
    expect(JSON.parse(t.out())).toMatchObject({ logLevel: 'warn', once: true, statusAddr: { host: '::1', port: 9100 } });
    expect(t.out() + t.err()).not.toContain(TOKEN);
  });

  it('exits 78 on a bad flag', async () => {
    const t = io({ QODER_PAT: TOKEN, QODER_ENVIRONMENT_ID: 'env_abc' });
    expect(await main(['node', 'lease-keeper', 'config', '--ttl-seconds', '5'], t.cli)).toBe(78);
    expect(t.err()).toContain('LEASE_KEEPER_TTL_SECONDS (--ttl-seconds) = "5": must be an integer from 10 to 600');
  });

  it('has no --token flag: commander refuses it (exit 78) and the value is not echoed', async () => {
    const t = io({ QODER_ENVIRONMENT_ID: 'env_abc' });
    expect(await main(['node', 'lease-keeper', 'config', `--token=${TOKEN}`], t.cli)).toBe(78);
    expect(t.err()).toMatch(/unknown option/);
    expect(t.out()).toBe('');
  });

  it('documents every variable in --help', async () => {
    const t = io({});
    expect(await main(['node', 'lease-keeper', 'config', '--help'], t.cli)).toBe(0);
    const help = t.out().replace(/\s+/g, ' ');
    for (const v of ['QODER_API_URL', 'QODER_PAT_FILE', 'QODER_ENVIRONMENT_ID', 'LEASE_KEEPER_TTL_SECONDS', 'LEASE_KEEPER_FENCE_MARGIN_MS']) {
      expect(help).toContain(`env ${v}`);
    }
    expect(help).toContain('world-readable in /proc');
  });
});
