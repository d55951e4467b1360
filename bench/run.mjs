// The benchmarks of lease-keeper (issue 6). Every measured keeper is the real `bin/lease-keeper run`
// (compiled dist/) in its own process; the emulator runs in another process, so its CPU is not counted.
//
//   npm run bench                 full run (a few minutes), writes bench/results/latest.json
//   npm run bench -- --quick      the same benchmarks, shorter (< 60 s), writes bench/results/quick.json
//   options: --only startup,idle,fence,scale,baseline,lateness,reaction   --out <file>   --hold <s>
//            --wait-quiet   wait for an otherwise idle machine before each benchmark, re-run disturbed ones
//            --perf         `perf record` the scale keeper, the baseline and a reaction keeper (needs perf)
//            --profile      the scale keeper under node --cpu-prof; top self-time frames of the hold window
//            --keep-logs    keep the keepers' logs, job records and emulator events (path printed)
//   Profiled runs write bench/results/profile.json instead (profilers cost CPU themselves).
//
// See bench/README.md for what each figure means and how it is measured.
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import {
  ROOT,
  cpuMeter,
  cpuSeconds,
  logMs,
  machine,
  memoryMb,
  percentile,
  round,
  busyPct,
  loadavg,
  ourCpuSeconds,
  systemCpu,
  foreignMeter,
  distStamp,
  gitState,
  snapshotBuild,
  track,
  sleep,
  spawnKeeper,
  startEmulatorProcess,
  stopAllKeepers,
  summary,
  waitUntil,
} from './lib.mjs';
import { parsePerfScript, perfSummary, printPerfSummary } from './perf-report.mjs';
import { topFrames } from './profile-top.mjs';

const args = process.argv.slice(2);
const flag = (name) => args.includes(`--${name}`);
const opt = (name) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const QUICK = flag('quick');
const PROFILE = flag('profile');
const PERF = flag('perf');
const ONLY = opt('only')?.split(',') ?? null;
// Profiled runs (their CPU figures include the profilers' overhead) never overwrite the results.
const OUT = opt('out') ?? join(ROOT, 'bench/results', PROFILE || PERF ? 'profile.json' : QUICK ? 'quick.json' : 'latest.json');
const run = (name) => ONLY === null || ONLY.includes(name);

/** Durations and sizes per mode. ttl 10 s (granted) everywhere, as the issue asks for the scale run. */
const P = QUICK
  ? { startupTrials: 3, idleS: 5, scaleItems: 1000, holdS: 5, timingHoldS: 5, reactionKeepers: 4, reactionPerKeeper: 30, reactionRate: 40, fenceKeepers: 2 }
  : { startupTrials: 10, idleS: 60, scaleItems: 1000, holdS: 60, timingHoldS: 30, reactionKeepers: 4, reactionPerKeeper: 75, reactionRate: 10, fenceKeepers: 8 };
if (opt('hold') !== undefined) P.holdS = P.timingHoldS = Number(opt('hold')); // experiments: a shorter or longer hold
const TTL_S = 10;
// JS frame names for perf; code is never moved or flushed, so an address in the map names one function.
const PERF_NODE_ARGS = ['--perf-basic-prof', '--no-compact-code-space', '--no-flush-bytecode'];
const JOB = join(ROOT, 'bench/jobs/trap-job.sh');
const WORK = join(tmpdir(), `lease-keeper-bench-${process.pid}`);
const PROFILE_DIR = join(ROOT, 'bench/results/profiles');
mkdirSync(WORK, { recursive: true });

