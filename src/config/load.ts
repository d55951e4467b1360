import { REDACTED, makeScrubber } from '../redact.js';
import { SETTINGS, type Setting } from './options.js';
import { nodeConfigSystem, type ConfigSystem } from './system.js';
import { resolveToken } from './token.js';
import type { Config } from './types.js';
import { CONTAINMENT_MODES } from './values.js';
import {
  JOB_OUTPUTS,
  LOG_FORMATS,
  LOG_LEVELS,
  ON_SHUTDOWN,
  SHUTDOWN_MODES,
  defaultWorkerId,
  parseApiUrl,
  parseBoolean,
  parseBytes,
  parseCpuQuota,
  parseEnum,
  parseEnvironmentId,
  parseInteger,
  parseNumber,
  parseSignal,
  parseStatusAddr,
  parseWorkerId,
  type Parsed,
} from './values.js';

export interface LoadConfigInput {
  env: NodeJS.ProcessEnv;
  /** commander's parsed options (addConfigOptions); an absent or empty flag leaves its variable. */
  flags: Record<string, unknown>;
  /** The job command and its arguments (after `--`). */
  command?: string[];
  /** `run` needs a job command, `config` does not. */
  requireCommand: boolean;
  /** Host access (token files, hostname, machine id); the real host by default. */
  system?: Partial<ConfigSystem>;
}

export type LoadConfigResult = { ok: true; config: Config } | { ok: false; problems: string[] };

export const NO_COMMAND_PROBLEM = 'no job command: use lease-keeper run [options] -- <command> [args...]';

/** Secrets shorter than this are not scrubbed from problems (it would shred the messages, and hide nothing). */

/**
 * Validates every variable and flag in one pass and returns the Config, or ALL the problems found.
 * Each problem starts with the variable (and its flag), then the bad value (never the token), then
 * the accepted values. Flags win over the environment; empty values count as unset. Nothing here
 * touches the network.
 */
