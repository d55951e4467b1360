/**
 * Runs one scenario: an emulator, real `bin/lease-keeper run` processes sharing its queue, the faults of
 * the plan at their moments, then a calm phase (faults cleared, one fresh keeper) in which every item
 * must reach `stopped`, then SIGTERM to every keeper, lease expiry, an orphan scan, and the checks.
 *
 * The soak (bench/soak) drives the same class with a fault loop instead of a fixed plan.
 */
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { type AdminItem, type Emulator, type FaultSpec, startEmulator } from '../../../src/emulator/index.js';
import { type Keeper, type LogLine, startKeeper } from '../../integration/support.js';
import { type CheckResult, type KeeperRecord, checkScenario } from './check.js';
import { type JobFiles, parseRecordLines, sessionId } from './job.js';
import { type Action, type ItemSpec, type KeeperSpec, type Plan, describeAction } from './plan.js';
import { Rng } from './prng.js';
import { keptReportDir, killWithEnv, procsWithEnv } from '../../support/processes.js';
import { bootGate } from './gate.js';
import { RunWatcher } from './watch.js';

export interface ScenarioResult extends CheckResult {
  seed: number;
  durationMs: number;
  timeline: string[];
  /** Where the records and logs were kept (only when the scenario failed). */
  keptDir: string | null;
}

export interface ScenarioOptions {
  job: JobFiles;
  /** Longest wait for every item to reach `stopped` in the calm phase. */
  settleTimeoutMs?: number;
  /** Keep the scratch directory even when the scenario passed. */
  keepDir?: boolean;
}

export interface KeeperRun extends KeeperRecord {
  spec: KeeperSpec;
  keeper: Keeper;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms)));

let markCounter = 0;

export class Scenario {
  readonly mark: string;
  readonly token: string;
  readonly dir: string;
  readonly record: string;
  readonly rng: Rng;
  emu!: Emulator;
  readonly keepers: KeeperRun[] = [];
  readonly timeline: string[] = [];
  /** Harness-level injections by kind (server faults, outages, takeovers, stops, keeper signals, job kinds). */
  readonly injected: Record<string, number> = {};
  readonly violations: string[] = [];
  readonly watcher: RunWatcher;
  private readonly incarnations = new Map<string, number>();
  private readonly restarts = new Set<NodeJS.Timeout>();
  private readonly outages = new Set<NodeJS.Timeout>();
  /** No more faults, no more restarts. */
  calm = false;
  t0 = 0;
  stuckItems: string[] = [];
  private reserveUsed = 0;

  constructor(
    readonly plan: Plan,
    readonly opts: ScenarioOptions,
  ) {
    this.mark = `lkchaos-${plan.seed}-${process.pid}-${++markCounter}`;
    this.token = `pt-chaos-SECRET-${plan.seed}-${Math.random().toString(36).slice(2, 10)}`;
    this.dir = mkdtempSync(join(tmpdir(), `lk-chaos-${plan.seed}-`));
    this.record = join(this.dir, 'record');
    this.rng = new Rng(plan.seed).fork('runtime');
    this.watcher = new RunWatcher(this.record);
  }

  note(text: string): void {
    this.timeline.push(`+${String(Date.now() - this.t0).padStart(5)}ms ${text}`);
  }

  count(kind: string, n = 1): void {
    this.injected[kind] = (this.injected[kind] ?? 0) + n;
  }

  async start(): Promise<void> {
    this.t0 = Date.now();
    this.emu = await startEmulator({ token: this.token, environmentId: `env_chaos${this.plan.seed}`, ttlOverrideSeconds: this.plan.ttlS });
    // Short windows so that a scenario settles in seconds: an item delivered but never acked is
    // redelivered after 1 s, one acked but never heartbeated goes back to the queue after 2 s.
    this.emu.setSettings({ reclaim_default_ms: 1000, starting_timeout_ms: 2000 });
    this.watcher.start();
    this.queue(this.plan.items);
    await Promise.all(this.plan.keepers.map((k) => this.startKeeper(k)));
    // The plan's clock starts once every keeper of the plan has been spawned (boots are rationed).
    this.t0 = Date.now();
  }

