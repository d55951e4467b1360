/**
 * The invariants, checked after the fact from three independent sources: the emulator's event log (what
 * the server granted), the jobs' own records plus the harness's /proc observations (what ran, when), and
 * each keeper's JSON log (what it did). See docs/reliability.md for the precise definitions.
 *
 * A run is one execution of the job for one item: from its `start` record (the job's first action)
 * to its end, the earliest of two upper bounds on the moment none of its processes was left:
 *   - the keeper's `job_exited` line (logged once the job's whole process group is empty), and
 *   - the harness's own observation (none of the pids the job recorded is alive in /proc).
 *
 * (a) overlap: two runs of one item overlap when one starts before the other has ended.
 * (b) lease: a run belongs to the lease of the token (`last_heartbeat`) its keeper logged as accepted
 *     before starting it (`lease_acquired`/`heartbeat`), as the server's event log places that token
 *     in a lease epoch; without such a line (a keeper killed between spawn and log), to the lease the
 *     server had live for the item when the run started. Not by the holder's name: heartbeats carry no
 *     Worker-ID, so the emulator labels a lease with the item's last acker, while the lease belongs to
 *     whoever holds the token (a stale NO_HEARTBEAT retry of an earlier claimant can take the lease of
 *     an item re-acked by another worker; the acker then gets 412 and never runs it). The run must start
 *     inside that lease and end no later than its deadline: the latest `lease_expires_at_ms` the server
 *     granted in that epoch. The margin of a run is deadline - end.
 * (c) items: after the calm phase every item is `stopped`; after the keepers are gone and leases expired,
 *     every item is `stopped` or `queued` (none stuck `starting`/`active`/`stopping`).
 * (d) orphans: no live process carries the scenario's marker variable once everything has ended.
 * (f) escapes: no process of a run (its leader, a grandchild, a setsid daemon it recorded) was SEEN alive
 *     by the harness after its lease's deadline, or after its keeper logged the job gone (`job_exited`,
 *     which precedes the keeper's report of the run). Seen alive is a fact, not an upper bound: no
 *     tolerance is needed.
 * (e) the token is in no keeper's stdout or stderr.
 * And: every keeper exits as its signal asks (0 after SIGTERM; a SIGTERM that arrives while Node is still
 * loading, before the keeper logged `starting` and installed its handler, ends it by the signal, which
 * systemd counts as a clean stop: it held nothing yet; likewise a second SIGTERM that lands after the
 * keeper logged `exiting`, when it no longer listens), nothing on stderr, no fatal line.
 */
import type { AdminItem, EmulatorEvent } from '../../../src/emulator/index.js';
import type { LogLine } from '../../integration/support.js';
import type { WatchedRun } from './watch.js';

export interface KeeperRecord {
  tag: string;
  workerId: string;
  /** What the harness did to it: nothing yet, SIGTERM, SIGKILL, or SIGTERM twice. */
  expect: 'run' | 'term' | 'kill' | 'double';
  startedAt: number;
  killedAt: number | null;
  exit: { code: number | null; signal: NodeJS.Signals | null; at: number } | null;
  readonly lines: LogLine[];
  readonly stdout: string;
  readonly stderr: string;
}

export interface CheckInput {
  ttlS: number;
  events: EmulatorEvent[];
  runs: WatchedRun[];
  keepers: KeeperRecord[];
  items: AdminItem[];
  /** Items not stopped at the end of the calm phase. */
  stuck: string[];
  token: string;
  orphans: string[];
  /** Violations the harness saw while running (processes outliving a dead keeper, hung keepers). */
  extra: string[];
  injected: Record<string, number>;
}

export interface RunVerdict {
  workId: string;
  keeper: string;
  workerId: string;
  start: number;
  end: number | null;
  endSource: 'keeper' | 'harness' | 'none';
  deadline: number | null;
  marginMs: number | null;
  fenced: boolean;
  how: string;
}

