/**
 * The worker loop: poll → ack → (lease, job, report in ItemLease) → repeat, with up to `concurrency`
 * items held at once. Shutdown stops polling and drains every item (or, with finish, lets each job end by
 * itself); a later signal drains, the last kills at once.
 *
 * Claims: one poll at a time while the queue is empty; while polls deliver work and slots are free, up to
 * CLAIMS_IN_FLIGHT claims (poll, then ack) run at once, so a cold start with many slots does not wait one
 * round trip per item. Each claim reserves its slot before it polls: held items + claims in flight never
 * exceed the limit, so an item is never polled (and left un-acked for someone else) without a slot for it.
 */
import { setMaxListeners } from 'node:events';
import { ApiError } from '../api/errors.js';
import type { WorkApi } from '../api/client.js';
import type { WorkItem } from '../api/types.js';
import type { Containment, JobOutput } from '../job/index.js';
import type { Clock } from '../lease/clock.js';
import type { LeaseSettings } from '../lease/machine.js';
import { EXIT } from '../lease/outcome.js';
import type { Logger } from '../observe/logger.js';
import type { KeeperEvents, KeeperSnapshot } from '../observe/snapshot.js';
import { ItemLease, type ItemResult, type StartJob } from './item-lease.js';
import { retryTransient, sleep } from './retry.js';

export interface WorkerOptions {
  api: WorkApi;
  settings: LeaseSettings;
  workerId: string;
  command: string[];
  /** Every token the keeper has held (it grows on rotation): no variable holding one reaches a job. */
  tokens: readonly string[];
  concurrency: number;
  once: boolean;
  baseEnv: NodeJS.ProcessEnv;
  log: Logger;
  clock: Clock;
  events: KeeperEvents;
  /** How jobs are contained (built once from the configuration); default: the process group. */
  containment?: Containment;
  /** Where each job's stdout/stderr go; default inherited. */
  output?: JobOutput;
  /** Called once, when the first poll has been answered (READY=1). */
  onReady?: () => void;
  /** Poll's long-poll wait (1..999 ms). */
  blockMs?: number;
  random?: () => number;
  /** How jobs are started (default ProcessGroup.start); tests pass a fake. */
  startJob?: StartJob;
}

/** Why `run()` ended, and the process exit code that goes with it. */
export interface WorkerResult {
  exitCode: number;
  reason: 'once' | 'shutdown' | 'shutdown_now' | 'fatal';
  lastItem: ItemResult | null;
}

const POLL_BACKOFF_CAP_MS = 30_000;
/** Claims at once while work keeps arriving (cold fill); one poll at a time on an empty queue. */
export const CLAIMS_IN_FLIGHT = 8;

export class Worker {
  private readonly held = new Map<string, ItemLease>();
  private readonly stopPolling = new AbortController();
  /** No more polls: a shutdown (finish or drain) has begun. */
  private draining = false;
  /** The shutdown lets running jobs end by themselves (LEASE_KEEPER_SHUTDOWN=finish), until a drain. */
  private finishing = false;
  private ready = false;
  private pollFailingSince: number | null = null;
  private fatal: WorkerResult | null = null;
  private lastItem: ItemResult | null = null;
  private slotFreed: (() => void) | null = null;
  /** Slots reserved by claims in flight (a poll, then its ack), counted against the limit with `held`. */
  private claiming = 0;
  /** Claim loops running: the first one always, the others only while polls deliver work. */
  private lanes = 0;
  private finished!: (r: WorkerResult) => void;
  private readonly result = new Promise<WorkerResult>((resolve) => (this.finished = resolve));
  private ended = false;

  constructor(private readonly o: WorkerOptions) {
    // Every claim in flight listens to it (its poll or ack, a retry's sleep): more than Node's default 10.
    setMaxListeners(4 * CLAIMS_IN_FLIGHT + 8, this.stopPolling.signal);
  }

  /** Runs until `--once` is done, a shutdown has drained every item, or a fatal answer. */
  run(): Promise<WorkerResult> {
    void this.pollLoop(true).then(
      () => this.settleWhenIdle(),
      (err: unknown) => {
        this.o.log.fatal({ err }, 'worker_crashed');
        this.end({ exitCode: EXIT.software, reason: 'fatal', lastItem: this.lastItem });
      },
    );
    return this.result;
  }

  /** SIGTERM/SIGINT with LEASE_KEEPER_SHUTDOWN=finish: stop polling; every held lease is kept while its job ends by itself. */
  finish(): void {
    if (this.draining) return;
    this.draining = true;
    this.finishing = true;
    this.o.log.info({ held: this.held.size, phase: 'finishing' }, 'shutdown_requested');
    this.stopPolling.abort();
    this.wakePollLoop();
    for (const lease of this.held.values()) lease.shutdownFinish();
    this.settleWhenIdle();
  }