  queue(items: ItemSpec[]): void {
    for (const it of items) {
      this.emu.queue({ data: { id: sessionId(it.mode, it.durMs, it.exitCode, it.drainMs) } });
      if (it.mode === 'ignore') this.count('job_ignores_sigterm');
      if (it.mode === 'fork') this.count('job_forks_grandchild');
      if (it.mode === 'escape') this.count('job_escapes_setsid');
      if (it.mode === 'slow') this.count('job_slow_drain');
      if (it.exitCode !== 0) this.count('job_exits_nonzero');
    }
  }

  /**
   * Spawns a keeper once the boot gate lets it (the slot is held until it logged `starting`). Null when
   * the scenario went calm meanwhile (a restart that is no longer wanted), unless `evenIfCalm`.
   */
  async startKeeper(spec: KeeperSpec, evenIfCalm = false): Promise<KeeperRun | null> {
    const release = await bootGate.acquire();
    if (this.calm && !evenIfCalm) {
      release();
      return null;
    }
    const inc = (this.incarnations.get(spec.tag) ?? 0) + 1;
    this.incarnations.set(spec.tag, inc);
    const tag = `${spec.tag}.${inc}`;
    const keeper = startKeeper(this.emu, {
      command: [this.opts.job.script],
      once: false,
      env: {
        LEASE_KEEPER_WORKER_ID: spec.workerId,
        LEASE_KEEPER_CONCURRENCY: String(spec.concurrency),
        LEASE_KEEPER_STOP_GRACE_SECONDS: String(spec.graceS),
        LEASE_KEEPER_ON_SHUTDOWN: spec.onShutdown,
        LEASE_KEEPER_LOG_LEVEL: 'debug', // the checker needs every accepted token (routine heartbeats are debug lines)
        CHAOS_MARK: this.mark,
        CHAOS_KEEPER: tag,
        CHAOS_RECORD: this.record,
        CHAOS_FIFO: this.opts.job.fifo,
        // CHAOS_CONTAINMENT=process-group shows what the escape check catches without containment.
        ...(process.env.CHAOS_CONTAINMENT ? { LEASE_KEEPER_CONTAINMENT: process.env.CHAOS_CONTAINMENT } : {}),
      },
    });
    const run: KeeperRun = {
      spec,
      keeper,
      tag,
      workerId: spec.workerId,
      expect: 'run',
      startedAt: Date.now(),
      killedAt: null,
      exit: null,
      get lines(): LogLine[] {
        return keeper.lines;
      },
      get stdout(): string {
        return keeper.stdout;
      },
      get stderr(): string {
        return keeper.stderr;
      },
    };
    keeper.waitFor((l) => l.msg === 'starting', 10_000).then(release, release);
    void keeper.exited.then((e) => {
      release();
      run.exit = { ...e, at: Date.now() };
      this.note(`keeper ${tag} exited code=${e.code} signal=${e.signal}`);
    });
    this.keepers.push(run);
    this.note(`keeper ${tag} started (${spec.workerId}, concurrency ${spec.concurrency}, grace ${spec.graceS}s, on-shutdown ${spec.onShutdown})`);
    return run;
  }

  /** The live incarnation of plan keeper `index` that has not been signalled yet. */
  private liveKeeper(index: number): KeeperRun | undefined {
    const tag = this.plan.keepers[index]?.tag;
    return this.keepers.find((k) => k.spec.tag === tag && k.exit === null && k.expect === 'run');
  }

  private pickItem(pred: (i: AdminItem) => boolean): AdminItem | undefined {
    const items = this.emu.items().filter(pred);
    return items.length === 0 ? undefined : this.rng.pick(items);
  }