export function loadConfig(input: LoadConfigInput): LoadConfigResult {
  const sys: ConfigSystem = { ...nodeConfigSystem, ...input.system };
  const problems: string[] = [];
  const seen: string[] = [];

  /** Parses one setting: the flag if given, else the variable, else `fallback` (used as is). */
  function get<T>(s: Setting, parse: (raw: string) => Parsed<T>, fallback: T): T {
    const raw = rawValue(s, input.env, input.flags);
    if (raw === undefined) return fallback;
    const p = parse(String(raw)); // a boolean flag (--once, --no-once) parses as "true"/"false"
    if (p.ok) return p.value;
    problems.push(`${label(s)} = ${p.shown === undefined ? show(String(raw)) : show(p.shown)}: ${p.rule}`);
    return fallback;
  }

  const apiUrl = get(SETTINGS.apiUrl, parseApiUrl, 'https://api.qoder.com');

  const patFileFlag = input.flags[SETTINGS.patFile.key];
  const patFile = typeof patFileFlag === 'string' && patFileFlag !== '' ? patFileFlag : undefined;
  const token = resolveToken(input.env, patFile, sys, seen);
  if (!token.ok) problems.push(...token.problems);

  const environmentId = get(SETTINGS.environmentId, parseEnvironmentId, '');
  if (rawValue(SETTINGS.environmentId, input.env, input.flags) === undefined) {
    problems.push(`${label(SETTINGS.environmentId)}: required; the id of your self-hosted Environment, env_ followed by 1 to 128 of [A-Za-z0-9_-]`);
  }

  const workerId = get(SETTINGS.workerId, parseWorkerId, null) ?? defaultWorkerId(sys.hostname(), sys.machineId());
  const ttlSeconds = get(SETTINGS.ttlSeconds, (r) => parseInteger(r, 10, 600), 60);
  const heartbeatFraction = get(SETTINGS.heartbeatFraction, (r) => parseNumber(r, 0.05, 0.5), 0.33);
  const stopSignal = get(SETTINGS.stopSignal, parseSignal, 'SIGTERM');
  const stopGraceSeconds = get(SETTINGS.stopGraceSeconds, (r) => parseNumber(r, 0, 3600), 10);
  const concurrency = get(SETTINGS.concurrency, (r) => parseInteger(r, 1, 10000), 1);
  const once = get(SETTINGS.once, parseBoolean, false);
  const shutdown = get(SETTINGS.shutdown, (r) => parseEnum(r, SHUTDOWN_MODES), 'drain');
  const onShutdown = get(SETTINGS.onShutdown, (r) => parseEnum(r, ON_SHUTDOWN), 'stop');
  const statusAddr = get(SETTINGS.statusAddr, parseStatusAddr, null);
  const logLevel = get(SETTINGS.logLevel, (r) => parseEnum(r, LOG_LEVELS), 'info');
  const logFormat = get(SETTINGS.logFormat, (r) => parseEnum(r, LOG_FORMATS), 'json');
  const fenceMarginMs = get(
    SETTINGS.fenceMarginMs,
    (r) => {
      const p = parseInteger(r, 50, 60000);
      return p.ok ? p : { ok: false as const, rule: `${p.rule} (or unset: derived from the granted ttl)` };
    },
    null,
  );
  const jobOutput = get(SETTINGS.jobOutput, (r) => parseEnum(r, JOB_OUTPUTS), 'auto');

  const containment = get(SETTINGS.containment, (r) => parseEnum(r, CONTAINMENT_MODES), 'auto');
  const jobLimits: Config['jobLimits'] = {};
  const memoryMax = get(SETTINGS.jobMemoryMax, parseBytes, undefined);
  if (memoryMax !== undefined) jobLimits.memoryMax = memoryMax;
  const pidsMax = get(SETTINGS.jobPidsMax, (r) => parseInteger(r, 1, 4194304), undefined);
  if (pidsMax !== undefined) jobLimits.pidsMax = pidsMax;
  const cpuMax = get(SETTINGS.jobCpuMax, parseCpuQuota, undefined);
  if (cpuMax !== undefined) jobLimits.cpuMax = cpuMax;
  const jobOomScoreAdj = get(SETTINGS.jobOomScoreAdj, (r) => parseInteger(r, 0, 1000), 500);

  const command = input.command ?? [];
  if (input.requireCommand && command.length === 0) problems.push(NO_COMMAND_PROBLEM);

  if (problems.length > 0 || !token.ok) {
    return { ok: false, problems: problems.map((p) => scrub(p, seen)) };
  }
  return {
    ok: true,
    config: {
      apiUrl,
      token: token.token,
      tokenSource: token.source,
      tokenPath: token.path,
      environmentId,
      workerId,
      ttlSeconds,
      heartbeatFraction,
      stopSignal,
      stopGraceSeconds,
      concurrency,
      once,
      shutdown,
      onShutdown,
      statusAddr,
      logLevel,
      logFormat,
      fenceMarginMs,
      containment,
      jobLimits,
      jobOomScoreAdj,
      jobOutput,
      command: [...command],
    },
  };
}

/** The flag's value if given (booleans kept), else the variable's; empty strings count as unset. */
function rawValue(s: Setting, env: NodeJS.ProcessEnv, flags: Record<string, unknown>): string | boolean | undefined {
  const flag = flags[s.key];
  if (typeof flag === 'boolean') return flag;
  if (typeof flag === 'number') return String(flag);
  if (typeof flag === 'string' && flag !== '') return flag;
  const v = env[s.env];
  return v === undefined || v === '' ? undefined : v;
}

function label(s: Setting): string {
  return `${s.env} (${s.flag})`;
}

/** The bad value, quoted, and cut short so that a pasted file does not fill the screen. */
function show(raw: string): string {
  return JSON.stringify(raw.length > 100 ? `${raw.slice(0, 100)}…` : raw);
}

function scrub(text: string, secrets: string[]): string {
  return makeScrubber(secrets)(text);
}

/** The configuration for printing: the token replaced by "[REDACTED]". */
export function redactConfig(config: Config): Record<string, unknown> {
  return { ...config, token: REDACTED };
}

/**
 * The message for `config` and `run` (stderr, exit 78). No trailing newline.
 * Example: `lease-keeper: 2 configuration problems:\n  - …\n  - …\nNothing was sent to the control plane. …`
 */
export function formatProblems(problems: string[]): string {
  const n = problems.length;
  const head = `lease-keeper: ${n} configuration problem${n === 1 ? '' : 's'}:`;
  const lines = problems.map((p) => `  - ${p}`);
  return [head, ...lines, 'Nothing was sent to the control plane. See `lease-keeper run --help`.'].join('\n');
}
