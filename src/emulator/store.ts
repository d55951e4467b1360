import { NO_HEARTBEAT, type WorkHeartbeat, type WorkItem, type WorkState } from '../api/types.js';
import { formatMicros } from './clock.js';
import { ItemStore, copyItem, type ItemRecord, type Lease } from './items.js';
import { conflict, preconditionFailed, type CallContext } from './types.js';

export type { ItemRecord, Lease } from './items.js';

export const TTL_MIN = 10;
export const TTL_MAX = 600;
export const TAKEOVER_HOLDER = 'emulator-takeover';

/**
 * The state machine of qoder-work-api.md §3 with leases: heartbeats, takeover and expiry. Callers run
 * `sweep()` before each operation, so nothing is decided on a lease that has already run out.
 */
export class WorkStore extends ItemStore {
  private epoch = 0;

  /** The ttl a heartbeat is granted: the override when set, else desired clamped to 10..600. */
  grant(desired: number | undefined): number {
    if (this.settings.ttl_override_seconds != null) return this.settings.ttl_override_seconds;
    return Math.min(TTL_MAX, Math.max(TTL_MIN, desired ?? this.settings.default_ttl_seconds));
  }
  private nextHeartbeatUs(rec: ItemRecord): number {
    const us = Math.max(this.clock.nowUs(), rec.lastHeartbeatUs + 1);
    rec.lastHeartbeatUs = us;
    return us;
  }

  /**
   * The heartbeat rules: queued/stopped -> 409; with a lease held, `expected` must equal its last_heartbeat
   * byte for byte (NO_HEARTBEAT -> 412), absent = unconditional; without a lease only NO_HEARTBEAT or absent.
   */
  heartbeat(id: string, p: { expected?: string; desiredTtl?: number }, ctx: CallContext = {}): WorkHeartbeat {
    const rec = this.must(id);
    const { item } = rec;
    if (item.state === 'queued' || item.state === 'stopped') {
      throw conflict(`work item ${id} is ${item.state}; it cannot heartbeat`);
    }
    const old = rec.lease;
    if (old && p.expected === NO_HEARTBEAT) {
      throw preconditionFailed(`work item ${id} already has a lease (expected_last_heartbeat=NO_HEARTBEAT)`);
    }
    if (old && p.expected !== undefined && p.expected !== old.lastHeartbeat) {
      throw preconditionFailed(`expected_last_heartbeat does not match the current lease of ${id}`);
    }
    if (!old && p.expected !== undefined && p.expected !== NO_HEARTBEAT) {
      throw preconditionFailed(`work item ${id} has no lease; the first heartbeat sends NO_HEARTBEAT`);
    }
    const us = this.nextHeartbeatUs(rec);
    const ms = Math.floor(us / 1000);
    const ttl = this.grant(p.desiredTtl);
    const from = item.state;
    const lease: Lease = {
      holder: old ? old.holder : (rec.ackedBy ?? ctx.workerId ?? null),
      epoch: old ? old.epoch : ++this.epoch,
      lastHeartbeat: formatMicros(us),
      ttlSeconds: ttl,
      expiresAtMs: ms + ttl * 1000,
      heartbeats: (old?.heartbeats ?? 0) + 1,
    };
    rec.lease = lease;
    this.noteDue(lease.expiresAtMs);
    if (item.state === 'starting') {
      item.state = 'active';
      item.started_at = lease.lastHeartbeat;
    }
    item.latest_heartbeat_at = lease.lastHeartbeat;
    this.log(us, {
      type: 'heartbeat_accepted',
      work_id: id,
      worker_id: ctx.workerId ?? lease.holder,
      holder_worker_id: lease.holder,
      status: 200,
      expected: p.expected ?? null,
      desired_ttl_seconds: p.desiredTtl ?? null,
      ttl_seconds: ttl,
      last_heartbeat: lease.lastHeartbeat,
      previous_last_heartbeat: old?.lastHeartbeat ?? null,
      lease_epoch: lease.epoch,
      new_lease: !old,
      lease_expires_at_ms: lease.expiresAtMs,
      from_state: from,
      state: item.state,
    }, ctx);
    return { type: 'work_heartbeat', last_heartbeat: lease.lastHeartbeat, lease_extended: true, state: item.state, ttl_seconds: ttl };
  }