  async apply(action: Action): Promise<void> {
    if (this.calm) return;
    const what = describeAction(action);
    switch (action.kind) {
      case 'server_fault': {
        const spec: FaultSpec = { ...action.spec };
        if (action.targetItem) {
          const item = this.pickItem((i) => i.state === 'starting' || i.state === 'active' || i.state === 'stopping');
          if (item) spec.work_id = item.id;
        }
        this.emu.injectFault(spec);
        this.count(action.name);
        this.note(`${what}${spec.work_id ? ` -> ${spec.work_id}` : ''}`);
        return;
      }
      case 'outage': {
        const id = this.emu.injectFault({ endpoint: '*', kind: action.mode, times: 0 });
        this.count('outage');
        this.note(`outage (${action.mode}) begins`);
        const t = setTimeout(() => {
          this.outages.delete(t);
          void fetch(`${this.emu.adminUrl}faults/${id}`, { method: 'DELETE' }).catch(() => {});
          this.note('outage ends');
        }, action.ms);
        this.outages.add(t);
        return;
      }
      case 'takeover': {
        const item = this.pickItem((i) => (i.state === 'active' || i.state === 'stopping') && i.lease !== null && i.lease.holder_worker_id !== 'emulator-takeover');
        if (!item) return this.note(`${what}: no leased item, skipped`);
        this.emu.takeover(item.id);
        this.count('takeover');
        return this.note(`takeover of ${item.id} (held by ${item.lease?.holder_worker_id})`);
      }
      case 'stop_graceful': {
        const item = this.pickItem((i) => i.state !== 'stopped' && i.state !== 'stopping');
        if (!item) return this.note(`${what}: nothing to stop, skipped`);
        this.emu.requestStop(item.id);
        this.count('stop_graceful');
        return this.note(`graceful stop of ${item.id} (${item.state})`);
      }
      case 'stop_forced': {
        const item = this.pickItem((i) => i.state !== 'stopped');
        if (!item) return this.note(`${what}: nothing to stop, skipped`);
        this.emu.requestStop(item.id, { force: true });
        this.count('stop_forced');
        return this.note(`forced stop of ${item.id} (${item.state})`);
      }
      case 'keeper_sigterm': {
        const k = this.liveKeeper(action.keeper);
        if (!k) return this.note(`${what}: keeper gone, skipped`);
        k.expect = 'term';
        k.keeper.kill('SIGTERM');
        this.count('keeper_sigterm');
        return this.note(`SIGTERM ${k.tag}`);
      }
      case 'keeper_double_sigterm': {
        const k = this.liveKeeper(action.keeper);
        if (!k) return this.note(`${what}: keeper gone, skipped`);
        k.expect = 'double';
        k.keeper.kill('SIGTERM');
        this.count('keeper_double_sigterm');
        this.note(`SIGTERM ${k.tag} (first of two)`);
        await sleep(action.gapMs);
        k.keeper.kill('SIGTERM');
        this.note(`SIGTERM ${k.tag} (second)`);
        await k.keeper.exited;
        await this.afterKeeperDeath(k, 'double');
        return;
      }
      case 'keeper_sigkill': {
        const k = this.liveKeeper(action.keeper);
        if (!k) return this.note(`${what}: keeper gone, skipped`);
        await this.sigkill(k);
        if (action.restartAfterMs !== null) this.restartLater(k.spec, action.restartAfterMs);
        return;
      }
    }
  }

  /** SIGKILL a keeper, then do what the supervisor would (see Plan.killVariant). */
  async sigkill(k: KeeperRun): Promise<void> {
    k.expect = 'kill';
    k.killedAt = Date.now();
    k.keeper.kill('SIGKILL');
    this.count('keeper_sigkill');
    this.note(`SIGKILL ${k.tag} (${this.plan.killVariant})`);
    await k.keeper.exited;
    await this.afterKeeperDeath(k, 'kill');
  }

  restartLater(spec: KeeperSpec, ms: number): void {
    const t = setTimeout(() => {
      this.restarts.delete(t);
      if (this.calm) return;
      void this.startKeeper(spec).then((k) => k && this.count('keeper_restart'));
    }, ms);
    this.restarts.add(t);
  }

