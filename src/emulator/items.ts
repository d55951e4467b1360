import type { WorkItem } from '../api/types.js';
import { formatMicros, type EmulatorClock } from './clock.js';
import type { EventInput, EventLog } from './events.js';
import { newSessionId, workIdFactory } from './ids.js';
import { mergeMetadata } from './metadata.js';
import { badRequest, conflict, notFound, type AdminItem, type CallContext, type EmulatorSettings } from './types.js';

/** The lease of one item: who holds it, until when, and the string its next heartbeat must echo. */
export interface Lease {
  holder: string | null;
  epoch: number;
  lastHeartbeat: string;
  ttlSeconds: number;
  expiresAtMs: number;
  heartbeats: number;
}

/** One item plus what the server knows beside the wire shape. */
export interface ItemRecord {
  item: WorkItem;
  queuedAtUs: number;
  delivery: { workerId: string | null; atMs: number; reclaimMs: number } | null;
  ackedBy: string | null;
  ackedAtMs: number | null;
  lease: Lease | null;
  lastHeartbeatUs: number;
}

export const copyItem = (i: WorkItem): WorkItem => ({ ...i, data: { ...i.data }, metadata: { ...i.metadata } });

/**
 * The items and every transition that does not involve a lease: create, deliver, ack, stop, metadata.
 * Synchronous and clock-injected; every change logs its event with the exact times used to decide it.
 */
export class ItemStore {
  readonly records = new Map<string, ItemRecord>();
  /** Worker-ID -> last poll (ms), for stats.workers_polling. */
  readonly pollers = new Map<string, number>();
  private readonly newId = workIdFactory();
  private readonly changeListeners = new Set<() => void>();
  /**
   * No lease expires and no starting timeout runs out before this (ms): sweep() skips its scan of every
   * record until then. Lowered whenever a deadline is set; -Infinity forces the next scan.
   */
  protected dueMs = -Infinity;

  constructor(
    readonly environmentId: string,
    protected readonly clock: EmulatorClock,
    protected readonly events: EventLog,
    readonly settings: EmulatorSettings,
  ) {}

  nowMs(): number {
    return Math.floor(this.clock.nowUs() / 1000);
  }