const log = (...a) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 23)}] ${a.join(' ')}\n`);
const readRecord = (file) =>
  existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => {
          const [kind, workId, t, extra] = l.split(' ');
          return { kind, workId, ms: Number(t.replace(',', '.')) * 1000, extra };
        })
    : [];

// ------------------------------------------------------------------------------------------ startup

/** From the spawn of `bin/lease-keeper run` to its first poll arriving at the emulator. */
async function benchStartup(emu) {
  const trials = [];
  for (let i = 0; i < P.startupTrials; i++) {
    const since = await emu.admin.lastSeq();
    const workerId = `bench-startup-${i}`;
    const k = spawnKeeper(emu, { workerId, command: ['sleep', '3600'], logFile: join(WORK, `startup-${i}.log`) });
    // The empty long poll is logged when it ends (after block_ms); its arrival is t_ms - waited_ms.
    // Looking only after ~1 s keeps the driver from competing with the starting keeper for a core.
    await sleep(1200);
    const ev = await waitUntil(
      async () => (await emu.admin.events(since)).find((e) => (e.type === 'poll_empty' || e.type === 'poll_delivered') && e.worker_id === workerId),
      { timeoutMs: 15_000, everyMs: 200, what: 'the first poll' },
    );
    const arrival = ev.type === 'poll_empty' ? ev.t_ms - ev.waited_ms : ev.t_ms;
    trials.push(arrival - k.spawnedAt);
    await k.stop();
  }
  log(`startup: ${trials.join(', ')} ms`);
  return { startup_ms: round(percentile(trials, 50), 0), startup: { trials_ms: trials, p50: round(percentile(trials, 50), 0), max: Math.max(...trials) } };
}

// ------------------------------------------------------------------------------------------ idle

/** One keeper polling an empty queue: CPU over the window, RSS. */
async function benchIdle(emu) {
  const since = await emu.admin.lastSeq();
  const k = spawnKeeper(emu, { workerId: 'bench-idle', command: ['sleep', '3600'], logFile: join(WORK, 'idle.log') });
  await waitUntil(async () => (await emu.admin.events(since)).some((e) => e.worker_id === 'bench-idle'), {
    timeoutMs: 15_000,
    everyMs: 250,
    what: 'the idle keeper to poll',
  });
  await sleep(1000); // past startup (module loading, JIT warm-up)
  const meter = cpuMeter(k.pid);
  await sleep(P.idleS * 1000);
  const cpu = meter.read();
  const mem = memoryMb(k.pid);
  const polls = (await emu.admin.events(since)).filter((e) => e.worker_id === 'bench-idle' && e.type === 'poll_empty').length;
  await k.stop();
  log(`idle: cpu ${cpu.pct.toFixed(3)} % over ${cpu.wallSeconds.toFixed(1)} s, rss peak ${mem.hwm.toFixed(1)} MB, now ${mem.rss.toFixed(1)} MB`);
  return {
    idle: {
      rss_mb: round(mem.hwm, 1),
      cpu_pct: round(cpu.pct, 3),
      rss_end_mb: round(mem.rss, 1),
      cpu_seconds: round(cpu.cpuSeconds, 2),
      cpu_user_s: round(cpu.userSeconds, 2),
      cpu_sys_s: round(cpu.sysSeconds, 2),
      cpu_threads_s: cpu.threads,
      window_s: round(cpu.wallSeconds, 1),
      polls,
    },
  };
}

// ------------------------------------------------------------------------------------------ scale

/**
 * One keeper, concurrency 1000, 1000 queued items, job `sleep 3600`, granted ttl 10 s. Claim everything,
 * then hold for holdS: keeper CPU and peak RSS over the hold, expired leases, and (debug runs) heartbeat lateness.
 */
async function benchScale(emu, { logLevel = 'info', holdS = P.holdS, label = 'scale' } = {}) {
  const since = await emu.admin.lastSeq();
  await emu.admin.queue(P.scaleItems);
  const profiling = PROFILE && label === 'scale';
  if (profiling) rmSync(PROFILE_DIR, { recursive: true, force: true });
  const k = spawnKeeper(emu, {
    workerId: 'bench-scale',
    concurrency: P.scaleItems,
    command: ['sleep', '3600'],
    logFile: join(WORK, `${label}.log`),
    env: { LEASE_KEEPER_LOG_LEVEL: logLevel },
    ...(profiling ? { nodeArgs: ['--cpu-prof', '--cpu-prof-interval=97', `--cpu-prof-dir=${PROFILE_DIR}`] } : PERF && label === 'scale' ? { nodeArgs: PERF_NODE_ARGS } : {}),
  });
  await waitUntil(
    () => {
      k.tail.poll();
      if (!k.alive()) throw new Error(`scale keeper exited early; see ${k.logFile}`);
      return k.tail.count('job_started') >= P.scaleItems;
    },
    { timeoutMs: 120_000, everyMs: 100, what: `${P.scaleItems} jobs started` },
  );
  const holdStart = Date.now();
  log(`${label}: ${P.scaleItems} leases held and jobs started ${((holdStart - k.spawnedAt) / 1000).toFixed(2)} s after spawn; holding ${holdS} s (log level ${logLevel})`);
  const meter = cpuMeter(k.pid);
  const emuMeter = cpuMeter(emu.pid);
  const foreign = foreignMeter();
  const perf = PERF && label === 'scale' ? perfRecord(k.pid, holdS, 'scale') : null;
  await sleep(holdS * 1000);
  const cpu = meter.read();
  const emuCpu = emuMeter.read();
  const foreignPct = foreign.read();
  if (perf) printPerf('scale keeper, hold window', await perf, k.pid);
  const mem = memoryMb(k.pid);
  const holdEnd = Date.now();
  await sleep(500); // let beats planned just before holdEnd arrive
  const events = await emu.admin.events(since);
  const cpuTotal = cpuSeconds(k.pid);
  await k.stop();
  k.tail.poll();

  const accepted = events.filter((e) => e.type === 'heartbeat_accepted');
  const firstLease = new Map();
  for (const e of accepted) if (e.new_lease && !firstLease.has(e.work_id)) firstLease.set(e.work_id, e.t_ms);
  const firstPoll = events.find((e) => (e.type === 'poll_delivered' || e.type === 'poll_empty') && e.worker_id === 'bench-scale');
  const claimAllMs = Math.max(...firstLease.values()) - k.spawnedAt;
  const jobStarted = k.tail.lines.filter((l) => l.msg === 'job_started').map(logMs);
  const beatsInHold = accepted.filter((e) => !e.new_lease && e.t_ms >= holdStart && e.t_ms < holdEnd).length;
  const expired = events.filter((e) => e.type === 'lease_expired' && e.t_ms <= holdEnd).length;
  const rejected = events.filter((e) => e.type === 'heartbeat_rejected' && e.t_ms <= holdEnd).length;
  // Only a debug run logs the plan of every beat (computeLateness); at info there is nothing to measure.
  let latenessOut = {};
  let latenessLog = '';
  if (logLevel === 'debug') {
    const lateness = computeLateness(k.tail.lines, accepted, holdEnd);
    const all = lateness.map((l) => l.ms);
    latenessOut = {
      lateness_ms: pick(summary(all, 1), ['p50', 'p99', 'max']),
      lateness_samples: all.length,
      lateness_hold_ms: summary(lateness.filter((l) => l.planned >= holdStart).map((l) => l.ms), 1),
      lateness_claim_ms: summary(lateness.filter((l) => l.planned < holdStart).map((l) => l.ms), 1),
    };
    latenessLog = `, lateness p99 ${percentile(all, 99)} ms (${all.length} samples)`;
  }

  let profile = null;
  if (profiling) {
    const file = readdirSync(PROFILE_DIR).find((f) => f.endsWith('.cpuprofile'));
    if (file) {
      // The profile starts when the process does (≈ spawn); the hold window in ms after that.
      const path = join(PROFILE_DIR, file);
      profile = { file: path, hold: topFrames(path, { fromMs: holdStart - k.spawnedAt, toMs: holdEnd - k.spawnedAt, top: 30 }), whole: topFrames(path, { top: 30 }) };
    }
  }
  log(`${label}: cpu ${cpu.pct.toFixed(2)} %, rss peak ${mem.hwm.toFixed(1)} MB, ${beatsInHold} beats in the hold, expired ${expired}${latenessLog}`);
  return {
    scale: {
      leases: firstLease.size,
      cpu_pct: round(cpu.pct, 2),
      rss_mb: round(mem.hwm, 1),
      ...latenessOut,
      expired,
      claim_all_s: round(claimAllMs / 1000, 2),
      // extra detail
      hold_s: round(cpu.wallSeconds, 1),
      foreign_busy_pct: round(foreignPct, 1),
      cpu_seconds: round(cpu.cpuSeconds, 2),
      cpu_user_s: round(cpu.userSeconds, 2),
      cpu_sys_s: round(cpu.sysSeconds, 2),
      cpu_threads_s: cpu.threads,
      cpu_seconds_total: round(cpuTotal, 2),
      rss_end_mb: round(mem.rss, 1),
      heartbeats_in_hold: beatsInHold,
      heartbeats_per_s: round(beatsInHold / cpu.wallSeconds, 1),
      rejected,
      first_poll_ms: firstPoll ? firstPoll.t_ms - k.spawnedAt : null,
      claim_from_first_poll_s: firstPoll ? round((Math.max(...firstLease.values()) - firstPoll.t_ms) / 1000, 2) : null,
      jobs_started_all_s: round((Math.max(...jobStarted) - k.spawnedAt) / 1000, 2),
    },
    _scaleWindow: { beatsInHold, cpuSeconds: cpu.cpuSeconds, wallSeconds: cpu.wallSeconds, foreignPct, emulatorCpuSeconds: emuCpu.cpuSeconds },
    ...(profile ? { _profile: profile } : {}),
  };
}

/**
 * Lateness of each heartbeat = its arrival at the emulator (the `heartbeat_accepted` t_ms) minus the
 * time the keeper planned to send it. The keeper logs every accepted reply (`lease_acquired` /
 * `heartbeat`, pino `time`) with `next_in_ms` = planned next send - now and the `last_heartbeat` it
 * will carry; the next beat is the emulator event whose `expected` is that `last_heartbeat`.
 */
function computeLateness(lines, accepted, holdEnd) {
  const planned = new Map();
  for (const l of lines) {
    if ((l.msg === 'heartbeat' || l.msg === 'lease_acquired') && typeof l.next_in_ms === 'number') {
      planned.set(`${l.work_id} ${l.last_heartbeat}`, logMs(l) + l.next_in_ms);
    }
  }
  const out = [];
  for (const e of accepted) {
    if (e.expected === 'NO_HEARTBEAT' || e.expected === undefined) continue;
    const p = planned.get(`${e.work_id} ${e.expected}`);
    if (p === undefined || p > holdEnd) continue;
    out.push({ planned: p, ms: e.t_ms - p });
  }
  return out;
}

const pick = (o, keys) => Object.fromEntries(keys.map((k) => [k, o[k]]));

// ------------------------------------------------------------------------------------------ baseline

/**
 * A bare undici loop (bench/baseline.mjs) in its own process: the same 1000 items acked first, then
 * exactly as many heartbeats as the keeper sent during its hold, at the same rate, to the same emulator.
 */
async function benchBaseline(emu, window) {
  await emu.admin.reset();
  await emu.admin.queue(P.scaleItems);
  const count = window.beatsInHold;
  const intervalMs = Math.round((P.scaleItems * window.wallSeconds * 1000) / count);
  const child = spawn(process.execPath, [...(PERF ? PERF_NODE_ARGS : []), join(ROOT, 'bench/baseline.mjs'), emu.url, emu.token, emu.environmentId, String(P.scaleItems)], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { PATH: process.env.PATH, HOME: process.env.HOME },
  });
  track(child.pid);
  const lines = createInterface({ input: child.stdout });
  const next = () => new Promise((r) => lines.once('line', (l) => r(JSON.parse(l))));
  child.stdin.write(`${intervalMs}\n`);
  const ready = await next();
  if (!ready.ready) throw new Error('baseline did not get ready');
  await sleep(500); // leave the prep (acks) behind
  const meter = cpuMeter(child.pid);
  const emuMeter = cpuMeter(emu.pid);
  const foreign = foreignMeter();
  const done = next();
  const perf = PERF ? perfRecord(child.pid, window.wallSeconds, 'baseline') : null;
  child.stdin.write(`go ${count}\n`);
  const result = await done;
  const cpu = meter.read();
  const emuCpu = emuMeter.read();
  const foreignPct = foreign.read();
  if (perf) printPerf('baseline, heartbeat window', await perf, child.pid);
  const mem = memoryMb(child.pid);
  child.kill('SIGKILL');
  const perBeatKeeper = window.cpuSeconds / window.beatsInHold;
  const perBeatBase = cpu.cpuSeconds / result.sent;
  log(`baseline: ${result.sent} beats in ${cpu.wallSeconds.toFixed(1)} s, cpu ${cpu.pct.toFixed(2)} %, ratio ${(perBeatKeeper / perBeatBase).toFixed(2)}`);
  return {
    baseline: {
      cpu_pct: round(cpu.pct, 2),
      cpu_per_heartbeat_ratio: round(perBeatKeeper / perBeatBase, 2),
      heartbeats: result.sent,
      failures: result.failures,
      window_s: round(cpu.wallSeconds, 1),
      foreign_busy_pct: round(foreignPct, 1),
      interval_ms: intervalMs,
      cpu_seconds: round(cpu.cpuSeconds, 2),
      cpu_user_s: round(cpu.userSeconds, 2),
      cpu_sys_s: round(cpu.sysSeconds, 2),
      cpu_threads_s: cpu.threads,
      rss_mb: round(mem.hwm, 1),
      cpu_us_per_heartbeat: round(perBeatBase * 1e6, 0),
      keeper_cpu_us_per_heartbeat: round(perBeatKeeper * 1e6, 0),
      // Control: the emulator does the same work per beat in both windows, so its cost per beat shows
      // whether the machine ran at the same speed during the two.
      emulator_cpu_us_per_heartbeat: { keeper_window: round((window.emulatorCpuSeconds / window.beatsInHold) * 1e6, 0), baseline_window: round((emuCpu.cpuSeconds / result.sent) * 1e6, 0) },
    },
  };
}

// ------------------------------------------------------------------------------------------ reaction

/**
 * From the arrival of a 412 / 409 / `stopping` reply to the job's TERM trap. Several keepers, each holding
 * items whose job is bench/jobs/trap-job.sh; each item gets one of: a graceful stop (next heartbeat
 * answers `stopping`), a takeover (412) or a forced stop (409). "Arrival" is the emulator's event time of
 * that heartbeat (the reply leaves right after it): reaction = trap time - event time, same clock.
 *
 * `triggersPerS`: the stops/takeovers are spread at this rate (steady churn); null = all at once (a mass
 * stop: every job exits within one heartbeat interval, and each exit costs its keeper work meanwhile).
 */
async function benchReaction(emu, { label, triggersPerS }) {
  const n = P.reactionKeepers * P.reactionPerKeeper;
  const record = join(WORK, `reaction-${label}.rec`);
  rmSync(record, { force: true });
  await emu.admin.queue(n);
  const keepers = Array.from({ length: P.reactionKeepers }, (_, i) =>
    spawnKeeper(emu, {
      workerId: `bench-reaction-${label}-${i}`,
      concurrency: P.reactionPerKeeper,
      command: [JOB],
      logFile: join(WORK, `reaction-${label}-${i}.log`),
      env: { BENCH_RECORD: record, LEASE_KEEPER_STOP_GRACE_SECONDS: '5' },
      ...(PERF ? { nodeArgs: PERF_NODE_ARGS } : {}),
    }),
  );
  await waitUntil(() => readRecord(record).filter((r) => r.kind === 'start').length >= n, { timeoutMs: 60_000, everyMs: 100, what: `${n} reaction jobs` });
  await sleep(500);
  const items = [...new Set(readRecord(record).filter((r) => r.kind === 'start').map((r) => r.workId))];
  const triggerSeq = await emu.admin.lastSeq();
  const kinds = ['stopping', '412', '409'];
  const kindOf = new Map();
  const t0 = performance.now();
  const perf = PERF ? perfRecord(keepers[0].pid, (triggersPerS === null ? 0 : n / triggersPerS) + 4, `reaction-${label}`) : null;
  for (const [i, id] of items.entries()) {
    if (triggersPerS !== null) {
      const due = t0 + (i * 1000) / triggersPerS - performance.now();
      if (due > 0) await sleep(due);
    }
    const kind = kinds[i % 3];
    kindOf.set(id, kind);
    if (kind === 'stopping') await emu.admin.stop(id, false);
    else if (kind === '412') await emu.admin.takeover(id);
    else await emu.admin.stop(id, true);
  }
  await waitUntil(() => readRecord(record).filter((r) => r.kind === 'term').length >= items.length, {
    timeoutMs: 30_000,
    everyMs: 100,
    what: 'every job to get its TERM',
  }).catch((err) => log(`reaction: ${err.message}`));
  if (perf) printPerf(`reaction keeper 0 (${label}), while its jobs are stopped`, await perf, keepers[0].pid);
  const events = await emu.admin.events(triggerSeq);
  if (flag('keep-logs')) writeFileSync(join(WORK, `reaction-${label}-events.json`), JSON.stringify(events));
  const terms = new Map(readRecord(record).filter((r) => r.kind === 'term').map((r) => [r.workId, r.ms]));
  const samples = [];
  const byKind = { stopping: [], 412: [], 409: [] };
  let missing = 0;
  for (const id of items) {
    const kind = kindOf.get(id);
    const ev = events.find(
      (e) =>
        e.work_id === id &&
        (kind === 'stopping'
          ? e.type === 'heartbeat_accepted' && e.state === 'stopping'
          : e.type === 'heartbeat_rejected' && e.status === Number(kind)),
    );
    const term = terms.get(id);
    if (!ev || term === undefined) {
      missing++;
      continue;
    }
    samples.push(term - ev.t_ms);
    byKind[kind].push(term - ev.t_ms);
  }
  await Promise.all(keepers.map((k) => k.stop({ drainMs: 2000 })));
  const s = summary(samples, 2);
  log(`reaction (${label}): ${samples.length} trials, p50 ${s.p50} ms, p99 ${s.p99} ms, max ${s.max} ms, missing ${missing}`);
  return {
    p50: s.p50,
    p99: s.p99,
    max: s.max,
    trials: samples.length,
    missing,
    triggers_per_s: triggersPerS,
    by_reply: Object.fromEntries(Object.entries(byKind).map(([k, v]) => [k, pick(summary(v, 2), ['n', 'p50', 'p99', 'max'])])),
    keepers: P.reactionKeepers,
    items_per_keeper: P.reactionPerKeeper,
  };
}

// ------------------------------------------------------------------------------------------ fence

/**
 * Hang every heartbeat of a held item (fault `hang`, times 0): the keeper self-fences. Margin = the
 * server's lease deadline (`lease_expires_at_ms` of the last accepted heartbeat) minus the moment the
 * job's whole group was dead, as recorded by the job's death watcher (bench/jobs/trap-job.sh,
 * BENCH_DEATH_WATCH). Also reported: the same against the keeper's `job_exited` line (when the keeper
 * itself saw the group gone). One job in four exits on TERM; the others ignore it and need the SIGKILL.
 */
/** Every fourth fence job exits on TERM; the others ignore it (the SIGKILL path decides the margin). */
const ignoresTerm = (i) => i % 4 !== 0;

async function benchFence(emu) {
  const since = await emu.admin.lastSeq();
  const recOf = (i) => join(WORK, `fence-${i}.rec`);
  for (let i = 0; i < P.fenceKeepers; i++) rmSync(recOf(i), { force: true });
  const keepers = Array.from({ length: P.fenceKeepers }, (_, i) =>
    spawnKeeper(emu, {
      workerId: `bench-fence-${i}`,
      command: [JOB],
      logFile: join(WORK, `fence-${i}.log`),
      env: { BENCH_RECORD: recOf(i), BENCH_DEATH_WATCH: '1', JOB_IGNORE_TERM: ignoresTerm(i) ? '1' : '0' },
    }),
  );
  await emu.admin.queue(P.fenceKeepers);
  const started = await waitUntil(
    () => {
      const recs = keepers.map((_, i) => readRecord(recOf(i)).find((r) => r.kind === 'start'));
      return recs.every(Boolean) ? recs : null;
    },
    { timeoutMs: 30_000, everyMs: 100, what: 'the fence jobs to start' },
  );
  for (const r of started) await emu.admin.fault({ endpoint: 'heartbeat', kind: 'hang', times: 0, work_id: r.workId });
  await waitUntil(
    () =>
      keepers.every((k, i) => {
        k.tail.poll();
        return k.tail.count('job_exited') >= 1 && readRecord(recOf(i)).some((r) => r.kind === 'dead');
      }),
    { timeoutMs: TTL_S * 1000 + 15_000, everyMs: 50, what: 'every fenced job to exit' },
  );
  await sleep(500);
  const events = await emu.admin.events(since);
  const trials = [];
  for (const [i, k] of keepers.entries()) {
    const workId = started[i].workId;
    const deadline = events.filter((e) => e.type === 'heartbeat_accepted' && e.work_id === workId).pop().lease_expires_at_ms;
    const exited = k.tail.lines.find((l) => l.msg === 'job_exited' && l.work_id === workId);
    const fenced = k.tail.lines.filter((l) => l.msg === 'fenced' && l.work_id === workId);
    const rec = readRecord(recOf(i));
    const term = rec.find((r) => r.kind === 'term');
    const dead = rec.find((r) => r.kind === 'dead');
    const expiredEv = events.find((e) => e.type === 'lease_expired' && e.work_id === workId);
    trials.push({
      job: ignoresTerm(i) ? 'ignores_term' : 'exits_on_term',
      margin_ms: round(deadline - dead.ms, 2),
      margin_keeper_saw_ms: deadline - logMs(exited),
      term_before_deadline_ms: term ? round(deadline - term.ms, 1) : null,
      configured_margin_ms: fenced[0]?.margin_ms ?? null,
      steps: fenced.map((f) => f.step),
      server_expired_after_death: expiredEv ? expiredEv.t_ms > dead.ms : null,
    });
  }
  await emu.admin.clearFaults();
  await Promise.all(keepers.map((k) => k.stop()));
  const margins = trials.map((t) => t.margin_ms);
  const configured = trials.find((t) => t.configured_margin_ms !== null)?.configured_margin_ms ?? null;
  log(`fence: margins ${margins.join(', ')} ms (configured ${configured}); as the keeper saw it ${trials.map((t) => t.margin_keeper_saw_ms).join(', ')}`);
  return {
    fence_margin_ms: {
      min: Math.min(...margins),
      configured,
      max: Math.max(...margins),
      min_keeper_saw: Math.min(...trials.map((t) => t.margin_keeper_saw_ms)),
      trials,
    },
  };
}

// ------------------------------------------------------------------------------------------ perf

/**
 * `perf record -g` of one process for `seconds` (needs perf and the process started with
 * --perf-basic-prof for JS names); resolves to the text of `perf script`.
 */
function perfRecord(pid, seconds, name) {
  const data = join(WORK, `${name}.perf.data`);
  return new Promise((resolve, reject) => {
    const rec = spawn('perf', ['record', '-F', '999', '-g', '-p', String(pid), '-o', data, '--', 'sleep', String(Math.max(1, Math.round(seconds)))], {
      stdio: ['ignore', 'ignore', 'ignore'],
    });
    rec.once('error', reject);
    rec.once('exit', () => {
      const script = spawn('perf', ['script', '-i', data], { stdio: ['ignore', 'pipe', 'ignore'] });
      let text = '';
      script.stdout.on('data', (c) => (text += c));
      script.once('exit', () => {
        writeFileSync(join(WORK, `${name}.perf.txt`), text); // kept with --keep-logs
        resolve(text);
      });
      script.once('error', reject);
    });
  });
}

function printPerf(title, text, pid) {
  console.log(`\n==== perf: ${title}`);
  printPerfSummary(perfSummary(parsePerfScript(text), { pid, top: 25 }));
}

// ------------------------------------------------------------------------------------------ main

const TARGETS = [
  ['scale.cpu_pct', (r) => r.scale?.cpu_pct, '<=', 10],
  ['scale.rss_mb', (r) => r.scale?.rss_mb, '<=', 150],
  ['scale.lateness_ms.p99', (r) => r.scale?.lateness_ms?.p99, '<=', 20],
  ['scale.expired', (r) => r.scale?.expired, '==', 0],
  ['scale.claim_all_s', (r) => r.scale?.claim_all_s, '<=', 10],
  ['baseline.cpu_per_heartbeat_ratio', (r) => r.baseline?.cpu_per_heartbeat_ratio, '<=', 1.5],
  ['reaction_ms.p99', (r) => r.reaction_ms?.p99, '<=', 10],
  ['fence_margin_ms.min', (r) => r.fence_margin_ms?.min, '>=', (r) => r.fence_margin_ms?.configured],
  ['idle.rss_mb', (r) => r.idle?.rss_mb, '<=', 60],
  ['idle.cpu_pct', (r) => r.idle?.cpu_pct, '<=', 0.5],
  ['startup_ms', (r) => r.startup_ms, '<=', 300],
];

function evaluate(r) {
  const out = {};
  for (const [name, get, op, t] of TARGETS) {
    const value = get(r);
    const target = typeof t === 'function' ? t(r) : t;
    if (value === undefined || value === null || target === undefined || target === null) continue;
    const met = op === '<=' ? value <= target : op === '>=' ? value >= target : value === target;
    out[name] = { value, target: `${op} ${target}`, met };
  }
  return out;
}

function printTable(r, targets) {
  const rows = Object.entries(targets).map(([name, t]) => [name, String(t.value), t.target, t.met ? 'met' : 'MISSED']);
  if (r.baseline) rows.push(['baseline.cpu_pct', String(r.baseline.cpu_pct), '(info)', '']);
  if (r.reaction_ms) rows.push(['reaction_ms.p50', String(r.reaction_ms.p50), '(info)', '']);
  if (r.scale?.lateness_ms) rows.push(['scale.lateness_ms.p50 / max', `${r.scale.lateness_ms.p50} / ${r.scale.lateness_ms.max}`, '(info)', '']);
  const w = [0, 1, 2, 3].map((i) => Math.max(...rows.map((x) => x[i].length), ['benchmark', 'value', 'target', ''][i].length));
  const line = (x) => x.map((c, i) => c.padEnd(w[i])).join('  ');
  console.log(`\nlease-keeper benchmarks (${r.mode}) on ${r.cores} cores, ${r.cpu_model}, node ${r.node}`);
  console.log(line(['benchmark', 'value', 'target', '']));
  console.log(line(w.map((n) => '-'.repeat(n))));
  for (const x of rows) console.log(line(x));
}

/**
 * The machine must be otherwise quiet: every timing figure (lateness, reaction, fence, startup, claim)
 * suffers when other work competes for the cores. Samples the whole machine for 1-2 s; with --wait-quiet
 * waits (up to 10 min) until it is under 10 % busy.
 */
async function checkQuiet() {
  const deadline = performance.now() + (flag('wait-quiet') ? 600_000 : 0);
  for (;;) {
    const a = systemCpu();
    await sleep(QUICK ? 1000 : 2000);
    const pct = busyPct(a, systemCpu());
    if (pct < 10) return pct;
    if (performance.now() > deadline) {
      log(`WARNING: the machine is ${pct.toFixed(0)} % busy (load ${loadavg()}) before the run: timing figures will suffer (use --wait-quiet)`);
      return pct;
    }
    log(`machine ${pct.toFixed(0)} % busy (load ${loadavg()}); waiting for it to calm down`);
    await sleep(10_000);
  }
}

/**
 * Runs one benchmark as a phase: waits for a quiet machine first (--wait-quiet), and measures the CPU
 * that processes other than ours used meanwhile ("foreign", % of the whole machine). With --wait-quiet a
 * phase disturbed by more than QUIET_PCT foreign load is run again (at most MAX_ATTEMPTS times).
 */
const QUIET_PCT = 5;
const MAX_ATTEMPTS = 4;

async function phase(name, fn, machineLog) {
  for (let attempt = 1; ; attempt++) {
    if (flag('wait-quiet')) await checkQuiet();
    const s0 = systemCpu();
    const o0 = ourCpuSeconds();
    const { _disturbance: windows, ...out } = await fn();
    const s1 = systemCpu();
    const phasePct = (100 * Math.max(0, s1.busy - s0.busy - (ourCpuSeconds() - o0))) / Math.max(1e-9, s1.total - s0.total);
    // A phase that measures in windows (scale, baseline) is judged by its worst window.
    const foreignPct = windows ?? phasePct;
    machineLog[name] = { foreign_busy_pct: round(phasePct, 1), ...(windows !== undefined ? { worst_window_pct: round(windows, 1) } : {}), attempt };
    log(`${name}: other processes kept the machine ${foreignPct.toFixed(1)} % busy meanwhile`);
    if (!flag('wait-quiet') || foreignPct <= QUIET_PCT || attempt >= MAX_ATTEMPTS) return out;
    log(`${name}: disturbed, running it again`);
  }
}

const emulators = new Set();
async function cleanup() {
  await stopAllKeepers();
  await Promise.all([...emulators].map((e) => e.stop()));
}
// Ctrl-C / kill: stop the keepers (and their jobs) and the emulators before leaving.
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    log(`${sig}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });
}

