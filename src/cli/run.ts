import { WorkApi } from '../api/client.js';
import { TokenCredential, formatProblems, loadConfig, type CredentialEvents, type TokenReload } from '../config/index.js';
import type { Config } from '../config/types.js';
import { JobOutput, openContainment, resolveCommand, resolveJobOutputMode, type Containment } from '../job/index.js';
import { monotonicClock } from '../lease/clock.js';
import type { LeaseSettings } from '../lease/machine.js';
import { EXIT } from '../lease/outcome.js';
import { createLogger, type Logger } from '../observe/logger.js';
import { startObservability } from '../observe/systemd.js';
import { Worker } from '../worker/loop.js';
import type { CliIO } from './io.js';

/** `lease-keeper run [options] -- <command> [args...]`: resolves to the process exit code (spec §6). */
export async function runCommand(flags: Record<string, unknown>, command: string[], io: CliIO): Promise<number> {
  const loaded = loadConfig({ env: io.env, flags, command, requireCommand: true });
  if (!loaded.ok) {
    io.stderr.write(`${formatProblems(loaded.problems)}\n`);
    return EXIT.config;
  }
  const config = loaded.config;
  // An unrunnable job would otherwise claim (and stop) item after item: refuse before polling.
  const resolved = resolveCommand(config.command[0]!, io.env);
  if (!resolved.ok) {
    io.stderr.write(`${formatProblems([resolved.message])}\n`);
    return EXIT.config;
  }

  // Created first: its `held` list is what every scrubber and the job's environment follow as tokens rotate.
  const reloads: CredentialEvents = { reloaded: () => {} };
  const credential = new TokenCredential(config.token, config.tokenSource, config.tokenPath, reloads);
  const log = createLogger({
    level: config.logLevel,
    format: config.logFormat,
    secrets: credential.held,
    journal: Boolean(io.env.JOURNAL_STREAM),
    ...(io.stdout === process.stdout ? {} : { destination: io.stdout }),
    base: { worker_id: config.workerId },
  });
  reloads.reloaded = reloadLogger(log, config.tokenSource);
  // Before READY=1 and the first poll: under systemd the keeper moves itself into its leaf cgroup here.
  const opened = openContainment({ mode: config.containment, workerId: config.workerId, limits: config.jobLimits, oomScoreAdj: config.jobOomScoreAdj });
  if (!opened.ok) {
    io.stderr.write(`${formatProblems(opened.problems)}\n`);
    return EXIT.config;
  }
  return keep(config, credential, log, io, opened.containment);
}

/** Ends what an earlier, dead keeper with our worker id left running: one log line per job. */
async function sweep(containment: Containment, log: Logger): Promise<void> {
  try {
    for (const job of await containment.sweep()) {
      log.warn({ work_id: job.workId, keeper_pid: job.keeperPid, where: job.where, processes: job.processes }, 'swept_job: killed what a dead keeper left of this job');
    }
  } catch (err) {
    log.error({ err }, 'sweep_failed');
  }
}

/** Refusals after a 401/403 come in bursts (every lease at once): one line per problem a minute is enough. */
const REFUSAL_LOG_EVERY_MS = 60_000;

/** What a token re-read found, in the log. Never the token: only the source and the problem. */
function reloadLogger(log: Logger, source: string): CredentialEvents['reloaded'] {
  const lastRefusalLog = new Map<string, number>();
  return (trigger, outcome) => logReload(log, trigger, outcome, source, lastRefusalLog);
}

function logReload(log: Logger, trigger: 'auth' | 'sighup', outcome: TokenReload, source: string, lastRefusalLog: Map<string, number>): void {
  switch (outcome.result) {
    case 'rotated':
      log.info({ trigger, source }, 'token_rotated');
      return;
    case 'unchanged':
      if (trigger === 'sighup') log.info({ trigger, source }, 'token_unchanged');
      else log.debug({ trigger, source }, 'token_unchanged');
      return;
    case 'not_reloadable':
      if (trigger === 'sighup') log.warn({ trigger, source, problem: outcome.problem }, 'token_not_reloadable');
      return;
    case 'refused': {
      const now = Date.now();
      const last = lastRefusalLog.get(outcome.problem);
      if (trigger === 'auth' && last !== undefined && now - last < REFUSAL_LOG_EVERY_MS) return;
      lastRefusalLog.set(outcome.problem, now);
      log.error({ trigger, source, problem: outcome.problem }, 'token_refused');
      return;
    }
  }
}