  /** SIGTERM/SIGINT (or the one after a finish): stop polling, drain every held item (heartbeats go on). */
  shutdown(): void {
    if (this.draining && !this.finishing) return;
    const from = this.finishing ? 'finishing' : undefined;
    this.draining = true;
    this.finishing = false;
    this.o.log.info({ held: this.held.size, phase: 'draining', from }, 'shutdown_requested');
    this.stopPolling.abort();
    this.wakePollLoop();
    for (const lease of this.held.values()) lease.shutdown();
    this.settleWhenIdle();
  }

  /** Second signal: SIGKILL every job group and end at once. */
  shutdownNow(signal: NodeJS.Signals): void {
    this.o.log.warn({ held: this.held.size, signal }, 'shutdown_now');
    this.draining = true;
    this.stopPolling.abort();
    for (const lease of this.held.values()) lease.shutdownNow();
    this.end({ exitCode: 128 + signalNo(signal), reason: 'shutdown_now', lastItem: this.lastItem });
  }

  snapshot(): KeeperSnapshot {
    return {
      workerId: this.o.workerId,
      ready: this.ready,
      draining: this.draining,
      finishing: this.finishing,
      leases: [...this.held.values()].map((l) => l.view()),
      pollFailingSinceMs: this.pollFailingSince,
      containment: this.o.containment?.kind ?? 'process-group',
    };
  }

  private end(r: WorkerResult): void {
    if (this.ended) return;
    this.ended = true;
    this.finished(r);
  }

  private settleWhenIdle(): void {
    if (this.held.size > 0 || this.claiming > 0) return;
    if (this.fatal) return this.end(this.fatal);
    if (this.draining && !this.o.once) return this.end({ exitCode: EXIT.ok, reason: 'shutdown', lastItem: this.lastItem });
    if (this.draining && this.o.once) {
      // --once interrupted by a signal: a clean shutdown exits 0 (spec §6).
      const code = this.lastItem && this.lastItem.outcome !== 'shutdown' ? this.lastItem.exitCode : EXIT.ok;
      return this.end({ exitCode: code, reason: 'shutdown', lastItem: this.lastItem });
    }
    if (this.o.once && this.lastItem) return this.end({ exitCode: this.lastItem.exitCode, reason: 'once', lastItem: this.lastItem });
  }

  private limit(): number {
    return this.o.once ? 1 : this.o.concurrency;
  }

  /** Gives back the slot of a claim that ended (its item dropped, or handed to its lease in `held`). */
  private release(): void {
    this.claiming--;
    // The first loop may be waiting for a slot that only this claim held (the others end on an empty poll).
    this.wakePollLoop();
    if (this.draining || this.fatal) this.settleWhenIdle();
  }

  /** While polls deliver work: more claim loops, up to CLAIMS_IN_FLIGHT, each with a free slot. */
  private widen(): void {
    while (this.lanes < CLAIMS_IN_FLIGHT && this.held.size + this.claiming < this.limit() && !this.stopPolling.signal.aborted) {
      void this.pollLoop(false).catch((err: unknown) => {
        this.o.log.fatal({ err }, 'worker_crashed');
        this.end({ exitCode: EXIT.software, reason: 'fatal', lastItem: this.lastItem });
      });
    }
  }

  /**
   * One claim loop. The first runs for the worker's life, waits for a free slot, and backs off after
   * failures; the others (`first` false) end at the first empty answer, failure, or full house.
   */
  private async pollLoop(first: boolean): Promise<void> {
    this.lanes++;
    try {
      await this.claimLoop(first);
    } finally {
      this.lanes--;
    }
  }

  private async claimLoop(first: boolean): Promise<void> {
    let failures = 0;
    const signal = this.stopPolling.signal;
    while (!signal.aborted) {
      if (this.held.size + this.claiming >= this.limit()) {
        if (!first) return;
        await new Promise<void>((resolve) => (this.slotFreed = resolve));
        continue;
      }
      this.claiming++; // this claim's slot, from before its poll until its item is held or dropped
      const asked = this.o.clock.now();
      let item: WorkItem | null;
      try {
        const reply = await this.o.api.poll(
          { workerId: this.o.workerId, blockMs: this.o.blockMs ?? 999 },
          { signal, timeoutMs: (this.o.blockMs ?? 999) + 15_000 },
        );
        item = reply.value;
        failures = 0;
        this.pollFailingSince = null;
        this.o.events.poll(item ? 'work' : 'empty');
        this.markReady();
      } catch (err) {
        this.release();
        if (signal.aborted) break;
        this.o.events.poll('error');
        if (this.failFatally(err, 'poll')) break;
        failures++;
        this.pollFailingSince ??= this.o.clock.now();
        const retryAfter = err instanceof ApiError ? (err.retryAfterMs ?? 0) : 0;
        const delay = Math.max(retryAfter, jittered(Math.min(POLL_BACKOFF_CAP_MS, 500 * 2 ** (failures - 1)), this.random()));
        this.o.log.warn({ err, failures, retry_in_ms: Math.round(delay) }, 'poll_failed');
        if (!first) return;
        await sleep(delay, signal);
        continue;
      }
      if (item === null) {
        this.release();
        if (!first) return;
        // An empty answer that came back at once (no long poll): pause a little, jittered.
        if (this.o.clock.now() - asked < 100) await sleep(250 + this.random() * 750, signal);
        continue;
      }
      this.widen();
      try {
        await this.claim(item);
      } finally {
        this.release();
      }
      if (this.o.once && this.lastItem === null && this.held.size > 0) {
        // --once: one item only; wait for it to finish.
        break;
      }
    }
  }