async function main() {
  const busyBefore = await checkQuiet();
  const t0 = performance.now();
  const sys0 = systemCpu();
  const m = machine();
  const built = distStamp();
  snapshotBuild(join(WORK, 'build'));
  const result = {
    mode: QUICK ? 'quick' : 'full',
    node: m.node,
    cores: m.cores,
    cpu_model: m.cpu_model,
    kernel: m.kernel,
    at: new Date().toISOString(),
    git: gitState(),
  };
  const phases = {};
  /** Runs fn against a fresh emulator process, stopped afterwards. */
  const withEmulator = async (fn) => {
    const e = await startEmulatorProcess({ ttlOverride: TTL_S });
    emulators.add(e);
    try {
      return await fn(e);
    } finally {
      await e.stop();
      emulators.delete(e);
    }
  };
  try {
    if (QUICK && run('fence')) {
      // Quick mode: the fence (≈ one ttl of waiting on hung requests) runs beside startup and idle, each
      // against its own emulator. Full mode runs every benchmark alone.
      const [fence] = await Promise.all([
        withEmulator(benchFence),
        withEmulator(async (emu) => {
          if (run('startup')) Object.assign(result, await benchStartup(emu));
          if (run('idle')) Object.assign(result, await benchIdle(emu));
        }),
      ]);
      Object.assign(result, fence);
    } else {
      if (run('startup')) Object.assign(result, await phase('startup', () => withEmulator(benchStartup), phases));
      if (run('idle')) Object.assign(result, await phase('idle', () => withEmulator(benchIdle), phases));
      if (run('fence')) Object.assign(result, await phase('fence', () => withEmulator(benchFence), phases));
    }
    if (run('scale') || run('baseline')) {
      const scale = await phase(
        'scale+baseline',
        () =>
          withEmulator(async (emu) => {
            const sc = await benchScale(emu);
            const { _scaleWindow: window, _profile: profile, ...scaleOut } = sc;
            if (profile) printProfile(profile);
            const base = run('baseline') ? await benchBaseline(emu, window) : {};
            // The CPU figures are only comparable when neither window was shared with other work.
            return { ...scaleOut, ...base, _disturbance: Math.max(window.foreignPct, base.baseline?.foreign_busy_pct ?? 0) };
          }),
        phases,
      );
      Object.assign(result, scale);
    }
    if (run('lateness')) {
      // Lateness needs the planned send time of every beat, which the keeper logs only at debug (routine
      // beats are not info lines). So a second run, at debug, measures it; its extra log lines make it an
      // upper bound of the lateness at the production level.
      const timing = await phase('scale_timing', () => withEmulator((emu) => benchScale(emu, { logLevel: 'debug', holdS: P.timingHoldS, label: 'scale_timing' })), phases);
      const t = timing.scale;
      result.scale ??= {};
      Object.assign(result.scale, {
        lateness_ms: t.lateness_ms,
        expired: (result.scale.expired ?? 0) + t.expired,
        lateness_samples: t.lateness_samples,
        lateness_hold_ms: t.lateness_hold_ms,
        lateness_claim_ms: t.lateness_claim_ms,
        expired_by_run: { production: result.scale.expired ?? null, timing: t.expired },
        timing_run: { log_level: 'debug', hold_s: t.hold_s, cpu_pct: t.cpu_pct, heartbeats_in_hold: t.heartbeats_in_hold, rejected: t.rejected, expired: t.expired },
      });
    }
    if (run('reaction')) {
      // Steady churn (the figure the target is about), then, in full mode, a mass stop.
      result.reaction_ms = await phase('reaction', () => withEmulator((emu) => benchReaction(emu, { label: 'steady', triggersPerS: P.reactionRate })), phases);
      if (!QUICK) {
        result.reaction_ms.mass_stop = await phase('reaction_mass_stop', () => withEmulator((emu) => benchReaction(emu, { label: 'mass', triggersPerS: null })), phases);
      }
    }
  } finally {
    await cleanup();
  }
  result.duration_s = round((performance.now() - t0) / 1000, 1);
  // Every benchmark ran a private copy of the build made at the start (others may rebuild dist/ meanwhile).
  result.git.dist_rebuilt_during_run = distStamp() !== built;
  // Whole-machine CPU while the benchmarks ran (ours and anything else), and the load of other processes per phase.
  result.machine_busy_pct = { before: round(busyBefore, 1), during: round(busyPct(sys0, systemCpu()), 1), loadavg_end: loadavg(), phases };
  const targets = evaluate(result);
  result.targets = targets;
  const ordered = orderKeys(result);
  mkdirSync(join(OUT, '..'), { recursive: true });
  writeFileSync(OUT, `${JSON.stringify(ordered, null, 2)}\n`);
  printTable(result, targets);
  console.log(`\nwritten ${OUT} in ${result.duration_s} s`);
  if (!flag('keep-logs')) rmSync(WORK, { recursive: true, force: true });
  else console.log(`logs kept in ${WORK}`);
}