export interface ScenarioStats {
  keepersStarted: number;
  items: number;
  runs: number;
  leasesHeld: number;
  leaseExpiries: number;
  startingTimeouts: number;
  injected: Record<string, number>;
  /** Requests the emulator's faults hit, by fault kind. */
  faultHits: Record<string, number>;
  outcomes: Record<string, number>;
  fencedRuns: number;
  fenceKills: number;
  overlaps: number;
  pastLease: number;
  noLease: number;
  orphans: number;
  /** Processes of a run seen alive after its lease or after its item was reported (f). */
  escapes: number;
  stuck: number;
  /** min over runs of (server deadline - end of the run). */
  minMarginMs: number | null;
  /** The same, over runs the keeper self-fenced. */
  minFencedMarginMs: number | null;
  /** min `lease_left_ms` of the keepers' `fenced` step=kill lines (their own monotonic view). */
  minFenceLeftMs: number | null;
}

export interface CheckResult {
  violations: string[];
  stats: ScenarioStats;
  verdicts: RunVerdict[];
}

const timeOf = (l: LogLine): number => Date.parse(String(l.time));
const minOf = (a: number | null, b: number): number => (a === null ? b : Math.min(a, b));

export function checkScenario(input: CheckInput): CheckResult {
  const violations: string[] = [...input.extra];
  const byTag = new Map(input.keepers.map((k) => [k.tag, k]));

  // ---- what the server granted: heartbeat_accepted per item, in log order ----
  const accepted = new Map<string, EmulatorEvent[]>();
  for (const e of input.events) {
    if (e.type !== 'heartbeat_accepted' || !e.work_id) continue;
    const list = accepted.get(e.work_id) ?? [];
    list.push(e);
    accepted.set(e.work_id, list);
  }

  // ---- each run: its end, its lease, its margin ----
  const verdicts: RunVerdict[] = [];
  /** Per run (same index), the keeper's job_exited time, or null. */
  const keeperEnds: (number | null)[] = [];
  let pastLease = 0;
  let noLease = 0;
  let minMarginMs: number | null = null;
  let minFencedMarginMs: number | null = null;
  for (const run of input.runs) {
    const k = byTag.get(run.keeper);
    const workerId = k?.workerId ?? '?';
    const where = `${run.workId} run by ${run.keeper} (pid ${run.pid}, started ${run.start})`;
    // The keeper's view: job_started with this pid, then the first job_exited for the item after it.
    let keeperEnd: number | null = null;
    let fenced = false;
    /** The lease token (`last_heartbeat`) the keeper held when it started this run, from its own log. */
    let token: string | null = null;
    if (k) {
      const lines = k.lines;
      const i = lines.findIndex((l) => l.msg === 'job_started' && l.pid === run.pid && l.work_id === run.workId);
      for (let j = i - 1; j >= 0 && token === null; j--) {
        const l = lines[j]!;
        if (l.work_id === run.workId && (l.msg === 'lease_acquired' || l.msg === 'heartbeat') && typeof l.last_heartbeat === 'string') token = l.last_heartbeat;
      }
      if (i >= 0) {
        for (let j = i + 1; j < lines.length; j++) {
          const l = lines[j]!;
          if (l.work_id !== run.workId) continue;
          if (l.msg === 'fenced') fenced = true;
          if (l.msg === 'job_exited') {
            keeperEnd = timeOf(l);
            break;
          }
        }
      }
    }
    keeperEnds.push(keeperEnd);
    const ends = [keeperEnd, run.deadAt].filter((x): x is number => x !== null);
    const end = ends.length > 0 ? Math.min(...ends) : null;
    const endSource = end === null ? 'none' : end === keeperEnd ? 'keeper' : 'harness';
    const how = run.ends.map((e) => e.how).join(',') || 'killed';
    if (end === null) violations.push(`[unobserved] ${where}: never seen ending`);

    // The run's lease: the epoch of the token its keeper logged before starting it. Without that line (a
    // keeper killed between spawn and log), the lease the server had live for the item at the start.
    const beats = accepted.get(run.workId) ?? [];
    const before = beats.filter((e) => e.t_ms <= run.start);
    const last = token !== null ? beats.find((e) => e.last_heartbeat === token) : before[before.length - 1];
    let deadline: number | null = null;
    if (!last) {
      noLease++;
      violations.push(
        token !== null
          ? `[no-lease] ${where}: its keeper held the lease token ${token}, which the server never granted`
          : `[no-lease] ${where}: no heartbeat was accepted for it before the job started`,
      );
    } else {
      const epoch = last.lease_epoch;
      const epochBeats = beats.filter((e) => e.lease_epoch === epoch);
      const grantedAtStart = Math.max(...epochBeats.filter((e) => e.t_ms <= run.start).map((e) => Number(e.lease_expires_at_ms)));
      deadline = Math.max(...epochBeats.map((e) => Number(e.lease_expires_at_ms)));
      if (run.start > grantedAtStart) {
        noLease++;
        violations.push(`[no-lease] ${where}: started after its lease (epoch ${epoch}) had expired at ${grantedAtStart}`);
      }
      if (end !== null) {
        const margin = deadline - end;
        minMarginMs = minOf(minMarginMs, margin);
        if (fenced) minFencedMarginMs = minOf(minFencedMarginMs, margin);
        if (end > deadline) {
          pastLease++;
          violations.push(`[past-lease] ${where}: ended at ${end} (${endSource}), ${end - deadline} ms after its lease (epoch ${epoch}) expired at ${deadline}`);
        }
      }
    }
    verdicts.push({ workId: run.workId, keeper: run.keeper, workerId, start: run.start, end, endSource, deadline, marginMs: deadline !== null && end !== null ? deadline - end : null, fenced, how });
  }

  // ---- (a) no two runs of one item overlap ----
  let overlaps = 0;
  const byItem = new Map<string, RunVerdict[]>();
  for (const v of verdicts) byItem.set(v.workId, [...(byItem.get(v.workId) ?? []), v]);
  for (const [workId, runs] of byItem) {
    runs.sort((a, b) => a.start - b.start);
    // `latest`: of the runs so far, the one that ended last (a run never seen ending never ends).
    let latest: RunVerdict | null = null;
    for (const r of runs) {
      if (latest && (latest.end === null || r.start <= latest.end)) {
        overlaps++;
        violations.push(`[overlap] ${workId}: run by ${r.keeper} started at ${r.start}, while the run by ${latest.keeper} (started ${latest.start}) had not ended (${latest.end ?? 'never'})`);
      }
      if (!latest || (latest.end !== null && (r.end === null || r.end > latest.end))) latest = r;
    }
  }

  // ---- (f) escapes: the harness's own sightings against the lease and the item's report ----
  let escapes = 0;
  for (let i = 0; i < input.runs.length; i++) {
    const run = input.runs[i]!;
    const verdict = verdicts[i]!;
    if (run.lastAliveAt === null) continue;
    const where = `${run.workId} run by ${run.keeper} (pid ${run.pid}, started ${run.start})`;
    if (verdict.deadline !== null && run.lastAliveAt > verdict.deadline) {
      escapes++;
      violations.push(`[escape] ${where}: a process of it was seen alive at ${run.lastAliveAt}, after its lease expired at ${verdict.deadline}`);
    }
    // The keeper reports a run only after its job_exited line for it, which it logs once it believes
    // nothing of the job is left: a process seen alive after that line was reported early. (Not the next
    // metadata_updated of the item: a holder's late report of an earlier run can land while this one runs.)
    const keeperEnd = keeperEnds[i] ?? null;
    if (keeperEnd !== null && run.lastAliveAt > keeperEnd) {
      escapes++;
      violations.push(`[escape] ${where}: a process of it was seen alive at ${run.lastAliveAt}, after its keeper logged the job gone (job_exited) at ${keeperEnd}`);
    }
  }

  // ---- (c) items ----
  for (const s of input.stuck) violations.push(`[stuck] not stopped after the calm phase: ${s}`);
  for (const item of input.items) {
    if (item.state !== 'stopped' && item.state !== 'queued') {
      violations.push(`[stuck] ${item.id} is ${item.state} after every keeper ended and leases expired (lease ${JSON.stringify(item.lease)})`);
    }
  }

  // ---- (d) orphans ----
  for (const o of input.orphans) violations.push(`[orphan] ${o} still alive after the scenario ended`);

  // ---- (e) token, and the keepers' own health ----
  let minFenceLeftMs: number | null = null;
  let fenceKills = 0;
  const outcomes: Record<string, number> = {};
  for (const k of input.keepers) {
    if (k.stdout.includes(input.token) || k.stderr.includes(input.token)) violations.push(`[token] keeper ${k.tag} printed the token`);
    if (k.stderr.trim() !== '') violations.push(`[stderr] keeper ${k.tag} (or its job) wrote to stderr: ${k.stderr.slice(0, 500)}`);
    for (const l of k.lines) {
      if (l.level >= 60 || l.msg === 'worker_crashed') violations.push(`[crash] keeper ${k.tag}: ${JSON.stringify(l).slice(0, 400)}`);
      if (l.msg === 'fenced' && l.step === 'kill') {
        fenceKills++;
        if (typeof l.lease_left_ms === 'number') minFenceLeftMs = minOf(minFenceLeftMs, l.lease_left_ms);
      }
      if (l.msg === 'item_finished' && typeof l.outcome === 'string') outcomes[l.outcome] = (outcomes[l.outcome] ?? 0) + 1;
    }
    const e = k.exit;
    if (!e) {
      violations.push(`[keeper] ${k.tag} never exited`);
      continue;
    }
    const ok =
      k.expect === 'kill'
        ? e.signal === 'SIGKILL'
        : k.expect === 'double'
          ? e.code === 0 || e.code === 143 || (e.signal === 'SIGTERM' && (!k.lines.some((l) => l.msg === 'starting') || k.lines.some((l) => l.msg === 'exiting')))
          : k.expect === 'term'
            ? e.code === 0 || (e.signal === 'SIGTERM' && !k.lines.some((l) => l.msg === 'starting'))
            : false;
    if (!ok) violations.push(`[keeper] ${k.tag} (expected: ${k.expect === 'run' ? 'still running' : k.expect}) exited code=${e.code} signal=${e.signal}`);
  }

  const faultHits: Record<string, number> = {};
  let leasesHeld = 0;
  let leaseExpiries = 0;
  let startingTimeouts = 0;
  for (const e of input.events) {
    if (e.type === 'fault_injected') faultHits[String(e.kind)] = (faultHits[String(e.kind)] ?? 0) + 1;
    if (e.type === 'heartbeat_accepted' && e.new_lease === true) leasesHeld++;
    if (e.type === 'lease_expired' && e.reason === 'ttl') leaseExpiries++;
    if (e.type === 'lease_expired' && e.reason === 'starting_timeout') startingTimeouts++;
  }

  return {
    violations,
    verdicts,
    stats: {
      keepersStarted: input.keepers.length,
      items: input.items.length,
      runs: input.runs.length,
      leasesHeld,
      leaseExpiries,
      startingTimeouts,
      injected: { ...input.injected },
      faultHits,
      outcomes,
      fencedRuns: verdicts.filter((v) => v.fenced).length,
      fenceKills,
      overlaps,
      pastLease,
      noLease,
      orphans: input.orphans.length + input.extra.filter((v) => v.startsWith('[orphan]')).length,
      escapes,
      stuck: input.stuck.length,
      minMarginMs,
      minFencedMarginMs,
      minFenceLeftMs,
    },
  };
}