function leaseSettings(config: Config): LeaseSettings {
  return {
    desiredTtlSeconds: config.ttlSeconds,
    heartbeatFraction: config.heartbeatFraction,
    stopSignal: config.stopSignal,
    graceMs: config.stopGraceSeconds * 1000,
    fenceMarginMs: config.fenceMarginMs,
    onShutdown: config.onShutdown,
    workerId: config.workerId,
  };
}

async function keep(config: Config, credential: TokenCredential, log: Logger, io: CliIO, containment: Containment): Promise<number> {
  const api = new WorkApi({ apiUrl: config.apiUrl, token: credential, environmentId: config.environmentId });
  let worker: Worker | null = null;
  const snapshot = () =>
    worker?.snapshot() ?? { workerId: config.workerId, ready: false, draining: false, leases: [], pollFailingSinceMs: null, containment: containment.kind };

  const output = new JobOutput({
    mode: resolveJobOutputMode(config.jobOutput, io.env),
    // A test seam only (documented as such): where journald's stdout socket is. Production leaves it unset.
    journalSocket: io.env.LEASE_KEEPER_JOURNAL_SOCKET || undefined,
    ...(io.stdout === process.stdout ? {} : { stdout: io.stdout, stderr: io.stderr }),
    onJournalUnavailable: (err, socket) =>
      log.warn({ err, socket }, "job_output_journal_unavailable: jobs inherit the keeper's stdout and stderr instead of their own journal streams"),
  });

  let observe;
  try {
    observe = await startObservability({ env: io.env, config, snapshot, log });
  } catch (err) {
    log.fatal({ err, status_addr: config.statusAddr }, 'status_listener_failed');
    io.stderr.write(`lease-keeper: cannot listen on LEASE_KEEPER_STATUS_ADDR: ${(err as Error).message}; pick a free port or unset it\n`);
    await api.close();
    return EXIT.config;
  }

  worker = new Worker({
    api,
    settings: leaseSettings(config),
    workerId: config.workerId,
    command: config.command,
    tokens: credential.held,
    concurrency: config.concurrency,
    once: config.once,
    baseEnv: io.env,
    log,
    clock: monotonicClock,
    events: observe.events,
    containment,
    output,
    onReady: () => observe.systemd.refresh(),
  });
  log.info(
    {
      api_url: config.apiUrl,
      environment_id: config.environmentId,
      concurrency: config.concurrency,
      ttl_seconds: config.ttlSeconds,
      once: config.once,
      command: config.command[0],
      job_output: output.mode,
      status_url: observe.statusUrl,
      containment: containment.kind,
      ...containment.detail,
    },
    'starting',
  );
  await sweep(containment, log);

  // drain: the first SIGTERM/SIGINT drains, the second kills the job groups and exits at once.
  // finish: the first lets running jobs end by themselves, the second drains, the third kills.
  const steps = config.shutdown === 'finish' ? (['finish', 'drain', 'kill'] as const) : (['drain', 'kill'] as const);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals += 1;
    const step = steps[Math.min(signals, steps.length) - 1]!;
    log.info({ signal, count: signals, step }, 'signal_received');
    if (step === 'finish') worker!.finish();
    else if (step === 'drain') worker!.shutdown();
    else worker!.shutdownNow(signal);
    if (step !== 'kill') observe.systemd.refresh();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // SIGHUP (systemctl reload): re-read the token source; the next call sends the new token. Kept to the
  // end: a reload that races with the exit must not end the keeper by SIGHUP's default action (exit 129).
  process.on('SIGHUP', () => void credential.reload('sighup'));

  // Node exits 0 by itself when nothing is left on the event loop. While the worker has not finished,
  // that can only be a bug (an item with nothing left to move it): say so, and exit 70, never 0.
  const onEmptyLoop = (): void => {
    log.fatal({ snapshot: worker!.snapshot() }, 'internal_error: the worker stalled with nothing left to do; please report this');
    process.exit(EXIT.software);
  };
  process.on('beforeExit', onEmptyLoop);

  const result = await worker.run();
  process.off('beforeExit', onEmptyLoop);
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  log.info({ exit_code: result.exitCode, reason: result.reason, outcome: result.lastItem?.outcome ?? null }, 'exiting');
  if (result.reason !== 'shutdown_now') {
    containment.close();
    // What the last jobs wrote (prefix mode) must reach the keeper's stdout before process.exit() drops it.
    await output.flush(2_000);
    await observe.close();
    await api.close();
  }
  return result.exitCode;
}