  /**
   * After a keeper died without draining: its jobs must be gone within 100 ms (pdeathsig, or the
   * keeper's own SIGKILL on a second signal). For a SIGKILL in `killmode`, whatever is left gets
   * SIGKILL, as systemd does to the cgroup. A job that was still starting when its keeper died (no
   * start record before the kill: setpriv had not armed the parent-death signal yet) is the
   * documented limit of pdeathsig: killed the same way, and counted.
   */
  private async afterKeeperDeath(k: KeeperRun, how: 'kill' | 'double'): Promise<void> {
    const diedAt = Date.now();
    if (how === 'kill' && this.plan.killVariant === 'killmode') {
      const left = this.killLeft(k.tag);
      if (left > 0) this.note(`KillMode: SIGKILL to ${left} process(es) left by ${k.tag}`);
      return;
    }
    await sleep(100);
    const left = procsWithEnv({ CHAOS_MARK: this.mark, CHAOS_KEEPER: k.tag });
    if (left.length === 0) return;
    const starts = existsSync(this.record) ? parseRecordLines(readFileSync(this.record, 'utf8')).filter((l) => l.kind === 'start') : [];
    for (const p of left) {
      const run = starts.find((l) => l.keeper === k.tag && Number(l.extra) === p.pid);
      const racedStart = how === 'kill' && (run === undefined || run.ms >= (k.killedAt ?? diedAt));
      if (racedStart) {
        this.count('pdeathsig_startup_race');
        this.note(`pid ${p.pid} of ${k.tag} was still starting when the keeper died (pdeathsig not armed yet): killed as systemd would`);
      } else {
        this.violations.push(`[orphan] pid ${p.pid} of keeper ${k.tag} outlived its keeper (${how === 'kill' ? 'SIGKILL, parent-death signal' : 'second SIGTERM'}) by 100 ms`);
      }
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }

  private killLeft(tag: string): number {
    return killWithEnv({ CHAOS_MARK: this.mark, CHAOS_KEEPER: tag });
  }

  /** Keeps at least `plan.inFlight` items not stopped, from the plan's reserve, until the calm phase. */
  topUp(): void {
    if (this.calm) return;
    const open = this.emu.items().filter((i) => i.state !== 'stopped').length;
    const add = this.plan.reserve.slice(this.reserveUsed, this.reserveUsed + Math.max(0, this.plan.inFlight - open));
    if (add.length === 0) return;
    this.reserveUsed += add.length;
    this.queue(add);
  }

  /** Faults off; one fresh keeper joins; waits until every item is stopped (else: stuck). */
  async settle(timeoutMs: number): Promise<void> {
    this.calm = true;
    for (const t of [...this.restarts, ...this.outages]) clearTimeout(t);
    this.restarts.clear();
    this.outages.clear();
    this.emu.clearFaults();
    this.note('calm: faults cleared');
    const allStopped = (): boolean => this.emu.items().every((i) => i.state === 'stopped');
    // A fresh keeper joins at once when no keeper of the plan is left untouched, else after 3 s without
    // every item stopped (a surviving keeper may sit in its poll backoff after an outage).
    const live = this.keepers.some((k) => k.exit === null && k.expect === 'run');
    let sweeperAt = live ? Date.now() + 3000 : Date.now();
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
      if (allStopped()) {
        this.note('calm: every item stopped');
        return;
      }
      if (Date.now() >= sweeperAt) {
        sweeperAt = Infinity;
        await this.startKeeper({ tag: 's', workerId: `chaos-${this.plan.seed}-s`, concurrency: 3, graceS: 1, onShutdown: 'stop' }, true);
      }
      await sleep(100);
    }
    this.stuckItems = this.emu
      .items()
      .filter((i) => i.state !== 'stopped')
      .map((i) => `${i.id} ${i.state} lease=${JSON.stringify(i.lease)} acked_by=${i.acked_by}`);
    this.note(`calm: not every item stopped after ${timeoutMs} ms`);
  }

  /** SIGTERM to every keeper still running; waits for them (SIGKILL after `timeoutMs`: a violation). */
  async shutdown(timeoutMs = 30_000): Promise<void> {
    // Only keepers not signalled yet: one already draining would take a second SIGTERM as "kill now".
    const live = this.keepers.filter((k) => k.exit === null && k.expect === 'run');
    for (const k of live) {
      k.expect = 'term';
      k.keeper.kill('SIGTERM');
    }
    this.note(`shutdown: SIGTERM to ${live.length} keeper(s)`);
    await Promise.all(
      this.keepers.map(async (k) => {
        const r = await Promise.race([k.keeper.exited.then(() => true), sleep(timeoutMs).then(() => false)]);
        if (!r) {
          this.violations.push(`[keeper] ${k.tag} did not exit within ${timeoutMs} ms of SIGTERM; last lines:\n${k.keeper.tail(8)}`);
          k.keeper.kill('SIGKILL');
          await k.keeper.exited;
          this.killLeft(k.tag);
        }
      }),
    );
  }