  /** The `not_extended` fault: 200 with lease_extended false, nothing changed. */
  heartbeatNotExtended(id: string, desiredTtl: number | undefined, ctx: CallContext = {}): WorkHeartbeat {
    const rec = this.must(id);
    const us = this.clock.nowUs();
    const reply: WorkHeartbeat = {
      type: 'work_heartbeat',
      last_heartbeat: rec.lease?.lastHeartbeat ?? rec.item.latest_heartbeat_at ?? formatMicros(us),
      lease_extended: false,
      state: rec.item.state,
      ttl_seconds: rec.lease?.ttlSeconds ?? this.grant(desiredTtl),
    };
    this.log(us, { type: 'heartbeat_not_extended', work_id: id, worker_id: ctx.workerId ?? rec.lease?.holder ?? null, status: 200, last_heartbeat: reply.last_heartbeat, state: reply.state, lease_epoch: rec.lease?.epoch }, ctx);
    return reply;
  }
  /** A phantom holder heartbeats unconditionally: new last_heartbeat, a new lease epoch, the current ttl. */
  takeover(id: string, workerId: string | undefined, ctx: CallContext = {}): { heartbeat: WorkHeartbeat; item: WorkItem } {
    const rec = this.must(id);
    const { item } = rec;
    if (item.state === 'queued' || item.state === 'stopped') throw conflict(`work item ${id} is ${item.state}; nothing to take over`);
    const us = this.nextHeartbeatUs(rec);
    const ms = Math.floor(us / 1000);
    const old = rec.lease;
    const ttl = old?.ttlSeconds ?? this.grant(undefined);
    const lease: Lease = {
      holder: workerId ?? TAKEOVER_HOLDER,
      epoch: ++this.epoch,
      lastHeartbeat: formatMicros(us),
      ttlSeconds: ttl,
      expiresAtMs: ms + ttl * 1000,
      heartbeats: 1,
    };
    rec.lease = lease;
    this.noteDue(lease.expiresAtMs);
    rec.ackedBy = lease.holder;
    if (item.state === 'starting') {
      item.state = 'active';
      item.started_at = lease.lastHeartbeat;
    }
    item.latest_heartbeat_at = lease.lastHeartbeat;
    this.log(us, {
      type: 'takeover',
      work_id: id,
      worker_id: lease.holder,
      holder_worker_id: lease.holder,
      previous_holder_worker_id: old?.holder ?? null,
      previous_lease_epoch: old?.epoch ?? null,
      previous_last_heartbeat: old?.lastHeartbeat ?? null,
      lease_epoch: lease.epoch,
      last_heartbeat: lease.lastHeartbeat,
      ttl_seconds: ttl,
      lease_expires_at_ms: lease.expiresAtMs,
      state: item.state,
    }, ctx);
    const heartbeat: WorkHeartbeat = { type: 'work_heartbeat', last_heartbeat: lease.lastHeartbeat, lease_extended: true, state: item.state, ttl_seconds: ttl };
    return { heartbeat, item: copyItem(item) };
  }
  /**
   * Expires what is due: a lease past its expiry (active -> queued, stopping -> stopped) and an item
   * `starting` (or `stopping` without a lease) longer than starting_timeout_ms. Returns true if anything moved.
   */
  sweep(): boolean {
    const us = this.clock.nowUs();
    const ms = Math.floor(us / 1000);
    // Nothing is due yet: no scan of every record (it ran before every request: O(items) per call, the
    // emulator's own limit at 10,000 leases).
    if (ms <= this.dueMs) return false;
    let changed = false;
    let next = Infinity;
    for (const rec of this.records.values()) {
      const { item, lease } = rec;
      const startingDue = !lease && (item.state === 'starting' || item.state === 'stopping') && rec.ackedAtMs !== null ? rec.ackedAtMs + this.settings.starting_timeout_ms : null;
      let reason: 'ttl' | 'starting_timeout';
      if (lease && ms > lease.expiresAtMs) reason = 'ttl';
      else if (startingDue !== null && ms > startingDue) reason = 'starting_timeout';
      else {
        next = Math.min(next, lease ? lease.expiresAtMs : (startingDue ?? Infinity));
        continue;
      }
      changed = true;
      const from: WorkState = item.state;
      const to: WorkState = from === 'stopping' ? 'stopped' : 'queued';
      this.log(us, {
        type: 'lease_expired',
        work_id: item.id,
        worker_id: lease?.holder ?? rec.ackedBy,
        reason,
        from_state: from,
        to_state: to,
        lease_epoch: lease?.epoch,
        last_heartbeat: lease?.lastHeartbeat,
        lease_expires_at_ms: lease?.expiresAtMs,
      });
      if (to === 'stopped') {
        this.toStopped(rec, us, { reason: 'lease_expired' }, {});
        continue;
      }
      item.state = 'queued';
      item.acknowledged_at = null;
      item.started_at = null;
      item.latest_heartbeat_at = null;
      rec.lease = null;
      rec.delivery = null;
      rec.ackedBy = null;
      rec.ackedAtMs = null;
      rec.queuedAtUs = us;
      this.log(us, { type: 'queued', work_id: item.id, reason: reason === 'ttl' ? 'lease_expired' : 'starting_timeout' });
    }
    // Records changed by the scan have no deadline left (queued or stopped).
    this.dueMs = next;
    if (changed) this.notifyChange();
    return changed;
  }
}
