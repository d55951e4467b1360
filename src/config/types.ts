/** The validated configuration of `run` and `config` (spec §3). Built only by loadConfig(). */

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export type OnShutdown = 'stop' | 'release';
/** Where each job's stdout/stderr go (src/job/output.ts); `auto` = `journal` under journald, else `inherit`. */
export type JobOutputSetting = 'auto' | 'inherit' | 'prefix' | 'journal';
/** On SIGTERM/SIGINT: `drain` the jobs now, or let them `finish` by themselves (a second signal drains). */
export type ShutdownMode = 'drain' | 'finish';
export type TokenSource = 'QODER_PAT' | 'QODER_PAT_FILE' | 'CREDENTIALS_DIRECTORY';

export interface Config {
  /** Gateway origin without trailing slash, e.g. `https://api.qoder.com`. `http://` only for loopback. */
  apiUrl: string;
  /** Bearer token. Secret: never logged, never in an error message, never in a child's environment. */
  token: string;
  tokenSource: TokenSource;
  /** The token file re-read on rotation (QODER_PAT_FILE or the credential); null for QODER_PAT. */
  tokenPath: string | null;
  /** `env_…` */
  environmentId: string;
  /** Sent as `Worker-ID` on poll and ack. Default: hostname + machine id. */
  workerId: string;
  /** `desired_ttl_seconds`, 10..600, default 60. */
  ttlSeconds: number;
  /** Heartbeat interval = fraction × granted ttl, 0.05..0.5, default 0.33. */
  heartbeatFraction: number;
  /** First signal to the job's process group, default SIGTERM. */
  stopSignal: NodeJS.Signals;
  /** Grace between the stop signal and SIGKILL, default 10 s (capped by the lease, spec §5). */
  stopGraceSeconds: number;
  /** Items held at once, each with its own lease and child, default 1. */
  concurrency: number;
  /** Handle one item, then exit with the outcome's code. */
  once: boolean;
  /** On SIGTERM/SIGINT: drain every job now (default), or claim nothing more and let running jobs finish. */
  shutdown: ShutdownMode;
  /** After draining on SIGTERM/SIGINT: confirm the stop, or leave the item to its lease. */
  onShutdown: OnShutdown;
  /** `/healthz` and `/metrics` listener, or null when unset. */
  statusAddr: { host: string; port: number } | null;
  logLevel: LogLevel;
  /** `json` (default) or `pretty` (human-readable lines; the demo's default on a TTY). */
  logFormat: 'json' | 'pretty';
  /**
   * Safety margin before the local lease deadline by which the job's group must be dead (self-fencing).
   * Default: 10% of the granted ttl, between 250 ms and 2 s. Set by LEASE_KEEPER_FENCE_MARGIN_MS.
   * Null means "derive from the granted ttl".
   */
  fenceMarginMs: number | null;
  /** LEASE_KEEPER_CONTAINMENT: auto, cgroup or process-group (spec §5a). */
  containment: 'auto' | 'cgroup' | 'process-group';
  /** Per-job cgroup limits: memory.max in bytes, pids.max, CPUs (2 = 200%). Absent: no limit. */
  jobLimits: { memoryMax?: number; pidsMax?: number; cpuMax?: number };
  /** Raise of each job's oom_score_adj over the keeper's own, 0..1000 (0: left alone). */
  jobOomScoreAdj: number;
  /** LEASE_KEEPER_JOB_OUTPUT: `auto` (default), `inherit`, `prefix` (lines with the work id in front), `journal`. */
  jobOutput: JobOutputSetting;
  /** The job command and its arguments (after `--`). Empty for `config`. */
  command: string[];
}
