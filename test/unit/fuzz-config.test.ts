/**
 * Configuration values, fuzzed: any mix of variables and flags with any text. loadConfig never throws;
 * a variable is reported exactly when its value is bad, by a problem that names it (and names nothing
 * else); bad variables are reported all at once; where the spec states the accepted range, plainly valid
 * values are accepted and plainly invalid ones refused; the token never appears in a problem.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type ConfigSystem, type LoadConfigResult, SETTINGS, loadConfig } from '../../src/config/index.js';

const TOKEN = 'pt-SECRET-fuzz-config-0a1b2c';
const BASE = { QODER_PAT: TOKEN, QODER_ENVIRONMENT_ID: 'env_fuzz' } as const;
const HOST: Partial<ConfigSystem> = { hostname: () => 'host1', machineId: () => '0123456789abcdef', exists: () => false };

type Verdict = 'valid' | 'invalid' | 'either';

/**
 * What spec §3 says, decided only where it is unambiguous (`raw` is non-empty): plain digits in range are
 * valid; not a number, not finite, out of range or (for integers) fractional is invalid; other notations
 * of an in-range number (+5, 1e2, 0x10, .5) are the parser's call.
 */
function numberRule(min: number, max: number, integer: boolean): (raw: string) => Verdict {
  return (raw) => {
    const t = raw.trim();
    if (t === '') return 'invalid';
    const n = Number(t);
    if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) return 'invalid';
    return (integer ? /^\d+$/ : /^\d+(\.\d+)?$/).test(t) ? 'valid' : 'either';
  };
}
function enumRule(values: string[], normalize: (t: string) => string = (t) => t.toLowerCase()): (raw: string) => Verdict {
  const set = new Set(values.map((v) => normalize(v)));
  return (raw) => (set.has(normalize(raw.trim())) ? 'valid' : 'invalid');
}
const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGKILL'];

interface Var {
  env: string;
  /** commander's key, or null when there is no flag. */
  flag: string | null;
  rule: ((raw: string) => Verdict) | null;
}

const VARS: Var[] = [
  { env: 'QODER_PAT', flag: null, rule: (raw) => (/^[\x21-\x7e]+$/.test(raw.trim()) ? 'valid' : 'invalid') },
  { env: SETTINGS.apiUrl.env, flag: SETTINGS.apiUrl.key, rule: null },
  { env: SETTINGS.environmentId.env, flag: SETTINGS.environmentId.key, rule: (raw) => (/^env_[A-Za-z0-9_-]{1,128}$/.test(raw.trim()) ? 'valid' : 'invalid') },
  { env: SETTINGS.workerId.env, flag: SETTINGS.workerId.key, rule: (raw) => (/^[A-Za-z0-9._:@-]{1,128}$/.test(raw.trim()) ? 'valid' : 'invalid') },
  { env: SETTINGS.ttlSeconds.env, flag: SETTINGS.ttlSeconds.key, rule: numberRule(10, 600, true) },
  { env: SETTINGS.heartbeatFraction.env, flag: SETTINGS.heartbeatFraction.key, rule: numberRule(0.05, 0.5, false) },
  { env: SETTINGS.stopSignal.env, flag: SETTINGS.stopSignal.key, rule: enumRule([...SIGNALS, ...SIGNALS.map((s) => s.slice(3))], (t) => t.toUpperCase()) },
  { env: SETTINGS.stopGraceSeconds.env, flag: SETTINGS.stopGraceSeconds.key, rule: numberRule(0, 3600, false) },
  { env: SETTINGS.concurrency.env, flag: SETTINGS.concurrency.key, rule: numberRule(1, 10000, true) },
  { env: SETTINGS.once.env, flag: null, rule: enumRule(['true', 'false', '1', '0', 'yes', 'no']) },
  { env: SETTINGS.onShutdown.env, flag: SETTINGS.onShutdown.key, rule: enumRule(['stop', 'release']) },
  { env: SETTINGS.statusAddr.env, flag: SETTINGS.statusAddr.key, rule: null },
  { env: SETTINGS.logLevel.env, flag: SETTINGS.logLevel.key, rule: enumRule(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']) },
  { env: SETTINGS.logFormat.env, flag: SETTINGS.logFormat.key, rule: enumRule(['json', 'pretty']) },
  { env: SETTINGS.fenceMarginMs.env, flag: SETTINGS.fenceMarginMs.key, rule: numberRule(50, 60000, true) },
  { env: SETTINGS.jobOutput.env, flag: SETTINGS.jobOutput.key, rule: enumRule(['auto', 'inherit', 'prefix', 'journal']) },
];

const EDGES = [
  '', ' ', '0', '1', '-1', '+5', ' 42 ', '10', '600', '601', '9', '0.05', '0.5', '0.049', '.3', '3.', '1e2', '0x10', '1_000', 'NaN', 'Infinity', '-0',
  '9007199254740993', '50', '60000', '3600', '3600.5', 'true', 'FALSE', 'Yes', 'nah', 'SIGTERM', 'term', 'sigkill', 'SIGSTOP', 'stop', 'release', 'RELEASE',
  'info', 'verbose', 'json', 'pretty', 'env_abc', 'env_', 'env_a b', 'env_ä', 'https://api.qoder.com', 'https://api.qoder.com/api/v1/cloud/',
  'http://localhost:8787', 'http://127.0.0.1:1', 'http://example.com', 'https://u:p@x.com', 'ftp://x', 'https://x.com/?a=1', '127.0.0.1:9100',
  '[::1]:9100', ':9100', 'host:99999', 'localhost:0', '\u0000', '\t', 'é', '🙂', 'a'.repeat(300), TOKEN, `x ${TOKEN}`, ` ${TOKEN}\n`,
];

const value = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom(...EDGES) },
  { weight: 2, arbitrary: fc.string({ maxLength: 24 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 16 }) },
  { weight: 1, arbitrary: fc.integer({ min: -100, max: 100_000 }).map(String) },
  { weight: 1, arbitrary: fc.double({ noNaN: false }).map(String) },
);