  private wakePollLoop(): void {
    const wake = this.slotFreed;
    this.slotFreed = null;
    wake?.();
  }

  private markReady(): void {
    if (this.ready) return;
    this.ready = true;
    this.o.log.info({ containment: this.o.containment?.kind ?? 'process-group' }, 'ready');
    this.o.onReady?.();
  }

  /** Ack with the same Worker-ID, then hand the item to its own lease. 409 on ack: someone else has it. */
  private async claim(item: WorkItem): Promise<void> {
    const log = this.o.log.child({ work_id: item.id, session_id: item.data.id });
    log.info({ state: item.state }, 'claimed');
    try {
      await retryTransient(
        () => this.o.api.ack(item.id, { workerId: this.o.workerId }, { signal: this.stopPolling.signal, timeoutMs: 10_000 }),
        // Retrying is safe while the item is starting/active; past the reclaim window (5 s) it is redelivered.
        { retries: 3, minMs: 100, maxMs: 1000, signal: this.stopPolling.signal, onRetry: (err, attempt) => log.warn({ err, attempt }, 'ack_retry') },
      );
    } catch (err) {
      if (err instanceof ApiError && err.kind === 'conflict') {
        log.info({ request_id: err.requestId }, 'ack_conflict: claimed by another worker, dropped');
        return;
      }
      if (this.failFatally(err, 'ack')) return;
      log.warn({ err }, 'ack_failed: left for redelivery');
      return;
    }
    if (this.stopPolling.signal.aborted) {
      // Shut down between ack and lease: never start a job we are not going to keep.
      log.info({}, 'released_before_lease');
      return;
    }
    const lease = new ItemLease(item, {
      api: this.o.api,
      settings: this.o.settings,
      command: this.o.command,
      tokens: this.o.tokens,
      baseEnv: this.o.baseEnv,
      log: this.o.log,
      clock: this.o.clock,
      events: this.o.events,
      ...(this.o.containment ? { containment: this.o.containment } : {}),
      output: this.o.output,
      random: this.o.random,
      ...(this.o.startJob ? { startJob: this.o.startJob } : {}),
    });
    this.held.set(item.id, lease);
    void lease.start().then((r) => this.onItemDone(r));
  }

  private onItemDone(r: ItemResult): void {
    this.held.delete(r.workId);
    this.lastItem = r;
    if (r.fatal && !this.fatal) {
      // The item logged its lease loss as a warning; the daemon ending is the error an operator must see
      // (`journalctl -p err`), as when a poll is refused.
      this.o.log.fatal({ work_id: r.workId, exit_code: r.exitCode }, r.fatal === 'auth' ? 'auth_failed' : 'environment_unusable');
      this.fatal = { exitCode: r.exitCode, reason: 'fatal', lastItem: r };
      this.shutdown();
    }
    this.wakePollLoop();
    if (this.o.once) this.stopPolling.abort();
    this.settleWhenIdle();
  }

  /** 401/403 end the daemon with 77; a missing or non-self-hosted environment with 78. No retry loop. */
  private failFatally(err: unknown, operation: string): boolean {
    if (!(err instanceof ApiError) || err.kind === 'transient') return false;
    if (err.kind !== 'auth' && err.kind !== 'not_found' && err.kind !== 'bad_request') return false;
    if (operation === 'ack' && err.kind === 'not_found') return false; // the item vanished, not the environment
    const exitCode = err.kind === 'auth' ? EXIT.auth : EXIT.config;
    this.o.log.fatal({ err, operation }, err.kind === 'auth' ? 'auth_failed' : 'environment_unusable');
    this.fatal ??= { exitCode, reason: 'fatal', lastItem: this.lastItem };
    this.shutdown();
    return true;
  }

  private random(): number {
    return (this.o.random ?? Math.random)();
  }
}

/** Equal jitter: half fixed, half random. */
function jittered(ms: number, r: number): number {
  return ms / 2 + (ms / 2) * r;
}

function signalNo(signal: NodeJS.Signals): number {
  return signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 1;
}
