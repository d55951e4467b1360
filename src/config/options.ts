import { Option, type Command } from 'commander';

/** One configuration variable: its environment name, its flag, and the key commander stores it under. */
export interface Setting {
  env: string;
  flag: string;
  /** commander's camelCase attribute name of the flag. */
  key: string;
  /** `<placeholder>` for the flag, or null for a boolean flag. */
  arg: string | null;
  /** What it does, then the accepted values; the help adds the variable and the default. */
  help: string;
  /** Shown as the default in --help. */
  default: string;
}

/** Every variable of spec §3 except QODER_PAT (no flag on purpose: argv is world-readable). */
export const SETTINGS = {
  apiUrl: {
    env: 'QODER_API_URL',
    flag: '--api-url',
    key: 'apiUrl',
    arg: '<url>',
    help: 'gateway origin; http:// only for loopback hosts',
    default: 'https://api.qoder.com',
  },
  patFile: {
    env: 'QODER_PAT_FILE',
    flag: '--pat-file',
    key: 'patFile',
    arg: '<path>',
    help:
      'file holding the bearer token, mode 0600. Exactly one token source: QODER_PAT, this, or the systemd ' +
      'credential qoder-pat in $CREDENTIALS_DIRECTORY. The file is read again on a 401/403 and on SIGHUP, so a ' +
      'rotated token (a new file renamed over it) is used without a restart. There is deliberately no flag for ' +
      'the token itself: the command line is world-readable in /proc',
    default: 'unset',
  },
  environmentId: {
    env: 'QODER_ENVIRONMENT_ID',
    flag: '--environment-id',
    key: 'environmentId',
    arg: '<id>',
    help: 'the self-hosted Environment to serve, env_…; required',
    default: 'none',
  },
  workerId: {
    env: 'LEASE_KEEPER_WORKER_ID',
    flag: '--worker-id',
    key: 'workerId',
    arg: '<id>',
    help: 'sent as Worker-ID on poll and ack; 1..128 of [A-Za-z0-9._:@-]',
    default: 'hostname-<first 12 chars of the machine id>',
  },
  ttlSeconds: {
    env: 'LEASE_KEEPER_TTL_SECONDS',
    flag: '--ttl-seconds',
    key: 'ttlSeconds',
    arg: '<seconds>',
    help: 'desired lease ttl, integer 10..600',
    default: '60',
  },
  heartbeatFraction: {
    env: 'LEASE_KEEPER_HEARTBEAT_FRACTION',
    flag: '--heartbeat-fraction',
    key: 'heartbeatFraction',
    arg: '<fraction>',
    help: 'heartbeat interval as a fraction of the granted ttl, 0.05..0.5',
    default: '0.33',
  },
  stopSignal: {
    env: 'LEASE_KEEPER_STOP_SIGNAL',
    flag: '--stop-signal',
    key: 'stopSignal',
    arg: '<signal>',
    help: "first signal to the job's process group: SIGTERM SIGINT SIGHUP SIGQUIT SIGUSR1 SIGUSR2 SIGKILL (SIG optional)",
    default: 'SIGTERM',
  },
  stopGraceSeconds: {
    env: 'LEASE_KEEPER_STOP_GRACE_SECONDS',
    flag: '--stop-grace-seconds',
    key: 'stopGraceSeconds',
    arg: '<seconds>',
    help: 'seconds from the stop signal to SIGKILL, 0..3600 (shortened when the lease leaves less room)',
    default: '10',
  },
  concurrency: {
    env: 'LEASE_KEEPER_CONCURRENCY',
    flag: '--concurrency',
    key: 'concurrency',
    arg: '<n>',
    help: 'work items held at once, integer 1..10000',
    default: '1',
  },
  once: {
    env: 'LEASE_KEEPER_ONCE',
    flag: '--once',
    key: 'once',
    arg: null,
    help: "handle one item, then exit with the outcome's code (--no-once overrides the variable)",
    default: 'false',
  },
  shutdown: {
    env: 'LEASE_KEEPER_SHUTDOWN',
    flag: '--shutdown',
    key: 'shutdown',
    arg: '<mode>',
    help: 'on SIGTERM/SIGINT: drain (stop signal to every job now) or finish (claim nothing more, let running jobs end by themselves; a second signal drains, a third kills)',
    default: 'drain',
  },
  onShutdown: {
    env: 'LEASE_KEEPER_ON_SHUTDOWN',
    flag: '--on-shutdown',
    key: 'onShutdown',
    arg: '<mode>',
    help: 'after draining on SIGTERM/SIGINT: stop (confirm the stop) or release (leave the item to its lease)',
    default: 'stop',
  },
  statusAddr: {
    env: 'LEASE_KEEPER_STATUS_ADDR',
    flag: '--status-addr',
    key: 'statusAddr',
    arg: '<host:port>',
    help: 'listen address for /healthz and /metrics, e.g. 127.0.0.1:9100 or [::1]:9100',
    default: 'unset (no listener)',
  },
  logLevel: {
    env: 'LEASE_KEEPER_LOG_LEVEL',
    flag: '--log-level',
    key: 'logLevel',
    arg: '<level>',
    help: 'fatal, error, warn, info, debug, trace or silent',
    default: 'info',
  },
  logFormat: {
    env: 'LEASE_KEEPER_LOG_FORMAT',
    flag: '--log-format',
    key: 'logFormat',
    arg: '<format>',
    help: 'json (one pino JSON line per event) or pretty (human-readable)',
    default: 'json',
  },
  fenceMarginMs: {
    env: 'LEASE_KEEPER_FENCE_MARGIN_MS',
    flag: '--fence-margin-ms',
    key: 'fenceMarginMs',
    arg: '<ms>',
    help: "how long before the lease deadline the job's group must be dead, integer 50..60000",
    default: '10% of the granted ttl, 250..2000 ms',
  },
  containment: {
    env: 'LEASE_KEEPER_CONTAINMENT',
    flag: '--containment',
    key: 'containment',
    arg: '<mode>',
    help:
      'what "the job" is: auto (a cgroup v2 per job where the keeper can write cgroups, i.e. root or systemd ' +
      'Delegate=yes; else the process group plus an environment tag), cgroup (exit 78 when not possible), ' +
      'process-group (the process group only; setsid escapes it)',
    default: 'auto',
  },
  jobMemoryMax: {
    env: 'LEASE_KEEPER_JOB_MEMORY_MAX',
    flag: '--job-memory-max',
    key: 'jobMemoryMax',
    arg: '<bytes>',
    help: "each job's cgroup memory.max, e.g. 512M or 2G (K, M, G, T: powers of 1024); needs cgroup containment with the memory controller",
    default: 'unset (no limit)',
  },
  jobPidsMax: {
    env: 'LEASE_KEEPER_JOB_PIDS_MAX',
    flag: '--job-pids-max',
    key: 'jobPidsMax',
    arg: '<n>',
    help: "each job's cgroup pids.max, integer 1..4194304; needs cgroup containment with the pids controller",
    default: 'unset (no limit)',
  },
  jobCpuMax: {
    env: 'LEASE_KEEPER_JOB_CPU_MAX',
    flag: '--job-cpu-max',
    key: 'jobCpuMax',
    arg: '<percent>',
    help: "each job's CPU quota like systemd's CPUQuota=, e.g. 50% or 200% (two CPUs); needs cgroup containment with the cpu controller",
    default: 'unset (no limit)',
  },
  jobOomScoreAdj: {
    env: 'LEASE_KEEPER_JOB_OOM_SCORE_ADJ',
    flag: '--job-oom-score-adj',
    key: 'jobOomScoreAdj',
    arg: '<n>',
    help: "added to each job's oom_score_adj (raised from the keeper's own, never lowered), integer 0..1000, so the OOM killer takes a job before the keeper",
    default: '500',
  },
  jobOutput: {
    env: 'LEASE_KEEPER_JOB_OUTPUT',
    flag: '--job-output',
    key: 'jobOutput',
    arg: '<mode>',
    help:
      "where each job's stdout/stderr go: inherit (the keeper's), prefix (each line with [<work_id>] in front, " +
      'through the keeper), journal (its own journald streams, identifier lease-keeper-job-<work_id>), ' +
      "auto (journal when the keeper's stdout is journald's, else inherit)",
    default: 'auto',
  },
} as const satisfies Record<string, Setting>;

export type SettingName = keyof typeof SETTINGS;

/** The variables not tied to a flag, named in the help's epilogue. */
const HELP_AFTER = `
Every option is also an environment variable (named in its help); a flag wins over its variable.
The token comes from exactly one of: QODER_PAT, QODER_PAT_FILE (--pat-file), or the systemd
credential qoder-pat ($CREDENTIALS_DIRECTORY/qoder-pat, see LoadCredential=). Bad configuration
lists every problem and exits 78 before any request is sent.`;

/**
 * Adds a flag for every configuration variable to `cmd` (for `run` and `config`). No defaults are set
 * in commander: an absent flag leaves the variable, then the default, to loadConfig().
 */
export function addConfigOptions(cmd: Command): Command {
  for (const s of Object.values(SETTINGS) as Setting[]) {
    const flags = s.arg === null ? s.flag : `${s.flag} ${s.arg}`;
    cmd.addOption(new Option(flags, `${s.help} [env ${s.env}; default: ${s.default}]`));
  }
  cmd.addOption(new Option('--no-once', `keep polling after each item (overrides ${SETTINGS.once.env}=true)`));
  cmd.addHelpText('after', HELP_AFTER);
  return cmd;
}