/** The keys first, in its order, then the rest. */
function orderKeys(r) {
  const first = ['scale', 'baseline', 'reaction_ms', 'fence_margin_ms', 'idle', 'startup_ms', 'node', 'cores', 'at'];
  const out = {};
  for (const k of first) if (k in r) out[k] = r[k];
  for (const [k, v] of Object.entries(r)) if (!(k in out)) out[k] = v;
  return out;
}

function printProfile(p) {
  console.log(`\ncpu profile: ${p.file}`);
  for (const [title, t] of [['hold window', p.hold], ['whole run', p.whole]]) {
    console.log(`\n-- ${title}: ${t.sampledMs} ms sampled`);
    for (const o of t.byOrigin.slice(0, 12)) console.log(`  ${String(o.pct).padStart(5)}%  ${o.origin}`);
    console.log('  top self time:');
    for (const f of t.top.slice(0, 25)) console.log(`  ${String(f.pct).padStart(5)}%  ${String(f.ms).padStart(6)} ms  [${f.origin}] ${f.frame}`);
    console.log('  dependency/node self time charged to our nearest caller:');
    for (const f of t.oursInclusiveOfCallees.slice(0, 15)) console.log(`  ${String(f.pct).padStart(5)}%  ${String(f.ms).padStart(6)} ms  ${f.frame}`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