  /** Every lease held by a dead keeper expires; `starting` items time out. */
  async expireLeases(): Promise<void> {
    const until = Date.now() + this.plan.ttlS * 1000 + 2000 + 1500;
    while (Date.now() < until) {
      if (this.emu.items().every((i) => i.state === 'stopped' || i.state === 'queued')) return;
      await sleep(100);
    }
  }

  /** Processes with the scenario's marker, after a short grace for ones being reaped. */
  async orphans(): Promise<string[]> {
    const until = Date.now() + 1500;
    let left = procsWithEnv({ CHAOS_MARK: this.mark });
    while (left.length > 0 && Date.now() < until) {
      await sleep(100);
      left = procsWithEnv({ CHAOS_MARK: this.mark });
    }
    for (const p of left) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    return left.map((p) => `pid ${p.pid} (ppid ${p.ppid}, pgrp ${p.pgrp}, state ${p.state})`);
  }

  async finish(): Promise<ScenarioResult> {
    const orphans = await this.orphans();
    const runs = await this.watcher.stop();
    const items = this.emu.items();
    const result = checkScenario({
      ttlS: this.plan.ttlS,
      events: this.emu.events(0),
      runs,
      keepers: this.keepers,
      items,
      stuck: this.stuckItems,
      token: this.token,
      orphans,
      extra: this.violations,
      injected: this.injected,
    });
    await this.emu.close();
    const failed = result.violations.length > 0;
    let keptDir: string | null = null;
    if (failed || this.opts.keepDir) {
      this.dumpLogs();
      // Out of the run's temporary directory, which the suite's teardown empties: this one is for the reader.
      keptDir = join(keptReportDir(), basename(this.dir));
      cpSync(this.dir, keptDir, { recursive: true });
      rmSync(this.dir, { recursive: true, force: true });
    } else {
      rmSync(this.dir, { recursive: true, force: true });
    }
    return { ...result, seed: this.plan.seed, durationMs: Date.now() - this.t0, timeline: this.timeline, keptDir };
  }

  /** On failure: each keeper's log and the emulator's events next to the records. */
  private dumpLogs(): void {
    for (const k of this.keepers) writeFileSync(join(this.dir, `keeper-${k.tag}.log`), k.stdout + (k.stderr ? `\n--- stderr\n${k.stderr}` : ''));
    writeFileSync(join(this.dir, 'events.jsonl'), this.emu.events(0).map((e) => JSON.stringify(e)).join('\n'));
    writeFileSync(join(this.dir, 'timeline.txt'), this.timeline.join('\n'));
  }
}

/** A whole chaos scenario from its plan. */
export async function runScenario(plan: Plan, opts: ScenarioOptions): Promise<ScenarioResult> {
  const s = new Scenario(plan, opts);
  try {
    await s.start();
    const pending: Promise<void>[] = [];
    const topUp = setInterval(() => s.topUp(), 100);
    for (const { atMs, action } of plan.actions) {
      await sleep(s.t0 + atMs - Date.now());
      pending.push(s.apply(action).catch((err: unknown) => s.note(`action failed: ${String(err)}`)));
    }
    await sleep(s.t0 + plan.chaosMs - Date.now());
    clearInterval(topUp);
    await Promise.all(pending);
    await s.settle(opts.settleTimeoutMs ?? 30_000);
    await s.shutdown();
    await s.expireLeases();
    return await s.finish();
  } catch (err) {
    // A harness failure: still clean up every process of the scenario.
    for (const k of s.keepers) k.keeper.kill('SIGKILL');
    for (const p of procsWithEnv({ CHAOS_MARK: s.mark })) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await s.watcher.stop();
    await s.emu?.close();
    throw err;
  }
}