  /** Called when an item may have become deliverable (long polls re-check). */
  onChange(listener: () => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  /** A deadline was set at `ms`: the next sweep must not skip past it. */
  protected noteDue(ms: number): void {
    if (ms < this.dueMs) this.dueMs = ms;
  }

  /** The settings changed (ttl, starting timeout): the next sweep scans every record. */
  recheckDeadlines(): void {
    this.dueMs = -Infinity;
  }

  notifyChange(): void {
    for (const l of [...this.changeListeners]) l();
  }

  protected log(us: number, input: EventInput, ctx: CallContext = {}): void {
    this.events.append({
      t_ms: Math.floor(us / 1000),
      request_id: ctx.requestId,
      ...input,
    });
  }

  protected must(id: string): ItemRecord {
    const rec = this.records.get(id);
    if (!rec) throw notFound(`work item ${id} not found`);
    return rec;
  }

  create(opts: { data?: unknown; metadata?: unknown }, ctx: CallContext = {}): WorkItem {
    if (opts.data !== undefined && (typeof opts.data !== 'object' || opts.data === null || Array.isArray(opts.data))) {
      throw badRequest('data must be an object');
    }
    const given = (opts.data ?? {}) as Record<string, unknown>;
    if ((given.type !== undefined && typeof given.type !== 'string') || (given.id !== undefined && typeof given.id !== 'string')) {
      throw badRequest('data.type and data.id must be strings');
    }
    const metadata = mergeMetadata({}, opts.metadata);
    const us = this.clock.nowUs();
    const at = formatMicros(us);
    const item: WorkItem = {
      id: this.newId(Math.floor(us / 1000)),
      type: 'work',
      environment_id: this.environmentId,
      data: { ...given, type: (given.type as string | undefined) ?? 'session', id: (given.id as string | undefined) ?? newSessionId() },
      state: 'queued',
      created_at: at,
      acknowledged_at: null,
      started_at: null,
      latest_heartbeat_at: null,
      stop_requested_at: null,
      stopped_at: null,
      metadata,
    };
    this.records.set(item.id, { item, queuedAtUs: us, delivery: null, ackedBy: null, ackedAtMs: null, lease: null, lastHeartbeatUs: 0 });
    this.log(us, { type: 'queued', work_id: item.id, reason: 'created', by: ctx.by ?? 'admin', session_id: item.data.id }, ctx);
    this.notifyChange();
    return copyItem(item);
  }

  /** Records a poll's Worker-ID for workers_polling. */
  notePoller(workerId: string | null): void {
    if (workerId) this.pollers.set(workerId, this.nowMs());
  }

  /** Delivers the oldest deliverable queued item (never delivered, or delivered longer ago than reclaimMs), or null. */
  tryDeliver(workerId: string | null, reclaimMs: number, ctx: CallContext = {}): WorkItem | null {
    const us = this.clock.nowUs();
    const ms = Math.floor(us / 1000);
    for (const rec of this.records.values()) {
      if (rec.item.state !== 'queued') continue;
      if (rec.delivery && ms - rec.delivery.atMs < reclaimMs) continue;
      const previous = rec.delivery;
      rec.delivery = { workerId, atMs: ms, reclaimMs };
      this.log(us, {
        type: 'poll_delivered',
        work_id: rec.item.id,
        worker_id: workerId,
        status: 200,
        redelivery: previous !== null,
        previous_worker_id: previous ? previous.workerId : undefined,
        reclaim_older_than_ms: reclaimMs,
      }, ctx);
      return copyItem(rec.item);
    }
    return null;
  }

  ack(id: string, ctx: CallContext = {}): WorkItem {
    const rec = this.must(id);
    const us = this.clock.nowUs();
    const ms = Math.floor(us / 1000);
    const worker = ctx.workerId ?? null;
    const { item } = rec;
    if (item.state === 'queued') {
      const d = rec.delivery;
      if (d && d.workerId && worker && d.workerId !== worker && ms - d.atMs < d.reclaimMs) {
        throw conflict(`work item ${id} was delivered to another worker`);
      }
      item.state = 'starting';
      item.acknowledged_at = formatMicros(us);
      rec.ackedBy = worker ?? d?.workerId ?? null;
      rec.ackedAtMs = ms;
      this.noteDue(ms + this.settings.starting_timeout_ms);
      rec.delivery = null;
      this.log(us, { type: 'ack', work_id: id, worker_id: rec.ackedBy, status: 200, retry: false, state: item.state }, ctx);
      return copyItem(item);
    }
    if (item.state === 'starting' || item.state === 'active') {
      if (worker && rec.ackedBy && worker !== rec.ackedBy) {
        throw conflict(`work item ${id} is claimed by another worker`);
      }
      this.log(us, { type: 'ack', work_id: id, worker_id: worker ?? rec.ackedBy, status: 200, retry: true, state: item.state }, ctx);
      return copyItem(item);
    }
    throw conflict(`work item ${id} is ${item.state}`);
  }
  protected toStopped(rec: ItemRecord, us: number, detail: Record<string, unknown>, ctx: CallContext): void {
    const from = rec.item.state;
    const lease = rec.lease;
    rec.item.state = 'stopped';
    rec.item.stopped_at = formatMicros(us);
    rec.lease = null;
    rec.delivery = null;
    this.log(us, { type: 'stopped', work_id: rec.item.id, status: 200, from_state: from, lease_epoch: lease?.epoch, holder_worker_id: lease?.holder, ...detail }, ctx);
  }

  /** force=false: queued->stopped, starting/active->stopping, stopping->stopped, stopped unchanged. force=true: ->stopped. */
  stop(id: string, force: boolean, ctx: CallContext = {}): WorkItem {
    const rec = this.must(id);
    const us = this.clock.nowUs();
    const { item } = rec;
    const by = ctx.by ?? 'admin';
    if (item.state === 'stopped') {
      this.log(us, { type: 'stop_unchanged', work_id: id, worker_id: ctx.workerId, status: 200, force, by }, ctx);
    } else if (!force && (item.state === 'starting' || item.state === 'active')) {
      const from = item.state;
      item.state = 'stopping';
      item.stop_requested_at = formatMicros(us);
      this.log(us, { type: 'stop_requested', work_id: id, worker_id: ctx.workerId, status: 200, from_state: from, force, by, lease_epoch: rec.lease?.epoch }, ctx);
    } else {
      this.toStopped(rec, us, { worker_id: ctx.workerId, force, by, reason: 'stop' }, ctx);
    }
    return copyItem(item);
  }
  updateMetadata(id: string, patch: unknown, ctx: CallContext = {}): WorkItem {
    const rec = this.must(id);
    const next = mergeMetadata(rec.item.metadata, patch);
    rec.item.metadata = next;
    const keys = patch && typeof patch === 'object' ? Object.keys(patch) : [];
    this.log(this.clock.nowUs(), { type: 'metadata_updated', work_id: id, worker_id: ctx.workerId, status: 200, keys, metadata: { ...next } }, ctx);
    return copyItem(rec.item);
  }

  get(id: string): WorkItem {
    return copyItem(this.must(id).item);
  }

  adminView(rec: ItemRecord): AdminItem {
    const l = rec.lease;
    return {
      ...copyItem(rec.item),
      lease: l
        ? { holder_worker_id: l.holder, epoch: l.epoch, last_heartbeat: l.lastHeartbeat, ttl_seconds: l.ttlSeconds, expires_at_ms: l.expiresAtMs, heartbeats: l.heartbeats }
        : null,
      delivery: rec.delivery ? { worker_id: rec.delivery.workerId, delivered_at_ms: rec.delivery.atMs, reclaim_after_ms: rec.delivery.atMs + rec.delivery.reclaimMs } : null,
      acked_by: rec.ackedBy,
    };
  }

  adminItem(id: string): AdminItem {
    return this.adminView(this.must(id));
  }

  clear(): void {
    this.records.clear();
    this.pollers.clear();
  }
}