/** Per variable: not set, set in the environment, as a flag, or both (the flag wins). */
const assignment = fc.array(
  fc.record({ v: fc.constantFrom(...VARS), env: fc.option(value, { nil: undefined }), flag: fc.option(value, { nil: undefined }) }),
  { maxLength: 8 },
);

function load(env: Record<string, string>, flags: Record<string, unknown>): LoadConfigResult {
  return loadConfig({ env, flags, requireCommand: false, system: HOST });
}

/** The variable a problem names: its first word (problems start with the variable). */
function named(problem: string): string {
  return /^[A-Z][A-Z_]+/.exec(problem)?.[0] ?? problem;
}

describe('configuration values (fuzz)', () => {
  it('never throws; reports exactly the bad variables, each by name, all at once; never shows the token', () => {
    fc.assert(
      fc.property(assignment, (assigned) => {
        const env: Record<string, string> = { ...BASE };
        const flags: Record<string, unknown> = {};
        const effective = new Map<Var, string>();
        for (const { v, env: e, flag: f } of assigned) {
          if (e !== undefined) env[v.env] = e;
          if (f !== undefined && v.flag !== null) flags[v.flag] = f;
          const flagRaw = v.flag !== null ? flags[v.flag] : undefined;
          const raw = typeof flagRaw === 'string' && flagRaw !== '' ? flagRaw : env[v.env];
          if (raw !== undefined) effective.set(v, raw);
          else effective.delete(v);
        }
        // Each variable on its own (the others valid): bad or not, and what its problems name.
        const bad = new Set<string>();
        for (const [v, raw] of effective) {
          const oneEnv: Record<string, string> = { ...BASE };
          const oneFlags: Record<string, unknown> = {};
          if (v.flag !== null && flags[v.flag] !== undefined) oneFlags[v.flag] = flags[v.flag];
          if (env[v.env] !== undefined) oneEnv[v.env] = env[v.env]!;
          let single: LoadConfigResult;
          expect(() => (single = load(oneEnv, oneFlags))).not.toThrow();
          single = single!;
          if (!single.ok) {
            bad.add(v.env);
            for (const p of single.problems) expect(named(p), p).toBe(v.env);
          }
          const verdict = raw === '' ? (v.env === 'QODER_PAT' || v.env === 'QODER_ENVIRONMENT_ID' ? 'invalid' : 'valid') : v.rule?.(raw) ?? 'either';
          if (verdict === 'valid') expect(single.ok, `${v.env}=${JSON.stringify(raw)} should be accepted: ${single.ok ? '' : single.problems.join('; ')}`).toBe(true);
          if (verdict === 'invalid') expect(single.ok, `${v.env}=${JSON.stringify(raw)} should be refused`).toBe(false);
        }
        // All at once: exactly the bad ones, each named.
        let all!: LoadConfigResult;
        expect(() => (all = load(env, flags))).not.toThrow();
        const names = all.ok ? new Set<string>() : new Set(all.problems.map(named));
        expect([...names].sort()).toEqual([...bad].sort());
        if (!all.ok) {
          // The configured token (as the keeper would send it: trimmed), whatever else is wrong.
          const token = env.QODER_PAT?.trim() ?? '';
          for (const p of all.problems) if (token.length >= 4) expect(p).not.toContain(token);
        }
      }),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 1000) },
    );
  });

  it('the token never appears in a problem, however it is padded and wherever else it is pasted', () => {
    const tokenChars = fc.constantFrom(...'abcdefXYZ0123456789-_.~!'.split(''));
    fc.assert(
      fc.property(
        fc.string({ unit: tokenChars, minLength: 4, maxLength: 40 }),
        fc.constantFrom('', ' ', '\n', '\t', ' \n', '  '),
        fc.constantFrom('', ' ', '\n', '\r\n'),
        fc.array(fc.record({ v: fc.constantFrom(...VARS.filter((v) => v.env !== 'QODER_PAT')), before: fc.string({ maxLength: 4 }), after: fc.string({ maxLength: 4 }) }), { minLength: 1, maxLength: 4 }),
        (token, lead, trail, pasted) => {
          const env: Record<string, string> = { QODER_PAT: `${lead}${token}${trail}`, QODER_ENVIRONMENT_ID: 'env_fuzz' };
          for (const p of pasted) env[p.v.env] = `${p.before}${token}${p.after}`;
          const r = load(env, {});
          if (r.ok) return;
          for (const p of r.problems) expect(p).not.toContain(token);
        },
      ),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 1000) },
    );
  });
});
