import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  addConfigOptions,
  formatProblems,
  loadConfig,
  NO_COMMAND_PROBLEM,
  readMachineId,
  redactConfig,
  SETTINGS,
  type Config,
  type ConfigSystem,
  type LoadConfigResult,
} from '../../src/config/index.js';

/** A recognisable token: every output of the config and logger tests is searched for it. */
const TOKEN = 'pt-SECRET-abc123';

/** A fixed host for the default worker id; token files stay real (temp files). */
const FAKE_HOST: Partial<ConfigSystem> = { hostname: () => 'host1', machineId: () => '0123456789abcdef0123' };

/** The smallest valid environment. */
const VALID_ENV = { QODER_PAT: TOKEN, QODER_ENVIRONMENT_ID: 'env_abc' } as const;

/** A temp directory, removed by `cleanup()`. */
function tempDir(): { dir: string; file: (name: string, text: string, mode?: number) => string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'lk-config-'));
  return {
    dir,
    file(name, text, mode = 0o600) {
      const path = join(dir, name);
      mkdirSync(join(path, '..'), { recursive: true });
      writeFileSync(path, text);
      chmodSync(path, mode); // explicit: the umask must not decide the test
      return path;
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

type Env = Record<string, string | undefined>;

function load(env: Env, flags: Record<string, unknown> = {}, extra: { command?: string[]; requireCommand?: boolean } = {}): LoadConfigResult {
  return loadConfig({ env, flags, command: extra.command, requireCommand: extra.requireCommand ?? false, system: FAKE_HOST });
}

function config(env: Env, flags: Record<string, unknown> = {}): Config {
  const r = load(env, flags);
  if (!r.ok) throw new Error(`expected a valid config, got:\n${r.problems.join('\n')}`);
  return r.config;
}

function problems(env: Env, flags: Record<string, unknown> = {}, extra: { command?: string[]; requireCommand?: boolean } = {}): string[] {
  const r = load(env, flags, extra);
  if (r.ok) throw new Error('expected problems, got a valid config');
  return r.problems;
}

describe('loadConfig: defaults', () => {
  it('fills every default from a minimal environment', () => {
    expect(config(VALID_ENV)).toEqual({
      apiUrl: 'https://api.qoder.com',
      token: TOKEN,
      tokenSource: 'QODER_PAT',
      tokenPath: null,
      environmentId: 'env_abc',
      workerId: 'host1-0123456789ab',
      ttlSeconds: 60,
      heartbeatFraction: 0.33,
      stopSignal: 'SIGTERM',
      stopGraceSeconds: 10,
      concurrency: 1,
      once: false,
      shutdown: 'drain',
      onShutdown: 'stop',
      statusAddr: null,
      logLevel: 'info',
      logFormat: 'json',
      fenceMarginMs: null,
      containment: 'auto',
      jobLimits: {},
      jobOomScoreAdj: 500,
      jobOutput: 'auto',
      command: [],
    } satisfies Config);
  });

  it('uses the host name alone as worker id when there is no machine id', () => {
    const r = loadConfig({ env: VALID_ENV, flags: {}, requireCommand: false, system: { hostname: () => 'box', machineId: () => null } });
    expect(r.ok && r.config.workerId).toBe('box');
  });

  it('makes a valid default worker id from an odd host name', () => {
    const r = loadConfig({ env: VALID_ENV, flags: {}, requireCommand: false, system: { hostname: () => 'my box/é', machineId: () => 'abc' } });
    expect(r.ok && r.config.workerId).toBe('my-box---abc');
  });

  it('counts empty-string variables as unset', () => {
    const env: Env = { ...VALID_ENV };
    for (const s of Object.values(SETTINGS)) if (s.env !== 'QODER_ENVIRONMENT_ID') env[s.env] = '';
    env.CREDENTIALS_DIRECTORY = '';
    expect(config(env)).toEqual(config(VALID_ENV));
    expect(problems({ QODER_PAT: '', QODER_ENVIRONMENT_ID: '' })).toEqual([
      expect.stringMatching(/^QODER_PAT: no token/),
      expect.stringMatching(/^QODER_ENVIRONMENT_ID \(--environment-id\): required/),
    ]);
  });

  it('copies the command', () => {
    const r = load(VALID_ENV, {}, { command: ['sleep', '5'], requireCommand: true });
    expect(r.ok && r.config.command).toEqual(['sleep', '5']);
  });
});

describe('loadConfig: machine id', () => {
  let t: ReturnType<typeof tempDir>;
  beforeEach(() => (t = tempDir()));
  afterEach(() => t.cleanup());

  it('reads the first non-empty machine-id file', () => {
    const a = t.file('etc-machine-id', '\n');
    const b = t.file('dbus-machine-id', 'fedcba9876543210\n');
    expect(readMachineId([`${t.dir}/missing`, a, b])).toBe('fedcba9876543210');
    expect(readMachineId([`${t.dir}/missing`])).toBeNull();
  });
});

describe('loadConfig: one pass reports everything', () => {
  it('lists every problem of a thoroughly broken environment at once', () => {
    const env: Env = {
      QODER_API_URL: 'http://api.qoder.com',
      QODER_ENVIRONMENT_ID: 'prod',
      LEASE_KEEPER_WORKER_ID: 'has space',
      LEASE_KEEPER_TTL_SECONDS: '5',
      LEASE_KEEPER_HEARTBEAT_FRACTION: '0.9',
      LEASE_KEEPER_STOP_SIGNAL: 'SIGSEGV',
      LEASE_KEEPER_STOP_GRACE_SECONDS: '-1',
      LEASE_KEEPER_CONCURRENCY: '0',
      LEASE_KEEPER_ONCE: 'maybe',
      LEASE_KEEPER_SHUTDOWN: 'wait',
      LEASE_KEEPER_ON_SHUTDOWN: 'abandon',
      LEASE_KEEPER_STATUS_ADDR: '9100',
      LEASE_KEEPER_LOG_LEVEL: 'verbose',
      LEASE_KEEPER_LOG_FORMAT: 'xml',
      LEASE_KEEPER_FENCE_MARGIN_MS: '10',
    };
    const list = problems(env, {}, { requireCommand: true });
    const starts = [
      'QODER_API_URL (--api-url) = "http://api.qoder.com": http:// is only allowed for loopback hosts',
      'QODER_PAT: no token',
      'QODER_ENVIRONMENT_ID (--environment-id) = "prod": must be env_',
      'LEASE_KEEPER_WORKER_ID (--worker-id) = "has space": must be 1 to 128 of',
      'LEASE_KEEPER_TTL_SECONDS (--ttl-seconds) = "5": must be an integer from 10 to 600',
      'LEASE_KEEPER_HEARTBEAT_FRACTION (--heartbeat-fraction) = "0.9": must be a number from 0.05 to 0.5',
      'LEASE_KEEPER_STOP_SIGNAL (--stop-signal) = "SIGSEGV": must be one of: SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGKILL',
      'LEASE_KEEPER_STOP_GRACE_SECONDS (--stop-grace-seconds) = "-1": must be a number from 0 to 3600',
      'LEASE_KEEPER_CONCURRENCY (--concurrency) = "0": must be an integer from 1 to 10000',
      'LEASE_KEEPER_ONCE (--once) = "maybe": must be one of: true, false, 1, 0, yes, no',
      'LEASE_KEEPER_SHUTDOWN (--shutdown) = "wait": must be one of: drain, finish',
      'LEASE_KEEPER_ON_SHUTDOWN (--on-shutdown) = "abandon": must be one of: stop, release',
      'LEASE_KEEPER_STATUS_ADDR (--status-addr) = "9100": must be host:port',
      'LEASE_KEEPER_LOG_LEVEL (--log-level) = "verbose": must be one of: fatal, error, warn, info, debug, trace, silent',
      'LEASE_KEEPER_LOG_FORMAT (--log-format) = "xml": must be one of: json, pretty',
      'LEASE_KEEPER_FENCE_MARGIN_MS (--fence-margin-ms) = "10": must be an integer from 50 to 60000',
      NO_COMMAND_PROBLEM,
    ];
    expect(list).toHaveLength(17);
    starts.forEach((start, i) => expect(list[i]!.startsWith(start), `${list[i]} should start with ${start}`).toBe(true));
  });

  it('asks for a job command only when requireCommand is set', () => {
    expect(problems(VALID_ENV, {}, { requireCommand: true })).toEqual([
      'no job command: use lease-keeper run [options] -- <command> [args...]',
    ]);
    expect(load(VALID_ENV, {}, { requireCommand: false }).ok).toBe(true);
  });
});

describe('loadConfig: flags win over the environment', () => {
  const env: Env = {
    ...VALID_ENV,
    QODER_API_URL: 'https://env.example.com',
    QODER_ENVIRONMENT_ID: 'env_fromenv',
    LEASE_KEEPER_WORKER_ID: 'env-worker',
    LEASE_KEEPER_TTL_SECONDS: '30',
    LEASE_KEEPER_HEARTBEAT_FRACTION: '0.2',
    LEASE_KEEPER_STOP_SIGNAL: 'INT',
    LEASE_KEEPER_STOP_GRACE_SECONDS: '3',
    LEASE_KEEPER_CONCURRENCY: '2',
    LEASE_KEEPER_ONCE: 'yes',
    LEASE_KEEPER_SHUTDOWN: 'finish',
    LEASE_KEEPER_ON_SHUTDOWN: 'release',
    LEASE_KEEPER_STATUS_ADDR: '127.0.0.1:9100',
    LEASE_KEEPER_LOG_LEVEL: 'debug',
    LEASE_KEEPER_LOG_FORMAT: 'pretty',
    LEASE_KEEPER_FENCE_MARGIN_MS: '500',
    LEASE_KEEPER_JOB_OUTPUT: 'prefix',
  };

  it('reads every variable from the environment', () => {
    expect(config(env)).toMatchObject({
      apiUrl: 'https://env.example.com',
      environmentId: 'env_fromenv',
      workerId: 'env-worker',
      ttlSeconds: 30,
      heartbeatFraction: 0.2,
      stopSignal: 'SIGINT',
      stopGraceSeconds: 3,
      concurrency: 2,
      once: true,
      shutdown: 'finish',
      onShutdown: 'release',
      statusAddr: { host: '127.0.0.1', port: 9100 },
      logLevel: 'debug',
      logFormat: 'pretty',
      fenceMarginMs: 500,
      jobOutput: 'prefix',
    });
  });

  it('takes every flag over its variable', () => {
    const flags = {
      apiUrl: 'https://flag.example.com/',
      environmentId: 'env_fromflag',
      workerId: 'flag-worker',
      ttlSeconds: '45',
      heartbeatFraction: '0.25',
      stopSignal: 'hup',
      stopGraceSeconds: '0.5',
      concurrency: '7',
      once: false,
      shutdown: 'drain',
      onShutdown: 'stop',
      statusAddr: '[::1]:9200',
      logLevel: 'warn',
      logFormat: 'json',
      fenceMarginMs: '250',
      jobOutput: 'journal',
    };
    expect(config(env, flags)).toMatchObject({
      apiUrl: 'https://flag.example.com',
      environmentId: 'env_fromflag',
      workerId: 'flag-worker',
      ttlSeconds: 45,
      heartbeatFraction: 0.25,
      stopSignal: 'SIGHUP',
      stopGraceSeconds: 0.5,
      concurrency: 7,
      once: false,
      shutdown: 'drain',
      onShutdown: 'stop',
      statusAddr: { host: '::1', port: 9200 },
      logLevel: 'warn',
      logFormat: 'json',
      fenceMarginMs: 250,
      jobOutput: 'journal',
    });
  });

  it('reports a bad flag with its value even when the variable is fine', () => {
    expect(problems(env, { ttlSeconds: '601' })).toEqual([
      'LEASE_KEEPER_TTL_SECONDS (--ttl-seconds) = "601": must be an integer from 10 to 600',
    ]);
  });

  it('leaves the variable in force when a flag is absent or empty', () => {
    expect(config(env, { ttlSeconds: undefined, concurrency: '' })).toMatchObject({ ttlSeconds: 30, concurrency: 2 });
  });

  it('parses real commander output, --once and --no-once included', () => {
    const parse = (...argv: string[]) => addConfigOptions(new Command('config')).exitOverride().parse(argv, { from: 'user' }).opts();
    expect(config(env, parse('--ttl-seconds', '20', '--no-once', '--stop-signal', 'SIGQUIT'))).toMatchObject({
      ttlSeconds: 20,
      once: false,
      stopSignal: 'SIGQUIT',
    });
    expect(config({ ...VALID_ENV }, parse('--once'))).toMatchObject({ once: true });
    expect(config(env, parse())).toEqual(config(env));
  });
});

describe('loadConfig: value rules', () => {
  const valueCases: Array<[string, string, unknown]> = [
    ['LEASE_KEEPER_TTL_SECONDS', '10', 10],
    ['LEASE_KEEPER_TTL_SECONDS', '600', 600],
    ['LEASE_KEEPER_HEARTBEAT_FRACTION', '0.05', 0.05],
    ['LEASE_KEEPER_HEARTBEAT_FRACTION', '.5', 0.5],
    ['LEASE_KEEPER_STOP_SIGNAL', 'term', 'SIGTERM'],
    ['LEASE_KEEPER_STOP_SIGNAL', 'SigKill', 'SIGKILL'],
    ['LEASE_KEEPER_STOP_SIGNAL', 'USR2', 'SIGUSR2'],
    ['LEASE_KEEPER_STOP_GRACE_SECONDS', '0', 0],
    ['LEASE_KEEPER_STOP_GRACE_SECONDS', '3600', 3600],
    ['LEASE_KEEPER_CONCURRENCY', '10000', 10000],
    ['LEASE_KEEPER_ONCE', 'TRUE', true],
    ['LEASE_KEEPER_ONCE', '1', true],
    ['LEASE_KEEPER_ONCE', 'no', false],
    ['LEASE_KEEPER_ONCE', '0', false],
    ['LEASE_KEEPER_ON_SHUTDOWN', 'release', 'release'],
    ['LEASE_KEEPER_SHUTDOWN', 'FINISH', 'finish'],
    ['LEASE_KEEPER_STATUS_ADDR', 'localhost:0', { host: 'localhost', port: 0 }],
    ['LEASE_KEEPER_STATUS_ADDR', '0.0.0.0:65535', { host: '0.0.0.0', port: 65535 }],
    ['LEASE_KEEPER_STATUS_ADDR', '[::]:9100', { host: '::', port: 9100 }],
    ['LEASE_KEEPER_LOG_LEVEL', 'silent', 'silent'],
    ['LEASE_KEEPER_LOG_LEVEL', 'TRACE', 'trace'],
    ['LEASE_KEEPER_FENCE_MARGIN_MS', '60000', 60000],
    ['LEASE_KEEPER_JOB_OUTPUT', 'Inherit', 'inherit'],
    ['LEASE_KEEPER_JOB_OUTPUT', ' auto ', 'auto'],
    ['LEASE_KEEPER_WORKER_ID', 'a.b_c:d@e-1', 'a.b_c:d@e-1'],
    ['LEASE_KEEPER_WORKER_ID', 'w'.repeat(128), 'w'.repeat(128)],
    ['QODER_ENVIRONMENT_ID', `env_${'A'.repeat(128)}`, `env_${'A'.repeat(128)}`],
    ['QODER_ENVIRONMENT_ID', 'env_a-b_C9', 'env_a-b_C9'],
    ['LEASE_KEEPER_CONTAINMENT', 'CGROUP', 'cgroup'],
    ['LEASE_KEEPER_CONTAINMENT', 'process-group', 'process-group'],
    ['LEASE_KEEPER_JOB_OOM_SCORE_ADJ', '0', 0],
    ['LEASE_KEEPER_JOB_OOM_SCORE_ADJ', '1000', 1000],
  ];
  const keyOf = (envName: string) => Object.values(SETTINGS).find((s) => s.env === envName)!.key as keyof Config;

  it.each(valueCases)('accepts %s=%s', (name, raw, expected) => {
    expect(config({ ...VALID_ENV, [name]: raw })[keyOf(name)]).toEqual(expected);
  });

  const badCases: Array<[string, string, string]> = [
    ['LEASE_KEEPER_TTL_SECONDS', '9', 'must be an integer from 10 to 600'],
    ['LEASE_KEEPER_TTL_SECONDS', '60.5', 'must be an integer from 10 to 600'],
    ['LEASE_KEEPER_TTL_SECONDS', '0x3c', 'must be an integer from 10 to 600'],
    ['LEASE_KEEPER_TTL_SECONDS', '6e1', 'must be an integer from 10 to 600'],
    ['LEASE_KEEPER_HEARTBEAT_FRACTION', '0.04', 'must be a number from 0.05 to 0.5'],
    ['LEASE_KEEPER_HEARTBEAT_FRACTION', 'NaN', 'must be a number from 0.05 to 0.5'],
    ['LEASE_KEEPER_STOP_GRACE_SECONDS', '3600.5', 'must be a number from 0 to 3600'],
    ['LEASE_KEEPER_STOP_GRACE_SECONDS', 'Infinity', 'must be a number from 0 to 3600'],
    ['LEASE_KEEPER_CONCURRENCY', '10001', 'must be an integer from 1 to 10000'],
    ['LEASE_KEEPER_STOP_SIGNAL', 'SIGSTOP', 'must be one of: SIGTERM'],
    ['LEASE_KEEPER_STOP_SIGNAL', '15', 'must be one of: SIGTERM'],
    ['LEASE_KEEPER_ONCE', 'on', 'must be one of: true, false, 1, 0, yes, no'],
    ['LEASE_KEEPER_STATUS_ADDR', '127.0.0.1:65536', 'must be host:port'],
    ['LEASE_KEEPER_STATUS_ADDR', '::1:9100', 'must be host:port'],
    ['LEASE_KEEPER_STATUS_ADDR', '[nothost]:9100', 'must be host:port'],
    ['LEASE_KEEPER_STATUS_ADDR', ':9100', 'must be host:port'],
    ['LEASE_KEEPER_STATUS_ADDR', 'host:', 'must be host:port'],
    ['LEASE_KEEPER_FENCE_MARGIN_MS', '60001', 'must be an integer from 50 to 60000 (or unset'],
    ['LEASE_KEEPER_JOB_OUTPUT', 'syslog', 'must be one of: auto, inherit, prefix, journal'],
    ['LEASE_KEEPER_WORKER_ID', 'w'.repeat(129), 'must be 1 to 128 of [A-Za-z0-9._:@-]'],
    ['LEASE_KEEPER_WORKER_ID', 'a/b', 'must be 1 to 128 of [A-Za-z0-9._:@-]'],
    ['QODER_ENVIRONMENT_ID', 'env_', 'must be env_ followed by 1 to 128 of [A-Za-z0-9_-]'],
    ['QODER_ENVIRONMENT_ID', 'env_a.b', 'must be env_ followed by 1 to 128 of [A-Za-z0-9_-]'],
    ['QODER_ENVIRONMENT_ID', `env_${'A'.repeat(129)}`, 'must be env_ followed by 1 to 128 of [A-Za-z0-9_-]'],
    ['LEASE_KEEPER_CONTAINMENT', 'tag', 'must be one of: auto, cgroup, process-group'],
    ['LEASE_KEEPER_JOB_OOM_SCORE_ADJ', '-100', 'must be an integer from 0 to 1000'],
    ['LEASE_KEEPER_JOB_MEMORY_MAX', '512X', 'must be a size like 512M'],
    ['LEASE_KEEPER_JOB_MEMORY_MAX', '1000', 'at least 1M'],
    ['LEASE_KEEPER_JOB_MEMORY_MAX', '1.5G', 'must be a size like 512M'],
    ['LEASE_KEEPER_JOB_PIDS_MAX', '0', 'must be an integer from 1 to 4194304'],
    ['LEASE_KEEPER_JOB_CPU_MAX', '200', 'must be a percentage of one CPU'],
    ['LEASE_KEEPER_JOB_CPU_MAX', '0%', 'must be a percentage of one CPU'],
  ];

  it.each(badCases)('rejects %s=%s', (name, raw, rule) => {
    const list = problems({ ...VALID_ENV, [name]: raw });
    expect(list).toHaveLength(1);
    expect(list[0]).toMatch(new RegExp(`^${name} \\(--[a-z-]+\\) = ".*": `));
    expect(list[0]).toContain(rule);
  });

  it('parses the job limits like systemd (K, M, G, T are powers of 1024; 200% is two CPUs)', () => {
    expect(config({ ...VALID_ENV, LEASE_KEEPER_JOB_MEMORY_MAX: '512M', LEASE_KEEPER_JOB_PIDS_MAX: '1000', LEASE_KEEPER_JOB_CPU_MAX: '200%' }).jobLimits).toEqual({
      memoryMax: 512 * 1024 * 1024,
      pidsMax: 1000,
      cpuMax: 2,
    });
    expect(config({ ...VALID_ENV, LEASE_KEEPER_JOB_MEMORY_MAX: '2g' }).jobLimits).toEqual({ memoryMax: 2 * 1024 ** 3 });
    expect(config({ ...VALID_ENV, LEASE_KEEPER_JOB_CPU_MAX: '12.5%' }).jobLimits).toEqual({ cpuMax: 0.125 });
    expect(config(VALID_ENV, { jobMemoryMax: '1G', containment: 'cgroup' })).toMatchObject({ jobLimits: { memoryMax: 1024 ** 3 }, containment: 'cgroup' });
  });

  it('cuts a long bad value short', () => {
    const [p] = problems({ ...VALID_ENV, LEASE_KEEPER_LOG_LEVEL: 'x'.repeat(5000) });
    expect(p!.length).toBeLessThan(300);
  });
});

describe('loadConfig: QODER_API_URL', () => {
  it.each([
    ['https://api.qoder.com', 'https://api.qoder.com'],
    ['https://api.qoder.com/', 'https://api.qoder.com'],
    ['https://api.qoder.com/api/v1/cloud', 'https://api.qoder.com'],
    ['https://api.qoder.com/api/v1/cloud/', 'https://api.qoder.com'],
    ['https://API.Qoder.com:443', 'https://api.qoder.com'],
    ['https://gw.example.com:8443/', 'https://gw.example.com:8443'],
    ['http://127.0.0.1:8787', 'http://127.0.0.1:8787'],
    ['http://127.9.8.7:8787/', 'http://127.9.8.7:8787'],
    ['http://localhost:8787', 'http://localhost:8787'],
    ['http://[::1]:8787/api/v1/cloud', 'http://[::1]:8787'],
  ])('accepts %s as %s', (raw, origin) => {
    expect(config({ ...VALID_ENV, QODER_API_URL: raw }).apiUrl).toBe(origin);
  });

  it.each([
    ['http://api.qoder.com', 'http:// is only allowed for loopback hosts'],
    ['http://10.0.0.1:8787', 'http:// is only allowed for loopback hosts'],
    ['http://128.0.0.1', 'http:// is only allowed for loopback hosts'],
    ['http://localhost.evil.com', 'http:// is only allowed for loopback hosts'],
    ['https://api.qoder.com/v2', 'without other path'],
    ['https://api.qoder.com/api/v1/cloud/environments', 'without other path'],
    ['https://api.qoder.com?x=1', 'without other path, query'],
    ['https://api.qoder.com/#frag', 'without other path, query'],
    ['ftp://api.qoder.com', 'must be an https:// origin'],
    ['api.qoder.com', 'is not a URL'],
  ])('rejects %s', (raw, rule) => {
    const list = problems({ ...VALID_ENV, QODER_API_URL: raw });
    expect(list).toEqual([`QODER_API_URL (--api-url) = ${JSON.stringify(raw)}: ${list[0]!.split(': ').slice(1).join(': ')}`]);
    expect(list[0]).toContain(rule);
  });

  it('rejects credentials in the URL without echoing the password', () => {
    const list = problems({ ...VALID_ENV, QODER_API_URL: 'https://user:hunter2pass@api.qoder.com' });
    expect(list).toHaveLength(1);
    expect(list[0]).toMatch(/^QODER_API_URL \(--api-url\) = "https:\/\/\*\*\*@api\.qoder\.com\/": must not contain credentials/);
    expect(list[0]).not.toContain('hunter2pass');
    expect(list[0]).not.toContain('user');
  });
});

describe('formatProblems and redactConfig', () => {
  it('numbers the problems and says nothing was sent', () => {
    expect(formatProblems(['A: bad', 'B: worse'])).toBe(
      'lease-keeper: 2 configuration problems:\n  - A: bad\n  - B: worse\n' +
        'Nothing was sent to the control plane. See `lease-keeper run --help`.',
    );
    expect(formatProblems(['A: bad'])).toMatch(/^lease-keeper: 1 configuration problem:\n {2}- A: bad\n/);
  });

  it('replaces the token and keeps everything else', () => {
    const c = config(VALID_ENV);
    const r = redactConfig(c);
    expect(r).toEqual({ ...c, token: '[REDACTED]' });
    expect(JSON.stringify(r)).not.toContain(TOKEN);
    expect(c.token).toBe(TOKEN);
  });
});

describe('addConfigOptions', () => {
  const help = () => {
    let out = '';
    const cmd = addConfigOptions(new Command('run')).exitOverride().configureOutput({ writeOut: (s) => (out += s) });
    cmd.outputHelp();
    return out.replace(/\s+/g, ' ');
  };

  it('adds a flag naming its variable and default for every setting', () => {
    const text = help();
    for (const s of Object.values(SETTINGS)) {
      expect(text).toContain(s.flag);
      expect(text).toContain(`env ${s.env}; default: ${s.default}`);
    }
    expect(text).toContain('--no-once');
  });

  it('has no flag for the token itself, and says why on --pat-file', () => {
    const cmd = addConfigOptions(new Command('run'));
    const longs = cmd.options.map((o) => o.long);
    expect(longs.filter((l) => /pat$|token/.test(l ?? ''))).toEqual([]);
    expect(help()).toMatch(/--pat-file <path>.*no flag for the token itself: the command line is world-readable in \/proc/);
  });

  it('sets no defaults in commander, so that an absent flag leaves the variable', () => {
    expect(addConfigOptions(new Command('config')).parse([], { from: 'user' }).opts()).toEqual({});
  });
});
